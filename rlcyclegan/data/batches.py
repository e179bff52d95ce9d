"""The batch type every learner consumes, and the one place where uint8 frames become floats.

Images stay uint8 until they reach a network (SB3 convention; a float replay of 64x64x9 frames would
take 4x the memory). Tensors are channels-first: a frame stack of k RGB frames is ``(B, 3k, H, W)``,
oldest frame first, as the env's ``(H, W, 3k)`` observation transposed.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class TransitionBatch(NamedTuple):
    """Observations and, for rollout data, the transitions that start from them.

    Image-only sources (plain image folders) fill ``obs`` alone and leave the rest ``None``.
    """

    obs: torch.Tensor  # (B, 3k, H, W) uint8
    action: torch.Tensor | None = None  # (B, A) float32
    reward: torch.Tensor | None = None  # (B,) float32
    next_obs: torch.Tensor | None = None  # (B, 3k, H, W) uint8
    next_action: torch.Tensor | None = None  # (B, A) float32, the behaviour policy's next action (SARSA target)
    terminated: torch.Tensor | None = None  # (B,) float32, 1.0 where the episode ended without bootstrap
    paired_obs: torch.Tensor | None = None  # (B, 3k, H, W) uint8, the same states in the other domain's look
    """Ground truth that no unpaired method may see: only the paired oracle (``loss.lambda_paired``) reads it."""
    paired_labels: torch.Tensor | None = None  # (B, k, H, W) uint8, the true segmentation of paired_obs
    extra_frames: torch.Tensor | None = None  # (E, 3, H, W) uint8, newest frames of E other states
    """For the image losses only (``data.extra_frames``): no actions, no stacks, no paired truth."""

    @property
    def has_transitions(self) -> bool:
        return self.action is not None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TransitionBatch:
        return TransitionBatch(*(t.to(device, non_blocking=non_blocking) if t is not None else None for t in self))


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float ``[-1, 1]`` (the range of the generators' tanh output)."""
    return frames.float().div_(127.5).sub_(1.0)


def float_to_frames(images: torch.Tensor) -> torch.Tensor:
    """float ``[-1, 1]`` -> uint8 ``[0, 255]``, rounding to nearest."""
    return images.add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
