"""Step+render throughput at 64x64: gymnasium's default HalfCheetah-v5 against our pixel env, in one run.

    python experiments/bench_render.py [--seconds 10] [--image-size 64]

Rows: gymnasium's ``HalfCheetah-v5`` with ``render_mode="rgb_array"`` (4096 shadow map, 4x multisampling);
our ``sim`` env in one process; our ``sim`` env as a 2-process vector env (both cores busy). Each row steps
with random actions for a fixed wall time and counts frames. The ratio is against gymnasium's default.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import rlcyclegan  # noqa: F401  (headless GL backend before mujoco)


def frames_per_second(step, seconds: float, frames_per_step: int = 1) -> float:
    step()  # warm up (context creation, first upload)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += frames_per_step
    return count / (time.perf_counter() - start)


def gymnasium_default(size: int, seconds: float) -> float:
    import gymnasium as gym

    env = gym.make("HalfCheetah-v5", render_mode="rgb_array", width=size, height=size)
    env.reset(seed=0)

    def step() -> None:
        env.step(env.action_space.sample())
        env.render()

    fps = frames_per_second(step, seconds)
    env.close()
    return fps


def ours_single(size: int, seconds: float, **env_kwargs) -> float:
    from rlcyclegan.envs import make_env

    env = make_env("sim", image_size=size, **env_kwargs)
    env.reset(seed=0)
    fps = frames_per_second(lambda: env.step(env.action_space.sample()), seconds)
    env.close()
    return fps


def ours_vectorized(size: int, seconds: float, n_envs: int) -> float:
    from rlcyclegan.envs import make_vec_env

    venv = make_vec_env("sim", n_envs=n_envs, seed=0, image_size=size)
    venv.reset()
    actions = np.zeros((n_envs, 6), dtype=np.float32)
    rng = np.random.default_rng(0)

    def step() -> None:
        actions[:] = rng.uniform(-1, 1, actions.shape)
        venv.step(actions)

    fps = frames_per_second(step, seconds, frames_per_step=n_envs)
    venv.close()
    return fps


def tessellation_difference(size: int, states: int = 20) -> float:
    """How much the coarser default capsules change a frame: mean absolute difference over random states."""
    from rlcyclegan.envs import PairedRenderer, RenderSettings, load_domain

    spec = load_domain("sim")
    coarse = PairedRenderer(spec, size)
    fine = PairedRenderer(spec, size, RenderSettings(capsule_slices=28, capsule_stacks=16))
    rng = np.random.default_rng(0)
    total = 0.0
    for _ in range(states):
        qpos = np.concatenate([[0.0, rng.uniform(-0.1, 0.1), rng.uniform(-0.3, 0.3)], rng.uniform(-0.5, 0.5, 6)])
        total += np.abs(coarse.render(qpos).astype(np.int16) - fine.render(qpos)).mean()
    return total / states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="wall time per row")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    from rlcyclegan.envs import RenderSettings

    GYM_QUALITY = RenderSettings(shadows=True, shadow_size=4096, multisamples=4, capsule_slices=28, capsule_stacks=16)
    size, seconds = args.image_size, args.seconds
    rows = [
        ("gymnasium HalfCheetah-v5, rgb_array (default)", gymnasium_default(size, seconds)),
        ("rlcyclegan sim, 1 process", ours_single(size, seconds)),
        ("rlcyclegan sim, 1 process, shadows+4xMSAA (gym quality)",
         ours_single(size, seconds, render_settings=GYM_QUALITY)),
        (f"rlcyclegan sim, {args.workers} processes", ours_vectorized(size, seconds, args.workers)),
    ]
    baseline = rows[0][1]
    print(f"\nstep+render throughput at {size}x{size} on {os.cpu_count()} cores ({seconds:g} s per row)")
    print(f"{'configuration':<60} {'frames/s':>10} {'x default':>10}")
    for name, fps in rows:
        print(f"{name:<60} {fps:>10.1f} {fps / baseline:>9.1f}x")
    difference = tessellation_difference(size)
    print(f"\nmean |pixel difference| of our default capsules against MuJoCo's 28x16: {difference:.3f} of 255")


if __name__ == "__main__":
    main()
