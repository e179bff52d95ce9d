"""Benchmark ``rlcyclegan collect``: transitions/s with 1 and 2 workers, and disk use per compression.

Run: ``python experiments/bench_collect.py`` (about a minute and a half on 2 cores at 64x64).
What it measures:

- ``env only``: one env stepping with random actions, nothing written: the ceiling for one worker
  (rendering dominates);
- ``collect, N workers``: end-to-end ``collect`` (wall clock, including process start-up) and the steady
  state: CPU time per transition beyond the fixed start-up, from which the rate with N idle cores follows
  (this machine is shared, so wall clock alone depends on what else runs);
- per compression (gzip level 1, lzf, none): MB per 10k frames and write time per frame, by rewriting
  the frames just collected, so every filter sees the same pictures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

from rlcyclegan.data.collect import CollectConfig, collect
from rlcyclegan.data.storage import list_shards, read_episode, write_episode


def env_only_rate(domain: str, image_size: int, steps: int) -> float:
    """Transitions/s of one env with random actions, writing nothing."""
    from rlcyclegan.envs import make_env

    env = make_env(domain, image_size=image_size, frame_stack=3, max_episode_steps=steps + 1)
    env.reset(seed=0)
    env.action_space.seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(env.action_space.sample())
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


class Run(NamedTuple):
    transitions: int
    wall_s: float
    cpu_s: float
    """CPU seconds of this process and its (joined) workers: independent of other load on the machine."""


def timed_collect(config: CollectConfig) -> Run:
    before = os.times()
    result = collect(config, progress=False)
    after = os.times()
    cpu = sum(getattr(after, f) - getattr(before, f) for f in ("user", "system", "children_user", "children_system"))
    return Run(result.transitions, result.seconds, cpu)


def collect_figures(config: CollectConfig, scratch: Path) -> dict[str, float]:
    """End-to-end rate, and the steady-state rate on idle cores from the marginal CPU cost per transition.

    A one-step run per worker measures the fixed cost (process start, imports, env construction); the
    CPU time beyond it, per transition, is what a long collection pays, so ``workers / marginal cost``
    is its rate with ``workers`` idle cores, whatever else the (shared) machine is running right now.
    """
    startup = timed_collect(replace(config, out=scratch / "startup", episodes=config.workers, max_steps=1))
    full = timed_collect(config)
    marginal = (full.cpu_s - startup.cpu_s) / (full.transitions - startup.transitions)
    return {
        "end_to_end_transitions_per_s": full.transitions / full.wall_s,
        "startup_cpu_s": startup.cpu_s,
        "cpu_ms_per_transition": marginal * 1e3,
        "idle_cores_transitions_per_s": config.workers / marginal,
    }


def compression_table(dataset: Path, scratch: Path) -> dict[str, dict[str, float]]:
    """MB per 10k frames and microseconds per written frame of each filter, on the collected frames."""
    episodes = [read_episode(path, i) for i, path in list_shards(dataset).items()]
    frames = sum(len(e.frames) for e in episodes)
    table = {}
    for compression in ("gzip", "lzf", "none"):
        target = scratch / compression
        target.mkdir()
        start = time.perf_counter()
        for episode in episodes:
            write_episode(target, episode, compression)
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in list_shards(target).values())
        table[compression] = {"mb_per_10k_frames": size / frames * 1e4 / 1e6, "us_per_frame": seconds / frames * 1e6}
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--domain", default="sim")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500, help="steps per episode")
    parser.add_argument("--episodes-per-worker", type=int, default=4)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, object] = {"image_size": args.image_size, "domain": args.domain, "steps": args.steps}
    results["env_only_transitions_per_s"] = env_only_rate(args.domain, args.image_size, 3 * args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        base = CollectConfig(out=Path(tmp), domain=args.domain, image_size=args.image_size, max_steps=args.steps)
        for workers in (1, 2):
            config = replace(base, out=Path(tmp) / f"w{workers}", workers=workers,
                             episodes=workers * args.episodes_per_worker)
            results[f"workers_{workers}"] = collect_figures(config, Path(tmp) / f"scratch{workers}")
        results["compression"] = compression_table(Path(tmp) / "w1", Path(tmp))

    results["load_average_1min"] = os.getloadavg()[0]
    print(f"collect benchmark: {args.domain}, {args.image_size}x{args.image_size}, {args.steps}-step episodes, "
          f"{os.cpu_count()} cores, load average {results['load_average_1min']:.1f} at the end")
    print(f"  env only (1 env, no writing)   {results['env_only_transitions_per_s']:7.0f} transitions/s")
    for workers in (1, 2):
        row = results[f"workers_{workers}"]
        print(f"  collect, {workers} worker(s): {row['end_to_end_transitions_per_s']:5.0f} transitions/s end to end "
              f"(shared machine); steady state {row['cpu_ms_per_transition']:.2f} CPU ms/transition "
              f"-> {row['idle_cores_transitions_per_s']:.0f} transitions/s on {workers} idle core(s) "
              f"(+{row['startup_cpu_s']:.1f} CPU s start-up)")
    for name, row in results["compression"].items():  # type: ignore[union-attr]
        print(f"  {name:<5} {row['mb_per_10k_frames']:6.1f} MB per 10k frames, {row['us_per_frame']:5.0f} us/frame to write")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
