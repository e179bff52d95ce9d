"""Domain specs: everything that makes one HalfCheetah domain look and behave unlike another.

A ``DomainSpec`` is plain data (YAML-serialisable) with a visual part (colours, floor checker, lighting,
camera) and a physical part (limb thickness/length, mass, friction). ``RandomizedDomain`` holds ranges
and samples a ``DomainSpec`` per episode from an explicit ``np.random.Generator``.

Named domains ship as YAML files in ``envs/domains/``; any other YAML file can be loaded by path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from rlcyclegan.config import ConfigError, from_dict, load_yaml, to_dict

DOMAINS_DIR = Path(__file__).resolve().parent / "domains"

RGB = tuple[float, float, float]


def _check_rgb(name: str, rgb: RGB) -> None:
    if not all(0.0 <= c <= 1.0 for c in rgb):
        raise ConfigError(f"{name} must have three values in [0, 1], got {list(rgb)}")


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class BodyColors:
    """RGB colour of each body part group (the same groups as the segmentation classes)."""

    torso: RGB = (0.8, 0.6, 0.4)
    head: RGB = (0.8, 0.6, 0.4)
    thighs: RGB = (0.8, 0.6, 0.4)
    shins: RGB = (0.9, 0.6, 0.6)
    feet: RGB = (0.9, 0.6, 0.6)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_rgb(f"body_colors.{f.name}", getattr(self, f.name))


@dataclass(frozen=True)
class VisualSpec:
    """How a domain looks. Defaults are gymnasium's stock HalfCheetah."""

    body_colors: BodyColors = field(default_factory=BodyColors)
    floor_rgb1: RGB = (0.0, 0.0, 0.0)
    floor_rgb2: RGB = (0.8, 0.8, 0.8)
    checker_size: float = 2.0 / 3.0
    """Side of one floor checker square in metres (stock: 80 m floor / 60 repeats / 2 squares)."""
    floor_reflectance: float = 0.5
    sky_rgb1: RGB = (1.0, 1.0, 1.0)
    sky_rgb2: RGB = (0.0, 0.0, 0.0)
    light_direction: tuple[float, float, float] = (0.0, 0.0, -1.3)
    light_intensity: float = 1.0
    ambient: float = 0.1
    camera_distance: float = 4.0
    camera_elevation: float = -20.0
    camera_azimuth: float = 90.0
    camera_tracking: bool = True
    """Follow the torso (True) or look at the start position from a fixed camera (False)."""
    texture_noise: float = 0.0
    """Fraction of floor texels replaced by random colours (0 = clean checkerboard)."""
    floor_phase_jitter: bool = False
    """Draw the floor at a random phase in every frame, so that its motion between stacked frames no longer shows
    the cheetah's speed. A policy that learns from such frames cannot come to depend on the sim floor's motion,
    which a per-frame translator cannot reproduce from a real frame (README, *A student that cannot read the
    floor*)."""

    def __post_init__(self) -> None:
        for name in ("floor_rgb1", "floor_rgb2", "sky_rgb1", "sky_rgb2"):
            _check_rgb(name, getattr(self, name))
        _check_positive("checker_size", self.checker_size)
        _check_positive("camera_distance", self.camera_distance)
        if not 0.0 <= self.floor_reflectance <= 1.0:
            raise ConfigError(f"floor_reflectance must be in [0, 1], got {self.floor_reflectance}")
        if not 0.0 <= self.light_intensity <= 2.0:
            raise ConfigError(f"light_intensity must be in [0, 2], got {self.light_intensity}")
        if not 0.0 <= self.ambient <= 1.0:
            raise ConfigError(f"ambient must be in [0, 1], got {self.ambient}")
        if not 0.0 <= self.texture_noise <= 1.0:
            raise ConfigError(f"texture_noise must be in [0, 1], got {self.texture_noise}")
        if not any(self.light_direction):
            raise ConfigError("light_direction must not be the zero vector")


@dataclass(frozen=True)
class PhysicalSpec:
    """How a domain behaves, as scales of the stock HalfCheetah (1.0 = stock)."""

    thickness_scale: float = 1.0
    """Capsule radius of every link."""
    torso_length_scale: float = 1.0
    """Torso and head length, and so the distance between the hips."""
    leg_length_scale: float = 1.0
    """Thigh, shin and foot lengths (and the torso's starting height)."""
    mass_scale: float = 1.0
    friction_scale: float = 1.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_positive(f.name, getattr(self, f.name))


@dataclass(frozen=True)
class DomainSpec:
    """One HalfCheetah domain: a name, a look and physics."""

    name: str = "sim"
    visual: VisualSpec = field(default_factory=VisualSpec)
    physical: PhysicalSpec = field(default_factory=PhysicalSpec)


@dataclass(frozen=True)
class RandomizedDomain:
    """Ranges from which a ``DomainSpec`` is sampled at every episode.

    Colours are drawn uniformly in ``[color_low, color_high]`` per channel; every scalar listed in
    ``ranges`` (keys like ``visual.checker_size`` or ``physical.thickness_scale``) uniformly in its
    ``[low, high]``. Fields not listed keep the ``base`` value.
    """

    name: str = "randomized"
    base: DomainSpec = field(default_factory=DomainSpec)
    randomize_colors: bool = True
    color_low: float = 0.05
    color_high: float = 0.95
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        visual = {f.name for f in dataclasses.fields(VisualSpec)}
        physical = {f.name for f in dataclasses.fields(PhysicalSpec)}
        for key, (low, high) in self.ranges.items():
            group, _, name = key.partition(".")
            if not ((group == "visual" and name in visual) or (group == "physical" and name in physical)):
                raise ConfigError(f"randomization range {key!r} names no scalar field of visual.* or physical.*")
            if low > high:
                raise ConfigError(f"randomization range {key!r} has low {low} > high {high}")

    def sample(self, rng: np.random.Generator) -> DomainSpec:
        """A spec drawn from the ranges with ``rng`` (so seeded envs sample the same domains)."""
        visual = to_dict(self.base.visual)
        physical = to_dict(self.base.physical)
        if self.randomize_colors:
            for part in visual["body_colors"]:
                visual["body_colors"][part] = self._color(rng)
            for name in ("floor_rgb1", "floor_rgb2", "sky_rgb1", "sky_rgb2"):
                visual[name] = self._color(rng)
        for key in sorted(self.ranges):
            low, high = self.ranges[key]
            group, _, name = key.partition(".")
            target = visual if group == "visual" else physical
            value = float(rng.uniform(low, high))
            target[name] = value if not isinstance(target[name], list) else [value] * len(target[name])
        return from_dict(DomainSpec, {"name": self.name, "visual": visual, "physical": physical})

    def _color(self, rng: np.random.Generator) -> list[float]:
        return [round(float(c), 4) for c in rng.uniform(self.color_low, self.color_high, size=3)]


Domain = DomainSpec | RandomizedDomain


def named_domains() -> list[str]:
    """Names of the domains shipped in ``envs/domains``."""
    return sorted(p.stem for p in DOMAINS_DIR.glob("*.yaml"))


def load_domain(source: str | Path | Domain) -> Domain:
    """A domain from a shipped name (``sim``, ``real``, ``randomized``), a YAML path, or a spec object.

    Raises:
        ConfigError: for an unknown name, a missing file, or a file that is not a valid spec.
    """
    if isinstance(source, (DomainSpec, RandomizedDomain)):
        return source
    text = str(source)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml", ".json")) or path.is_file()):
        path = DOMAINS_DIR / f"{text}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown domain {text!r}; choose one of {', '.join(named_domains())} or a spec file")
    data = load_yaml(path)
    kind = data.pop("kind", "fixed")
    classes = {"fixed": DomainSpec, "randomized": RandomizedDomain}
    if kind not in classes:
        raise ConfigError(f"{path}: kind must be 'fixed' or 'randomized', got {kind!r}")
    try:
        return from_dict(classes[kind], data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def save_domain(domain: Domain, path: str | Path) -> None:
    """Write a spec that ``load_domain`` reads back identically."""
    data = {"kind": "randomized" if isinstance(domain, RandomizedDomain) else "fixed", **to_dict(domain)}
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
