"""Evidence: returns of the sim-trained policy under each transfer condition, and translation quality.

Returns: each condition runs the same policy (or the domain-randomized one) for ``episodes`` episodes
per seed; episode ``i`` of seed ``s`` resets with ``base_seed(s) + i``, the same for every condition, so
conditions start from the same states.

Translation quality: held-out real frames y with their true states; F(y) is compared with the true
``sim`` rendering of the same state (L1, PSNR, SSIM in [0, 1] intensity), labelled by a segmenter
trained on ``sim`` renders (FCN-score against the true ``sim`` segmentation), and its Q-consistency
``mean |Q_sim(F(y), a) - Q_real(y, a)|`` is measured with one fixed pair of Q-networks for all
translators, so the numbers compare translators, not Q-networks.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, SupportsFloat

import gymnasium as gym
import numpy as np
import torch

from rlcyclegan.agents.evaluation import evaluate_policy, summarize
from rlcyclegan.agents.policies import PixelPolicy
from rlcyclegan.agents.q_network import PixelQNetwork
from rlcyclegan.data.batches import frames_to_float
from rlcyclegan.data.loaders import RolloutDataset
from rlcyclegan.envs import DomainSpec, load_domain
from rlcyclegan.envs.rendering import PairedRenderer
from rlcyclegan.metrics import mean_absolute_error, psnr, ssim
from rlcyclegan.segmentation import SegmentationNet, fcn_score
from rlcyclegan.wrappers import FrameTranslator, TranslateObservation

SEED_STRIDE = 100_000


class StateRenderer(Protocol):
    """Renders a HalfCheetah ``qpos`` as an ``(H, W, 3)`` uint8 frame, like :class:`PairedRenderer`."""

    def render(self, qpos: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class PerfectTranslation(gym.Wrapper):
    """Shows the policy the true ``sim`` rendering of the env's current state: a perfect real2sim translator,
    which only an evaluation can have. Its return in ``real`` is what the physics gap alone costs, the
    ceiling of every translator (the paired oracle included)."""

    def __init__(self, env: gym.Env, domain: str | DomainSpec = "sim",
                 renderer: Callable[[PairedRenderer], StateRenderer] | None = None) -> None:
        """``renderer`` wraps the domain's renderer (experiments that alter what the policy is shown)."""
        super().__init__(env)
        shape = env.observation_space.shape
        assert shape is not None and len(shape) == 3, "PerfectTranslation needs (H, W, 3k) frames"
        paired = PairedRenderer(load_domain(domain), shape[0])
        self._renderer: StateRenderer = paired if renderer is None else renderer(paired)
        self._stack = np.zeros(shape, dtype=np.uint8)

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(**kwargs)
        frame = self._renderer.render(info["qpos"])
        self._stack[:] = np.tile(frame, (1, 1, self._stack.shape[-1] // 3))  # like the env: copies of frame 0
        return self._stack.copy(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, SupportsFloat, bool, bool, dict[str, Any]]:
        _, reward, terminated, truncated, info = self.env.step(action)
        self._stack[..., :-3] = self._stack[..., 3:]
        self._stack[..., -3:] = self._renderer.render(info["qpos"])
        return self._stack.copy(), reward, terminated, truncated, info

    def close(self) -> None:
        self._renderer.close()
        super().close()


def translated(translator: FrameTranslator) -> Callable[[gym.Env], gym.Env]:
    """An env wrapper for :func:`condition_returns` that translates with ``translator``."""
    return lambda env: TranslateObservation(env, translator)


def condition_returns(
    policy: PixelPolicy,
    domain: str,
    wrapper: Callable[[gym.Env], gym.Env] | None,
    episodes: int,
    seeds: list[int],
    max_episode_steps: int,
    on_episode: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Returns of ``policy`` in ``domain`` (through ``wrapper``'s observations if given), over all seeds."""
    per_seed = [
        evaluate_policy(policy, domain, episodes, seed=s * SEED_STRIDE, max_episode_steps=max_episode_steps,
                        env_wrapper=wrapper, on_episode=on_episode)
        for s in seeds
    ]
    returns = np.concatenate(per_seed)
    summary = summarize(returns)
    return {
        "mean": summary.mean, "std": summary.std, "ci95": list(summary.ci95), "n": summary.episodes,
        "seed_means": [float(r.mean()) for r in per_seed], "returns": returns.tolist(),
    }


class HeldOutReal:
    """Held-out real transitions with their true ``sim`` renderings and segmentations (evaluation only)."""

    def __init__(self, dataset: RolloutDataset, count: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        indices = dataset.sample_indices(min(count, dataset.num_transitions), rng)
        batch = dataset.get_batch(indices)
        self.stacks = batch.obs  # (N, 3k, H, W) uint8
        self.actions = batch.action
        self.frames = batch.obs[:, -3:].permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, 3), newest frame
        qpos, _ = dataset.true_states(indices)
        renderer = PairedRenderer(load_domain("sim"), dataset.image_size)
        try:
            self.true_sim = np.stack([renderer.render(q) for q in qpos])  # (N, H, W, 3)
            self.true_labels = np.stack([renderer.segment(q) for q in qpos])  # (N, H, W)
        finally:
            renderer.close()


def _unit(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def translate_stacks(translator: FrameTranslator, stacks: torch.Tensor) -> torch.Tensor:
    """Translate uint8 stacks ``(N, 3k, H, W)`` frame by frame."""
    n, c, h, w = stacks.shape
    frames = stacks.reshape(n * c // 3, 3, h, w).permute(0, 2, 3, 1).numpy()  # (N*k, H, W, 3)
    out = torch.from_numpy(translator(np.ascontiguousarray(frames)))  # (N*k, H, W, 3)
    return out.permute(0, 3, 1, 2).reshape(n, c, h, w)  # (N, 3k, H, W)


@torch.no_grad()
def translation_quality(
    translator: FrameTranslator | None,
    held_out: HeldOutReal,
    segmenter: SegmentationNet,
    q_sim: PixelQNetwork | None = None,
    q_real: PixelQNetwork | None = None,
) -> dict[str, float]:
    """Paired scores of F(y) against the true ``sim`` rendering; ``translator=None`` scores y itself."""
    translated = translator(held_out.frames) if translator is not None else held_out.frames
    prediction, target = _unit(translated), _unit(held_out.true_sim)
    scores = {
        "l1": float(mean_absolute_error(prediction, target)),
        "psnr": float(psnr(prediction, target)),
        "ssim": float(ssim(prediction, target)),
    }
    scores.update({f"fcn_{k}": v for k, v in fcn_score(segmenter, translated, held_out.true_labels).items()})
    if q_sim is not None and q_real is not None:
        stacks = translate_stacks(translator, held_out.stacks) if translator is not None else held_out.stacks
        q_sim_translated = q_sim(frames_to_float(stacks), held_out.actions)
        q_real_raw = q_real(frames_to_float(held_out.stacks), held_out.actions)
        scores["q_consistency"] = float((q_sim_translated - q_real_raw).abs().mean())
    return scores


def side_by_side_rows(translators: dict[str, FrameTranslator], held_out: HeldOutReal, count: int) -> list[np.ndarray]:
    """Grid rows ``real | F(real) per translator | true sim`` for the first ``count`` held-out frames."""
    rows = []
    for i in range(min(count, len(held_out.frames))):
        y = held_out.frames[i: i + 1]
        rows.append(y[0])
        rows.extend(t(y)[0] for t in translators.values())
        rows.append(held_out.true_sim[i])
    return rows


def load_q_pair(q_dir: Path, device: str = "cpu") -> tuple[PixelQNetwork, PixelQNetwork]:
    """``Q_sim`` and ``Q_real`` saved by the pipeline's Q stage."""
    from rlcyclegan.agents.q_network import load_q

    return load_q(q_dir / "sim" / "q.safetensors", device).eval(), load_q(q_dir / "real" / "q.safetensors", device).eval()
