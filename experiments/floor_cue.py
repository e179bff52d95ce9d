"""What does the pixel student read off the floor's checkerboard? Why the paired oracle can fail.

The camera tracks the torso, so between stacked frames only the floor moves: its pattern is where the
cheetah's speed can be seen. A real frame shows where the floor's *real* squares are (0.25 m), not where the *sim*
squares (0.67 m) would be: their phase is not a function of the real frame. A paired translator trained by
L1 then draws the average of the possible sim floors (a blur), and an unpaired one draws a floor of its own,
which is fine as long as it moves with the cheetah. This script shows the policy, in ``sim`` (its own
physics: no physics gap), the true sim rendering of each state with the floor altered:

- ``sim``: unaltered (the reference);
- ``floor shifted``: every frame's floor moved by a third of a metre (half a square): absolute phase lost;
- ``floor phase random per frame``: each frame's floor at a random phase: the motion between frames lost;
- ``plain floor``: one colour (the mean of the two squares): no floor pattern at all.

    python experiments/floor_cue.py runs/std3/policy/student.safetensors runs/std4/policy/student.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np

from rlcyclegan.agents.policies import load_policy
from rlcyclegan.envs import DomainSpec, PairedRenderer, load_domain
from rlcyclegan.evaluation import PerfectTranslation, StateRenderer, condition_returns

SIM_SQUARE = 2.0 / 3.0  # the sim floor's checker side (metres); its pattern repeats every two squares


class FloorShifted:
    """Renders each state with the root's x moved by ``offset()``: the tracking camera keeps the cheetah in
    place, so only the floor's pattern moves."""

    def __init__(self, renderer: PairedRenderer, offset: Callable[[], float]) -> None:
        self.renderer = renderer
        self.offset = offset

    def render(self, qpos: np.ndarray) -> np.ndarray:
        moved = np.array(qpos, dtype=np.float64)
        moved[0] += self.offset()
        return self.renderer.render(moved)

    def close(self) -> None:
        self.renderer.close()


def plain_floor(spec: DomainSpec) -> DomainSpec:
    mean = tuple((a + b) / 2 for a, b in zip(spec.visual.floor_rgb1, spec.visual.floor_rgb2, strict=True))
    return dataclasses.replace(spec, visual=dataclasses.replace(spec.visual, floor_rgb1=mean, floor_rgb2=mean))


def shown(domain: DomainSpec, renderer: Callable[[PairedRenderer], StateRenderer] | None = None
          ) -> Callable[[gym.Env], gym.Env]:
    return lambda env: PerfectTranslation(env, domain, renderer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("policies", nargs="+", type=Path)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=1000)
    args = parser.parse_args()
    sim = load_domain("sim")
    assert isinstance(sim, DomainSpec)
    rng = np.random.default_rng(0)
    conditions = {
        "sim": shown(sim),
        "floor shifted": shown(sim, lambda r: FloorShifted(r, lambda: SIM_SQUARE / 2)),
        "floor phase random per frame": shown(sim, lambda r: FloorShifted(r, lambda: rng.uniform(0, 2 * SIM_SQUARE))),
        "plain floor": shown(plain_floor(sim)),
    }
    print("| policy | " + " | ".join(conditions) + " |")
    print("|---|" + "---:|" * len(conditions))
    for path in args.policies:
        policy = load_policy(path)
        cells = []
        for wrapper in conditions.values():
            r = condition_returns(policy, "sim", wrapper, args.episodes, args.seeds, args.max_steps)
            cells.append(f"{r['mean']:,.0f} [{r['ci95'][0]:,.0f}, {r['ci95'][1]:,.0f}]")
        print(f"| {path} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
