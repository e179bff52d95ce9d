"""Pixel Q-networks ``Q(frames, action) -> scalar``: what makes the translator task-aware.

``PixelQNetwork`` takes a float frame stack in ``[-1, 1]`` (the range of the generators' output and of
``frames_to_float``), so the same network scores raw frames and translated ones.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class PixelEncoder(nn.Module):
    """A small strided CNN for ``(B, C, H, W)`` frames; the flatten size comes from a dummy forward pass."""

    def __init__(self, in_channels: int, image_size: int, features_dim: int = 256, width: int = 32) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, in_channels, image_size, image_size)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, features_dim), nn.LayerNorm(features_dim), nn.ReLU())
        self.features_dim = features_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(frames))


class PixelQNetwork(nn.Module):
    """Q(x, a): a CNN encoder of the stacked frames and an MLP over ``[features, action]``."""

    def __init__(
        self,
        frame_stack: int,
        action_dim: int,
        image_size: int,
        features_dim: int = 256,
        hidden_dim: int = 256,
        width: int = 32,
    ) -> None:
        super().__init__()
        self.frame_stack, self.action_dim, self.image_size = frame_stack, action_dim, image_size
        self.encoder = PixelEncoder(3 * frame_stack, image_size, features_dim, width)
        self.mlp = nn.Sequential(
            nn.Linear(features_dim + action_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, frames: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values ``(B,)`` for float frames ``(B, 3k, H, W)`` in [-1, 1] and actions ``(B, A)``."""
        features = self.encoder(frames)
        return self.mlp(torch.cat([features, action.to(features.dtype)], dim=1)).squeeze(1)


def make_target(network: nn.Module) -> nn.Module:
    """A frozen copy of ``network`` for TD targets."""
    target = copy.deepcopy(network)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(network: nn.Module, target: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau network, for parameters; buffers (e.g. norm statistics) are copied.

    Looping over parameters only would silently leave buffers stale (a known cleanrl pitfall).
    """
    for p, tp in zip(network.parameters(), target.parameters(), strict=True):
        tp.lerp_(p, tau)
    for b, tb in zip(network.buffers(), target.buffers(), strict=True):
        tb.copy_(b)
