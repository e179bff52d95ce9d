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
from pathlib import Path
from typing import Any, Literal, SupportsFloat

import gymnasium as gym
import numpy as np

from rlcyclegan.agents.policies import load_policy
from rlcyclegan.envs import load_domain
from rlcyclegan.envs.model import SEGMENTATION_CLASSES
from rlcyclegan.envs.rendering import PairedRenderer
from rlcyclegan.evaluation import condition_returns
from rlcyclegan.wrappers import FrameTranslator

Part = Literal["everything", "cheetah", "background"]
PARTS: dict[str, Part] = {"F everywhere": "everything", "F's cheetah": "cheetah", "F's background": "background"}
BACKGROUND_CLASSES = [SEGMENTATION_CLASSES.index("background"), SEGMENTATION_CLASSES.index("floor")]


def composite(translated: np.ndarray, true_sim: np.ndarray, body: np.ndarray, part: Part) -> np.ndarray:
    """``translated`` where ``part`` says, ``true_sim`` elsewhere; frames ``(H, W, 3)``, ``body`` ``(H, W)`` bool."""
    if part == "everything":
        return translated
    from_translation = body if part == "cheetah" else ~body
    return np.where(from_translation[..., None], translated, true_sim)


class CompositeTranslation(gym.Wrapper):
    """Stacks composites of each new real frame's translation and its state's true sim rendering."""

    def __init__(self, env: gym.Env, translator: FrameTranslator, part: Part) -> None:
        super().__init__(env)
        shape = env.observation_space.shape
        assert shape is not None and len(shape) == 3, "CompositeTranslation needs (H, W, 3k) frames"
        self.sim = PairedRenderer(load_domain("sim"), shape[0])
        self.real = PairedRenderer(load_domain("real"), shape[0])
        self.translator, self.part = translator, part
        self.stack = np.zeros(shape, dtype=np.uint8)

    def frame(self, observation: np.ndarray, qpos: np.ndarray) -> np.ndarray:
        translated = self.translator(np.ascontiguousarray(observation[None, ..., -3:]))[0]
        if self.part == "everything":
            return translated
        body = ~np.isin(self.sim.segment(qpos), BACKGROUND_CLASSES) | ~np.isin(self.real.segment(qpos), BACKGROUND_CLASSES)
        return composite(translated, self.sim.render(qpos), body, self.part)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self.stack[:] = np.tile(self.frame(observation, info["qpos"]), (1, 1, self.stack.shape[-1] // 3))
        return self.stack.copy(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.stack[..., :-3] = self.stack[..., 3:]
        self.stack[..., -3:] = self.frame(observation, info["qpos"])
        return self.stack.copy(), reward, terminated, truncated, info

    def close(self) -> None:
        self.sim.close()
        self.real.close()
        super().close()


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--translators", type=Path, nargs="+", required=True, help="checkpoint directories")
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=1000)
    args = parser.parse_args(argv)
    policy = load_policy(args.student)
    print("| translator | " + " | ".join(PARTS) + " |")
    print("|---|" + "---:|" * len(PARTS))
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for checkpoint in args.translators:
        translator = FrameTranslator.from_checkpoint(checkpoint, "real2sim", device="cpu")
        results[str(checkpoint)] = {
            name: condition_returns(policy, "real", lambda env, t=translator, p=part: CompositeTranslation(env, t, p),
                                    args.episodes, args.seeds, args.max_steps)
            for name, part in PARTS.items()
        }
        cells = [f"{r['mean']:,.0f} [{r['ci95'][0]:,.0f}, {r['ci95'][1]:,.0f}]" for r in results[str(checkpoint)].values()]
        print(f"| {checkpoint} | " + " | ".join(cells) + " |", flush=True)
    return results


if __name__ == "__main__":
    main()
