"""Build a MuJoCo model of a domain: gymnasium's stock HalfCheetah XML, edited by a ``DomainSpec``.

Starting from the stock ``half_cheetah.xml`` that ``HalfCheetah-v5`` loads keeps the joints, actuators,
dynamics constants and reward identical; the spec only rescales geometry, mass and friction and
repaints materials, textures and lights.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import gymnasium.envs.mujoco as gym_mujoco
import mujoco
import numpy as np

from rlcyclegan.envs.spec import DomainSpec

STOCK_XML = Path(gym_mujoco.__file__).resolve().parent / "assets" / "half_cheetah.xml"
STOCK_TOTAL_MASS = 14.0
FLOOR_EXTENT_M = 80.0  # the stock floor plane has half-size 40
CHECKER_SQUARES_PER_TILE = 2  # a builtin checker texture holds 2x2 squares

# Segmentation classes, stable ids: index in this tuple.
SEGMENTATION_CLASSES = ("background", "floor", "torso", "head", "thighs", "shins", "feet")
GEOM_PART = {
    "floor": "floor",
    "torso": "torso",
    "head": "head",
    "bthigh": "thighs",
    "fthigh": "thighs",
    "bshin": "shins",
    "fshin": "shins",
    "bfoot": "feet",
    "ffoot": "feet",
}
FLOOR_GEOM = "floor"
TORSO_BODY = "torso"
HIP_BODIES = ("bthigh", "fthigh")


def _vec(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()])


def _fmt(values: np.ndarray | tuple[float, ...] | list[float]) -> str:
    return " ".join(f"{float(v):.6g}" for v in values)


def build_xml(spec: DomainSpec, image_size: int = 64, quality: dict[str, str] | None = None) -> str:
    """The MJCF text of ``spec``'s HalfCheetah; ``quality`` holds ``<visual><quality>`` attributes."""
    root = ET.parse(STOCK_XML).getroot()
    vis, phys = spec.visual, spec.physical

    # Total mass is set after compiling (mj_setTotalmass); the attribute is deprecated in MuJoCo >= 3.3.
    compiler = root.find("compiler")
    assert compiler is not None
    compiler.attrib.pop("settotalmass", None)

    default_geom = root.find("default/geom")
    assert default_geom is not None
    default_geom.set("friction", _fmt(_vec(default_geom.get("friction", "1 0.005 0.0001")) * phys.friction_scale))

    visual = ET.SubElement(root, "visual")
    ET.SubElement(visual, "quality", quality or {})
    ET.SubElement(visual, "global", offwidth=str(image_size), offheight=str(image_size))
    ET.SubElement(visual, "headlight", ambient=_fmt([vis.ambient] * 3), diffuse=_fmt([0.4 * vis.light_intensity] * 3))

    for texture in root.iter("texture"):
        if texture.get("type") == "skybox":
            texture.set("rgb1", _fmt(vis.sky_rgb1))
            texture.set("rgb2", _fmt(vis.sky_rgb2))
        elif texture.get("name") == "texplane":
            texture.set("rgb1", _fmt(vis.floor_rgb1))
            texture.set("rgb2", _fmt(vis.floor_rgb2))
            if vis.texture_noise > 0:
                texture.set("mark", "random")
                texture.set("random", f"{vis.texture_noise:.6g}")
                texture.set("markrgb", _fmt((np.array(vis.floor_rgb1) + vis.floor_rgb2) / 2))
    for material in root.iter("material"):
        if material.get("name") == "MatPlane":
            repeat = FLOOR_EXTENT_M / (CHECKER_SQUARES_PER_TILE * vis.checker_size)
            material.set("texrepeat", _fmt([repeat, repeat]))
            material.set("reflectance", f"{vis.floor_reflectance:.6g}")

    light = root.find("worldbody/light")
    assert light is not None
    light.set("dir", _fmt(vis.light_direction))
    light.set("diffuse", _fmt([vis.light_intensity] * 3))

    colors = vis.body_colors
    torso_scale, leg_scale = phys.torso_length_scale, phys.leg_length_scale
    for body in root.iter("body"):
        name = body.get("name")
        pos = _vec(body.get("pos", "0 0 0"))
        if name == TORSO_BODY:
            pos[2] *= leg_scale  # stand as high as the legs are long
        elif name in HIP_BODIES:
            pos *= torso_scale  # hips sit at the torso's ends
        else:
            pos *= leg_scale
        body.set("pos", _fmt(pos))
        link_scale = torso_scale if name == TORSO_BODY else leg_scale
        for geom in body.findall("geom"):
            geom.set("rgba", _fmt([*getattr(colors, GEOM_PART[geom.get("name", "")]), 1.0]))
            size = _vec(geom.get("size", ""))
            size[0] *= phys.thickness_scale  # capsule radius
            if "fromto" in geom.attrib:
                geom.set("fromto", _fmt(_vec(geom.get("fromto", "")) * link_scale))
            else:
                size[1:] *= link_scale  # capsule half-length
                geom.set("pos", _fmt(_vec(geom.get("pos", "0 0 0")) * link_scale))
            geom.set("size", _fmt(size))
    return ET.tostring(root, encoding="unicode")


def build_model(spec: DomainSpec, image_size: int = 64, quality: dict[str, str] | None = None) -> mujoco.MjModel:
    """Compile ``spec`` into an ``MjModel`` whose total mass is the stock 14 kg times ``mass_scale``."""
    model = mujoco.MjModel.from_xml_string(build_xml(spec, image_size, quality))
    mujoco.mj_setTotalmass(model, STOCK_TOTAL_MASS * spec.physical.mass_scale)
    mujoco.mj_setConst(model, mujoco.MjData(model))
    return model


def geom_class_lookup(model: mujoco.MjModel) -> np.ndarray:
    """Array mapping ``geom_id + 1`` to a segmentation class id (index 0 is "no geom": background)."""
    lookup = np.zeros(model.ngeom + 1, dtype=np.uint8)
    for geom_id in range(model.ngeom):
        name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, geom_id)
        lookup[geom_id + 1] = SEGMENTATION_CLASSES.index(GEOM_PART[name])
    return lookup
