"""Deployment: translate real observations with F (real2sim) before the sim-trained policy sees them.

The generator works per frame, so the wrappers translate each new frame once and keep a stack of
translated frames: identical to translating before stacking, at 1/k of the cost of re-translating the
whole stack each step. Frames stay uint8 HWC at the interface, as the policy expects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from rlcyclegan.device import resolve_device

Direction = Literal["real2sim", "sim2real"]


class FrameTranslator:
    """Runs a generator on uint8 frames ``(N, H, W, 3)`` -> uint8 frames, batched, in inference mode.

    Args:
        generator: an ``nn.Module`` mapping float ``(N, 3, H, W)`` in [-1, 1] to the same range.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        bf16: run under bfloat16 autocast (fast on CUDA; on a CPU with native bf16 it measured slower than fp32
            for 64x64 frames, see the README).
    """

    def __init__(self, generator: torch.nn.Module, device: str = "auto", bf16: bool = False) -> None:
        self.device = resolve_device(device)
        self.generator = generator.to(self.device).eval()
        self.bf16 = bf16

    @classmethod
    def from_checkpoint(
        cls, checkpoint_dir: str | Path, direction: Direction = "real2sim", device: str = "auto", bf16: bool = False
    ) -> FrameTranslator:
        """Load a trained generator from a checkpoint directory (no training code is needed)."""
        from rlcyclegan.networks import load_generator

        return cls(load_generator(checkpoint_dir, direction, resolve_device(device)), device, bf16)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
        x = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)  # (N, 3, H, W)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            y = self.generator(x)
        y = y.float().add_(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
        return y.permute(0, 2, 3, 1).cpu().numpy()  # (N, H, W, 3)


def _split_frames(stacks: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3k)`` -> ``(N, k, H, W, 3)``."""
    n, h, w, c = stacks.shape
    return stacks.reshape(n, h, w, c // 3, 3).transpose(0, 3, 1, 2, 4)


def _join_frames(frames: np.ndarray) -> np.ndarray:
    """``(N, k, H, W, 3)`` -> ``(N, H, W, 3k)``."""
    n, k, h, w, _ = frames.shape
    return frames.transpose(0, 2, 3, 1, 4).reshape(n, h, w, 3 * k)


class _TranslatedStacks:
    """Translated frame stacks of N envs, updated from raw stacks: whole stack on reset, newest frame otherwise."""

    def __init__(self, translator: FrameTranslator) -> None:
        self.translator = translator
        self.stacks: np.ndarray | None = None  # (N, H, W, 3k) uint8

    def reset(self, raw: np.ndarray) -> np.ndarray:
        frames = _split_frames(raw)  # (N, k, H, W, 3)
        translated = self.translator(frames.reshape(-1, *frames.shape[2:])).reshape(frames.shape)
        self.stacks = _join_frames(translated)
        return self.stacks.copy()

    def step(self, raw: np.ndarray, restarted: np.ndarray) -> np.ndarray:
        """``restarted[i]``: env i began a new episode, so its whole stack is new."""
        assert self.stacks is not None, "reset() must come first"
        k = raw.shape[-1] // 3
        newest = raw[..., -3:]
        if restarted.any():
            # (frames of restarted envs' whole stacks, newest frames of the others) in one batch
            fresh = _split_frames(raw[restarted]).reshape(-1, *raw.shape[1:3], 3)
            batch = np.concatenate([fresh, newest[~restarted]])
            out = self.translator(batch)
            self.stacks[restarted] = _join_frames(out[: len(fresh)].reshape(-1, k, *raw.shape[1:3], 3))
            continuing = out[len(fresh):]
        else:
            continuing = self.translator(newest)
        keep = ~restarted
        self.stacks[keep, ..., :-3] = self.stacks[keep, ..., 3:]
        self.stacks[keep, ..., -3:] = continuing
        return self.stacks.copy()


class TranslateObservation(gym.ObservationWrapper):
    """Translates a pixel env's frames with a generator before the policy sees them.

    The wrapped env's observation is uint8 ``(H, W, 3k)``; so is this wrapper's (same space).

    Args:
        env: a pixel env (e.g. ``rlcyclegan/HalfCheetahReal-v0``).
        translator: a ``FrameTranslator`` (``FrameTranslator.from_checkpoint(dir)`` for a trained F).
    """

    def __init__(self, env: gym.Env, translator: FrameTranslator) -> None:
        space = env.observation_space
        if not (isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
                and space.shape[-1] % 3 == 0):
            raise ValueError(f"TranslateObservation needs uint8 (H, W, 3k) observations, got {space}")
        super().__init__(env)
        self.translator = translator
        self._stacks = _TranslatedStacks(translator)
        self._restarted = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self._restarted = True
        return super().reset(seed=seed, options=options)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if self._restarted:
            self._restarted = False
            return self._stacks.reset(observation[None])[0]
        return self._stacks.step(observation[None], np.zeros(1, dtype=bool))[0]


class TranslateVecObservation(VecEnvWrapper):
    """The same for a stable-baselines3 ``VecEnv``: all envs' new frames go through the generator in one batch.

    ``infos[i]["terminal_observation"]`` is left untranslated: it only matters for training, not deployment.
    """

    def __init__(self, venv: VecEnv, translator: FrameTranslator) -> None:
        super().__init__(venv)
        self._stacks = _TranslatedStacks(translator)

    def reset(self) -> np.ndarray:
        return self._stacks.reset(self.venv.reset())

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        return self._stacks.step(obs, np.asarray(dones, dtype=bool)), rewards, dones, infos
