"""Returns of a pixel policy in a domain, and their summary with a 95% confidence interval.

Library functions on purpose: ``eval-policy`` and the sim-to-real evaluation both call them. The
interval is Student-t on the mean (episodes are i.i.d. given distinct reset seeds); the t quantile is
computed here so that NumPy suffices.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from rlcyclegan.agents.policies import PixelPolicy, check_policy_fits


class ReturnSummary(NamedTuple):
    """Mean, sample standard deviation and the 95% t-interval of the mean of episode returns."""

    mean: float
    std: float
    ci95: tuple[float, float]
    episodes: int

    def __str__(self) -> str:
        low, high = self.ci95
        return f"return {self.mean:.1f} +- {self.std:.1f} (95% CI [{low:.1f}, {high:.1f}], {self.episodes} episodes)"


def student_t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t with ``dof`` degrees of freedom, to ~1e-6.

    Integrates the density with Simpson's rule and inverts the CDF by bisection: cheap, and it keeps
    SciPy out of the dependencies.
    """
    if not 0.5 < p < 1.0 or dof < 1:
        raise ValueError(f"need 0.5 < p < 1 and dof >= 1, got p={p}, dof={dof}")
    log_norm = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def cdf(t: float, n: int = 2000) -> float:
        xs = np.linspace(0.0, t, n + 1)
        pdf = np.exp(log_norm - (dof + 1) / 2 * np.log1p(xs**2 / dof))
        weights = np.ones(n + 1)
        weights[1:-1:2], weights[2:-1:2] = 4, 2
        return 0.5 + float(pdf @ weights) * (t / n) / 3

    low, high = 0.0, 1.0
    while cdf(high) < p:
        high *= 2
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if cdf(mid) < p else (low, mid)
    return (low + high) / 2


def summarize(returns: np.ndarray) -> ReturnSummary:
    """Mean, std (ddof=1) and 95% confidence interval of the mean of ``returns``.

    Raises:
        ValueError: if ``returns`` is empty.
    """
    returns = np.asarray(returns, dtype=np.float64)
    if returns.size == 0:
        raise ValueError("no returns to summarize: evaluate at least one episode")
    mean = float(returns.mean())
    if returns.size == 1:
        return ReturnSummary(mean, 0.0, (mean, mean), 1)
    std = float(returns.std(ddof=1))
    half = student_t_quantile(0.975, returns.size - 1) * std / math.sqrt(returns.size)
    return ReturnSummary(mean, std, (mean - half, mean + half), int(returns.size))


def evaluate_policy(
    policy: PixelPolicy,
    domain: str | Path,
    episodes: int,
    seed: int = 0,
    max_episode_steps: int = 1000,
    env_wrapper: Callable[[gym.Env], gym.Env] | None = None,
    on_episode: Callable[[int, float], None] | None = None,
    **env_kwargs: Any,
) -> np.ndarray:
    """Undiscounted returns of ``episodes`` deterministic episodes of ``policy`` in ``domain``.

    The env is built with the policy's image size and frame stack; episode ``i`` is reset with
    ``seed + i``, so two policies evaluated with the same seed start from the same states.

    Args:
        policy: anything with SB3's ``predict`` and an ``(H, W, 3k)`` ``observation_space``.
        domain: domain name or spec file.
        episodes: number of episodes.
        seed: seed of the first episode.
        max_episode_steps: episode length.
        env_wrapper: applied to the env before the policy sees it (e.g. a translating wrapper).
        on_episode: called with ``(episode, return)`` after each episode (progress, logging).
        **env_kwargs: other keyword arguments of the env.

    Raises:
        ValueError: if the policy's observation shape does not match the env's.
    """
    from rlcyclegan.envs import make_env

    if episodes <= 0:
        raise ValueError(f"episodes must be positive, got {episodes}")
    h, w, c = policy.observation_space.shape
    if h != w or c % 3:
        raise ValueError(f"policy observation shape {(h, w, c)} is not a square stack of RGB frames (H, H, 3k)")
    env = make_env(domain, image_size=h, frame_stack=c // 3, max_episode_steps=max_episode_steps, **env_kwargs)
    if env_wrapper is not None:
        env = env_wrapper(env)
    check_policy_fits(policy, env.observation_space, f"domain {domain}")
    returns = np.zeros(episodes)
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            done = False
            while not done:
                action, _ = policy.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action)
                returns[i] += float(reward)
                done = terminated or truncated
            if on_episode is not None:
                on_episode(i, float(returns[i]))
    finally:
        env.close()
    return returns
