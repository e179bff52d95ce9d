"""Pixel Q-networks ``Q(frames, action) -> scalar``: what makes the translator task-aware.

``PixelQNetwork`` takes a float frame stack in ``[-1, 1]`` (the range of the generators' output and of
``frames_to_float``), so the same network scores raw frames and translated ones. ``save_q``/``load_q``
store one ``.safetensors`` file whose metadata holds the constructor arguments as JSON (no pickle).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

Q_KIND = "rlcyclegan-pixel-q"


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
    """Q(x, a): a CNN encoder of the stacked frames and an MLP over ``[features, action]``.

    ``Q = value_offset + value_scale * MLP(...)``: with gamma 0.99, returns are ~100x the per-step reward,
    and an MLP whose output starts near 0 takes thousands of Adam steps just to reach that level. Setting
    the offset and scale from the data's reward statistics (``agents/q_training.py`` does) lets the network
    learn O(1) deviations while Q stays in reward units. The defaults (0, 1) give a plain MLP output.
    """

    def __init__(
        self,
        frame_stack: int,
        action_dim: int,
        image_size: int,
        features_dim: int = 256,
        hidden_dim: int = 256,
        width: int = 32,
        value_scale: float = 1.0,
        value_offset: float = 0.0,
    ) -> None:
        super().__init__()
        self.frame_stack, self.action_dim, self.image_size = frame_stack, action_dim, image_size
        self.value_scale, self.value_offset = float(value_scale), float(value_offset)
        self.config: dict[str, Any] = {
            "frame_stack": frame_stack, "action_dim": action_dim, "image_size": image_size,
            "features_dim": features_dim, "hidden_dim": hidden_dim, "width": width,
            "value_scale": self.value_scale, "value_offset": self.value_offset,
        }
        self.metadata: dict[str, Any] = {}  # what the file it came from says (gamma, domain, ...)
        self.encoder = PixelEncoder(3 * frame_stack, image_size, features_dim, width)
        self.mlp = nn.Sequential(
            nn.Linear(features_dim + action_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 1),
        )

    def forward(self, frames: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values ``(B,)`` for float frames ``(B, 3k, H, W)`` in [-1, 1] and actions ``(B, A)``."""
        features = self.encoder(frames)
        value = self.mlp(torch.cat([features, action.to(features.dtype)], dim=1)).squeeze(1)
        return self.value_offset + self.value_scale * value


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


def save_q(network: PixelQNetwork, path: str | Path, **metadata: Any) -> None:
    """Write ``network`` to one ``.safetensors`` file; ``metadata`` (e.g. gamma, domain) is stored as JSON.

    The constructor arguments travel in the header, so :func:`load_q` needs nothing else.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"kind": Q_KIND, "config": json.dumps(network.config), "metadata": json.dumps(metadata)}
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(path), metadata=header)


def load_q(path: str | Path, device: str | torch.device = "cpu") -> PixelQNetwork:
    """Rebuild a Q-network written by :func:`save_q`; its stored metadata is in ``network.metadata``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not a saved Q-network.
    """
    from rlcyclegan.agents.student import read_safetensors_header

    if not Path(path).is_file():
        raise FileNotFoundError(f"no Q-network at {path}: train one with `rlcyclegan train-q`")
    header = read_safetensors_header(path)
    if header.get("kind") != Q_KIND:
        raise ValueError(f"{path} is not a Q-network file (kind {header.get('kind')!r}, expected {Q_KIND!r})")
    network = PixelQNetwork(**json.loads(header["config"]))
    network.load_state_dict(load_file(str(path)))
    network.metadata = json.loads(header.get("metadata", "{}"))
    return network.to(device)
