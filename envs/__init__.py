"""HalfCheetah domains with pixel observations (installed as ``rlcyclegan.envs``).

Importing this module registers the gymnasium ids::

    rlcyclegan/HalfCheetah-v0            any domain: gymnasium.make(..., domain="real" | "path/to/spec.yaml")
    rlcyclegan/HalfCheetahSim-v0         the standard look
    rlcyclegan/HalfCheetahReal-v0        the target look
    rlcyclegan/HalfCheetahRandomized-v0  a new look per episode
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

import rlcyclegan  # noqa: F401  (selects the headless GL backend before mujoco is imported)
from rlcyclegan.envs.rendering import PairedRenderer, RenderSettings
from rlcyclegan.envs.spec import Domain, DomainSpec, RandomizedDomain, load_domain, named_domains, save_domain

ENV_ID = "rlcyclegan/HalfCheetah-v0"
NAMED_ENV_IDS = {
    "sim": "rlcyclegan/HalfCheetahSim-v0",
    "real": "rlcyclegan/HalfCheetahReal-v0",
    "randomized": "rlcyclegan/HalfCheetahRandomized-v0",
}
MAX_EPISODE_STEPS = 1000
_ENTRY_POINT = "rlcyclegan.envs.half_cheetah:PixelHalfCheetahEnv"


def _register() -> None:
    if ENV_ID in gym.registry:
        return
    gym.register(ENV_ID, entry_point=_ENTRY_POINT, max_episode_steps=MAX_EPISODE_STEPS)
    for name, env_id in NAMED_ENV_IDS.items():
        gym.register(env_id, entry_point=_ENTRY_POINT, max_episode_steps=MAX_EPISODE_STEPS, kwargs={"domain": name})


def make_env(domain: str | Path | Domain = "sim", **kwargs: Any) -> gym.Env:
    """A registered HalfCheetah domain env (with its 1000-step time limit); kwargs go to the env."""
    return gym.make(ENV_ID, domain=load_domain(domain), **kwargs)


def make_vec_env(domain: str | Path | Domain, n_envs: int, seed: int = 0, **kwargs: Any):
    """A stable-baselines3 vector env of ``n_envs`` copies, one process each when ``n_envs > 1``.

    Processes are started with ``spawn``: an EGL context does not survive ``fork``. Sub-env ``i`` is
    seeded with ``seed + i`` (SB3's convention).
    """
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    vec_cls = SubprocVecEnv if n_envs > 1 else DummyVecEnv
    vec_kwargs = {"start_method": "spawn"} if n_envs > 1 else None
    return sb3_make_vec_env(
        ENV_ID, n_envs=n_envs, seed=seed, env_kwargs={"domain": load_domain(domain), **kwargs},
        vec_env_cls=vec_cls, vec_env_kwargs=vec_kwargs,
    )


_register()

__all__ = [
    "ENV_ID", "NAMED_ENV_IDS", "Domain", "DomainSpec", "PairedRenderer", "RandomizedDomain", "RenderSettings",
    "load_domain", "make_env", "make_vec_env", "named_domains", "save_domain",
]
