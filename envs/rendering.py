"""Fast offscreen rendering of a domain, plus paired and segmentation rendering for evaluation.

Software OpenGL spends most of a frame on the shadow pass (about 2.3 ms of 2.8 ms at 64x64 here), 4x
multisampling quadruples the fragment work, and MuJoCo's default capsule tessellation (28 slices x 16
stacks) costs vertex work in every pass; at 64x64 none of them changes what a policy can see (12 x 6
capsules move a pixel by 0.45 of 255 on average), so shadows and multisampling are off and capsules
coarser by default, while floor reflection (part of a domain's look) stays on.
``RenderSettings`` turns each back on. One ``mujoco.Renderer`` (one GL context) is kept per env and
reused for every frame; frames are written straight into the caller's buffer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import mujoco
import numpy as np

from rlcyclegan.config import ConfigError
from rlcyclegan.envs.model import (
    CHECKER_SQUARES_PER_TILE,
    FLOOR_GEOM,
    TORSO_BODY,
    build_model,
    geom_class_lookup,
)
from rlcyclegan.envs.spec import DomainSpec, VisualSpec
from rlcyclegan.gl import check_backend


@dataclass(frozen=True)
class RenderSettings:
    """Rendering quality knobs. Defaults are the fast ones measured in ``experiments/bench_render.py``."""

    shadows: bool = False
    reflection: bool = True
    shadow_size: int = 512
    multisamples: int = 0
    capsule_slices: int = 12
    capsule_stacks: int = 6

    def __post_init__(self) -> None:
        if self.shadow_size <= 0:
            raise ConfigError(f"shadow_size must be positive, got {self.shadow_size}")
        if self.multisamples < 0:
            raise ConfigError(f"multisamples must be >= 0, got {self.multisamples}")
        if self.capsule_slices < 3 or self.capsule_stacks < 1:
            raise ConfigError(
                f"capsules need >= 3 slices and >= 1 stack, got {self.capsule_slices} x {self.capsule_stacks}"
            )

    def quality_attributes(self) -> dict[str, str]:
        """The MJCF ``<visual><quality>`` attributes these settings compile into."""
        return {
            "shadowsize": str(self.shadow_size),
            "offsamples": str(self.multisamples),
            "numslices": str(self.capsule_slices),
            "numstacks": str(self.capsule_stacks),
        }


def make_camera(model: mujoco.MjModel, visual: VisualSpec) -> mujoco.MjvCamera:
    """The domain's camera: tracks the torso's subtree (the cheetah's centre of mass) or stays fixed."""
    camera = mujoco.MjvCamera()
    camera.distance = visual.camera_distance
    camera.elevation = visual.camera_elevation
    camera.azimuth = visual.camera_azimuth
    if visual.camera_tracking:
        camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        camera.trackbodyid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, TORSO_BODY)
    else:
        camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        camera.lookat[:] = (0.0, 0.0, 0.5)
    return camera


class SceneRenderer:
    """Renders RGB frames and segmentation maps of one compiled model from the domain camera."""

    def __init__(self, model: mujoco.MjModel, visual: VisualSpec, image_size: int, settings: RenderSettings) -> None:
        check_backend()
        self.model = model
        self.image_size = image_size
        try:
            self._renderer = mujoco.Renderer(model, image_size, image_size)
        except Exception as err:  # the GL stack reports failures with many exception types
            raise RuntimeError(
                f"could not create an offscreen OpenGL context with MUJOCO_GL={os.environ.get('MUJOCO_GL')} "
                f"({str(err).splitlines()[0]}); import rlcyclegan before mujoco (it picks a headless backend), "
                "or install libegl1 libegl-mesa0 (EGL) / libosmesa6 with MUJOCO_GL=osmesa"
            ) from err
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = settings.shadows
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = settings.reflection
        self._camera = make_camera(model, visual)
        self._class_lookup = geom_class_lookup(model)
        self._floor_geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, FLOOR_GEOM)
        self._floor_period = CHECKER_SQUARES_PER_TILE * visual.checker_size if visual.floor_phase_jitter else 0.0
        self.floor_rng = np.random.default_rng(0)  # the jittered floor's phases; the env reseeds it at every reset

    def _update_scene(self, data: mujoco.MjData) -> None:
        # After mj_step, body poses still describe the state before the last integration; recompute
        # positions from qpos (kinematics only: no solver call, so the dynamics' warm start is untouched).
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_comPos(self.model, data)
        mujoco.mj_camlight(self.model, data)
        self._renderer.update_scene(data, camera=self._camera)

    def render(self, data: mujoco.MjData, out: np.ndarray | None = None) -> np.ndarray:
        """An RGB frame ``(H, W, 3)`` uint8 of the state ``data.qpos``, into ``out`` when given.

        With ``floor_phase_jitter`` the floor's pattern is moved along x to a random phase in this frame only. It
        moves the drawn plane, not the model's, so the physics never sees it.
        """
        self._update_scene(data)
        if self._floor_period:
            shift = self.floor_rng.uniform(0.0, self._floor_period)
            scene = self._renderer.scene
            for geom in scene.geoms[:scene.ngeom]:
                if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM and geom.objid == self._floor_geom:
                    geom.pos[0] += shift
        return self._renderer.render(out=out)

    def segment(self, data: mujoco.MjData) -> np.ndarray:
        """Class ids ``(H, W)`` uint8 (see ``SEGMENTATION_CLASSES``) of the state ``data.qpos``."""
        flags = self._renderer.scene.flags
        saved = flags.copy()
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False  # reflected limbs are not limbs
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.enable_segmentation_rendering()
        try:
            self._update_scene(data)
            ids = self._renderer.render()
        finally:
            self._renderer.disable_segmentation_rendering()
            np.copyto(flags, saved)
        geom_ids = np.where(ids[..., 1] == mujoco.mjtObj.mjOBJ_GEOM, ids[..., 0], -1)
        return self._class_lookup[geom_ids + 1]

    def close(self) -> None:
        self._renderer.close()


class PairedRenderer:
    """Renders any HalfCheetah state in a given domain: ground truth for unpaired translators.

    The state is the joint configuration ``qpos`` (root x, root z, root angle, six joint angles), the
    same in every domain because all domains share the stock joint tree.
    """

    def __init__(self, spec: DomainSpec, image_size: int = 64, settings: RenderSettings | None = None) -> None:
        settings = settings or RenderSettings()
        self.spec = spec
        self.model = build_model(spec, image_size, settings.quality_attributes())
        self._data = mujoco.MjData(self.model)
        self._scene = SceneRenderer(self.model, spec.visual, image_size, settings)

    def _set_state(self, qpos: np.ndarray) -> None:
        qpos = np.asarray(qpos, dtype=np.float64)
        if qpos.shape != (self.model.nq,):
            raise ValueError(f"qpos must have shape ({self.model.nq},), got {qpos.shape}")
        self._data.qpos[:] = qpos

    def render(self, qpos: np.ndarray) -> np.ndarray:
        """RGB frame ``(H, W, 3)`` uint8 of the state ``qpos`` in this domain."""
        self._set_state(qpos)
        return self._scene.render(self._data)

    def segment(self, qpos: np.ndarray) -> np.ndarray:
        """Segmentation ``(H, W)`` uint8 of the state ``qpos`` in this domain."""
        self._set_state(qpos)
        return self._scene.segment(self._data)

    def close(self) -> None:
        self._scene.close()
