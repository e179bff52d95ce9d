"""HalfCheetah domains with pixel observations."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import EzPickle

from rlcyclegan.config import ConfigError
from rlcyclegan.envs.model import STOCK_XML, build_model
from rlcyclegan.envs.rendering import RenderSettings, SceneRenderer
from rlcyclegan.envs.spec import Domain, DomainSpec, RandomizedDomain, load_domain

ObsType = Literal["pixels", "state"]


class PixelHalfCheetahEnv(HalfCheetahEnv):
    """HalfCheetah-v5 dynamics and reward, seen through a domain's camera.

    ## Description
    The stock gymnasium HalfCheetah (v5): the same joints, actuators, reward (forward velocity minus
    0.1 x control cost), no termination, truncation at 1000 steps by the registered ``TimeLimit``. The
    look and, within limits, the physics come from a domain spec (``envs/spec.py``): ``sim`` is the
    stock look, ``real`` the target look, ``randomized`` draws a new spec at every reset.

    ## Observation
    ``obs_type="pixels"`` (default): uint8 RGB frames ``(image_size, image_size, 3 * frame_stack)``, the
    last ``frame_stack`` frames concatenated on the channel axis, oldest first. After a reset the
    stack holds copies of the first frame. ``obs_type="state"``: the stock 17-dimensional state vector.

    ## Info
    Besides HalfCheetah's entries, ``info["qpos"]`` and ``info["qvel"]`` hold the true physical state.
    They exist for evaluation (paired rendering, analysis) only: nothing that learns may read them.

    ## Arguments
    - ``domain``: a shipped domain name, a spec file path, or a ``DomainSpec``/``RandomizedDomain``.
    - ``image_size``: side of the square frames, in pixels (default 64).
    - ``frame_stack``: frames per observation (default 3, so velocities are observable).
    - ``obs_type``: ``"pixels"`` or ``"state"``.
    - ``render_settings``: shadows, reflection, shadow map size, multisampling.
    - ``render_mode``: ``None`` or ``"rgb_array"`` (the latest frame).
    - any HalfCheetah-v5 keyword (``forward_reward_weight``, ``ctrl_cost_weight``, ``reset_noise_scale``, ...).

    ## Version History
    - v0: first release.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(
        self,
        domain: str | Path | Domain = "sim",
        image_size: int = 64,
        frame_stack: int = 3,
        obs_type: ObsType = "pixels",
        render_settings: RenderSettings | None = None,
        render_mode: str | None = None,
        **half_cheetah_kwargs: Any,
    ) -> None:
        if image_size < 8:
            raise ConfigError(f"image_size must be at least 8 pixels, got {image_size}")
        if frame_stack < 1:
            raise ConfigError(f"frame_stack must be at least 1, got {frame_stack}")
        if obs_type not in ("pixels", "state"):
            raise ConfigError(f"obs_type must be 'pixels' or 'state', got {obs_type!r}")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.domain = load_domain(domain)
        self.image_size = image_size
        self.frame_stack = frame_stack
        self.obs_type = obs_type
        self.render_settings = render_settings or RenderSettings()
        self.current_spec = self._initial_spec()
        self._scene: SceneRenderer | None = None
        HalfCheetahEnv.__init__(
            self, xml_file=str(STOCK_XML), width=image_size, height=image_size, **half_cheetah_kwargs
        )
        self.render_mode = render_mode
        # After HalfCheetahEnv.__init__, which records its own arguments: subprocess and deepcopy rebuilds
        # must get ours, or they come back with default visuals.
        EzPickle.__init__(
            self, domain, image_size, frame_stack, obs_type, render_settings, render_mode, **half_cheetah_kwargs
        )
        self._frame = np.zeros((image_size, image_size, 3), dtype=np.uint8)
        self._frames = np.zeros((image_size, image_size, 3 * frame_stack), dtype=np.uint8)
        if obs_type == "pixels":
            self.observation_space = spaces.Box(0, 255, self._frames.shape, dtype=np.uint8)

    def _initial_spec(self) -> DomainSpec:
        if isinstance(self.domain, RandomizedDomain):
            return self.domain.sample(np.random.default_rng(0))  # replaced at the first reset
        return self.domain

    def _initialize_simulation(self) -> tuple[mujoco.MjModel, mujoco.MjData]:
        settings = self.render_settings
        model = build_model(self.current_spec, self.image_size, settings.quality_attributes())
        return model, mujoco.MjData(model)

    @property
    def scene(self) -> SceneRenderer:
        """This env's renderer, created on first use (in the process that renders: EGL does not survive fork)."""
        if self._scene is None:
            self._scene = SceneRenderer(self.model, self.current_spec.visual, self.image_size, self.render_settings)
        return self._scene

    def _switch_spec(self, spec: DomainSpec) -> None:
        self.current_spec = spec
        self.model, self.data = self._initialize_simulation()
        if self._scene is not None:
            self._scene.close()
            self._scene = None

    def _render_into_stack(self, reset: bool) -> None:
        """Render the current state as the newest frame; on reset fill the whole stack with it."""
        frame = self.scene.render(self.data, out=self._frame)
        if reset:
            self._frames[:] = np.tile(frame, self.frame_stack)
        else:
            # (H, W, 3k): shift out the oldest frame, append the newest.
            self._frames[..., :-3] = self._frames[..., 3:]
            self._frames[..., -3:] = frame

    def _pixel_obs(self, state: np.ndarray, reset: bool) -> np.ndarray:
        if self.obs_type == "state":
            return state
        self._render_into_stack(reset)
        return self._frames.copy()

    def _true_state(self, info: dict[str, Any]) -> dict[str, Any]:
        info["qpos"] = self.data.qpos.copy()
        info["qvel"] = self.data.qvel.copy()
        return info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):  # type: ignore[override]
        gym.Env.reset(self, seed=seed)
        if isinstance(self.domain, RandomizedDomain):
            self._switch_spec(self.domain.sample(self.np_random))
        mujoco.mj_resetData(self.model, self.data)
        state = self.reset_model()
        if self.current_spec.visual.floor_phase_jitter:
            # a stream of its own: the reset states stay those of the same seed without jitter
            self.scene.floor_rng = np.random.default_rng(int(self.np_random.integers(2**63)))
        return self._pixel_obs(state, reset=True), self._true_state(self._get_reset_info())

    def step(self, action: np.ndarray):  # type: ignore[override]
        state, reward, terminated, truncated, info = super().step(action)
        return self._pixel_obs(state, reset=False), reward, terminated, truncated, self._true_state(info)

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """The latest frame ``(H, W, 3)`` when ``render_mode="rgb_array"``."""
        if self.render_mode is None:
            gym.logger.warn("render() called without render_mode; pass render_mode='rgb_array'")
            return None
        if self.obs_type == "state":
            return self.scene.render(self.data)
        return self._frames[..., -3:].copy()

    def segment(self) -> np.ndarray:
        """Segmentation ``(H, W)`` of the current state (evaluation only)."""
        return self.scene.segment(self.data)

    def close(self) -> None:
        if self._scene is not None:
            self._scene.close()
            self._scene = None
        super().close()
