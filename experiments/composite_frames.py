"""Which part of a translation costs the return: the cheetah it draws, or the floor and sky around it?

Runs the sim-trained student in ``real`` and shows it, frame by frame, a composite of the translator's F(real
frame) and the true ``sim`` rendering of the same state (which only an evaluation can have):

- ``F everywhere``: F's frame unaltered (what deployment shows);
- ``F's cheetah``: F's pixels wherever either domain's segmentation says body, the true sim frame elsewhere;
- ``F's background``: the other way round, F's floor and sky around the true sim cheetah.

The body mask is the union of both domains' because the real links are thicker and slightly longer: F has to
paint over the real body's pixels, and the sim body's are where the policy expects it. So F's pixels in the
two composites do not overlap, and together they make F's frame.

    python experiments/composite_frames.py --student runs/std27/policy/student.safetensors \\
        --translators runs/std27/translators/rlcyclegan/checkpoints/step_00015000 \\
                      runs/std27/translators/oracle/checkpoints/step_00003000
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from rlcyclegan.agents.policies import load_policy
from rlcyclegan.envs import load_domain
from rlcyclegan.envs.model import SEGMENTATION_CLASSES
from rlcyclegan.envs.rendering import PairedRenderer
from rlcyclegan.evaluation import PerfectTranslation, condition_returns
from rlcyclegan.wrappers import FrameTranslator

Part = Literal["everything", "cheetah", "background"]
PARTS: dict[str, Part] = {"F everywhere": "everything", "F's cheetah": "cheetah", "F's background": "background"}
BACKGROUND_CLASSES = [SEGMENTATION_CLASSES.index("background"), SEGMENTATION_CLASSES.index("floor")]


class CompositeRenderer:
    """Renders a state as F's translation of its ``real`` rendering (identical to the env's observation), with
    the true ``sim`` rendering where ``part`` says: a ``StateRenderer`` for :class:`PerfectTranslation`, which
    stacks the frames like the env."""

    def __init__(self, sim: PairedRenderer, translator: FrameTranslator, part: Part, image_size: int) -> None:
        self.sim, self.translator, self.part = sim, translator, part
        self.real = PairedRenderer(load_domain("real"), image_size)

    def render(self, qpos: np.ndarray) -> np.ndarray:
        translated = self.translator(self.real.render(qpos)[None])[0]
        if self.part == "everything":
            return translated
        body = ~np.isin(self.sim.segment(qpos), BACKGROUND_CLASSES) | ~np.isin(self.real.segment(qpos), BACKGROUND_CLASSES)
        from_translation = body if self.part == "cheetah" else ~body
        return np.where(from_translation[..., None], translated, self.sim.render(qpos))

    def close(self) -> None:
        self.sim.close()
        self.real.close()


def composite_translation(translator: FrameTranslator, part: Part, image_size: int) -> Callable[[gym.Env], gym.Env]:
    """An env wrapper for :func:`condition_returns` that shows the policy ``part`` of F's frames."""
    return lambda env: PerfectTranslation(env, "sim", lambda sim: CompositeRenderer(sim, translator, part, image_size))


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--translators", type=Path, nargs="+", required=True, help="checkpoint directories")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=1000)
    args = parser.parse_args(argv)
    policy = load_policy(args.student)
    image_size = policy.observation_space.shape[0]
    print("| translator | " + " | ".join(PARTS) + " |")
    print("|---|" + "---:|" * len(PARTS))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for checkpoint in args.translators:
        translator = FrameTranslator.from_checkpoint(checkpoint, "real2sim", device="cpu")
        results[str(checkpoint)] = {
            name: condition_returns(policy, "real", composite_translation(translator, part, image_size),
                                    args.episodes, args.seeds, args.max_steps)
            for name, part in PARTS.items()
        }
        cells = [f"{r['mean']:,.0f} [{r['ci95'][0]:,.0f}, {r['ci95'][1]:,.0f}]" for r in results[str(checkpoint)].values()]
        print(f"| {checkpoint} | " + " | ".join(cells) + " |", flush=True)
    return results


if __name__ == "__main__":
    main()
