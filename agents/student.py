"""The pixel student: a CNN policy over stacked uint8 frames that behaves like an SB3 policy.

It is what DAgger trains (``agents/dagger.py``) and what the rest of the pipeline runs in the pixel envs.
It mirrors the parts of the stable-baselines3 policy API the pipeline uses: ``predict(obs, state,
episode_start, deterministic) -> (actions, None)`` on one observation ``(H, W, 3k)`` or a batch
``(N, H, W, 3k)``, ``observation_space``/``action_space``, and ``save``/``load``. The file is a single
``.safetensors`` whose metadata holds a JSON header (kind, version, constructor arguments), so loading
needs no pickle and runs no stored code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from safetensors.torch import load_file, save_file
from torch import nn

from rlcyclegan.agents.q_network import PixelEncoder
from rlcyclegan.data.batches import frames_to_float

STUDENT_KIND = "rlcyclegan-pixel-student"
STUDENT_VERSION = 1


class PixelStudentPolicy(nn.Module):
    """Deterministic policy ``a = tanh(MLP(CNN(frames)))``, rescaled to the action bounds.

    Args:
        image_size: side of the square frames.
        frame_stack: frames per observation (channels ``3 * frame_stack``).
        action_dim: action dimensions.
        action_low: lower action bound per dimension (HalfCheetah: -1).
        action_high: upper action bound per dimension (HalfCheetah: 1).
        features_dim: CNN output size.
        hidden_dim: MLP width.
        width: channels of the first conv; 16 trains ~2.4x faster than 32 on a CPU with little loss here.
    """

    def __init__(
        self,
        image_size: int,
        frame_stack: int,
        action_dim: int,
        action_low: list[float] | None = None,
        action_high: list[float] | None = None,
        features_dim: int = 256,
        hidden_dim: int = 256,
        width: int = 16,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "image_size": image_size, "frame_stack": frame_stack, "action_dim": action_dim,
            "action_low": list(action_low or [-1.0] * action_dim), "action_high": list(action_high or [1.0] * action_dim),
            "features_dim": features_dim, "hidden_dim": hidden_dim, "width": width,
        }
        self.encoder = PixelEncoder(3 * frame_stack, image_size, features_dim, width)
        self.head = nn.Sequential(
            nn.Linear(features_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, action_dim), nn.Tanh(),
        )
        low = torch.tensor(self.config["action_low"], dtype=torch.float32)
        high = torch.tensor(self.config["action_high"], dtype=torch.float32)
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)
        self.observation_space = spaces.Box(0, 255, (image_size, image_size, 3 * frame_stack), dtype=np.uint8)
        self.action_space = spaces.Box(low.numpy(), high.numpy(), dtype=np.float32)

    @classmethod
    def for_spaces(cls, observation_space: spaces.Space, action_space: spaces.Space, **kwargs: Any
                   ) -> PixelStudentPolicy:
        """A student sized for an env's pixel observation space ``(H, H, 3k)`` and Box action space."""
        shape = getattr(observation_space, "shape", None)
        if shape is None or len(shape) != 3 or shape[0] != shape[1] or shape[2] % 3:
            raise ValueError(f"the student needs square (H, H, 3k) pixel observations, got shape {shape}; "
                             "make the env with obs_type='pixels'")
        if not isinstance(action_space, spaces.Box):
            raise ValueError(f"the student needs a Box action space, got {action_space}")
        return cls(shape[0], shape[2] // 3, action_space.shape[0], action_space.low.tolist(),
                   action_space.high.tolist(), **kwargs)

    @property
    def device(self) -> torch.device:
        return self.action_scale.device

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """Actions ``(B, A)`` for uint8 channels-first frame stacks ``(B, 3k, H, W)``."""
        latent = self.head(self.encoder(frames_to_float(frames)))
        return latent * self.action_scale + self.action_bias

    def predict(
        self,
        observation: np.ndarray,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """SB3-style prediction on ``(H, W, 3k)`` or ``(N, H, W, 3k)`` uint8 observations.

        ``state``, ``episode_start`` and ``deterministic`` exist for SB3 compatibility: the policy is
        feed-forward and deterministic.

        Raises:
            ValueError: if the observation shape does not match the policy's.
        """
        obs = np.asarray(observation)
        expected = self.observation_space.shape
        single = obs.shape == expected
        if not single and obs.shape[1:] != expected:
            raise ValueError(f"observation shape {obs.shape} does not match the policy's {expected} "
                             "(or a batch (N, *shape)); check the env's image_size and frame_stack")
        batch = torch.as_tensor(obs[None] if single else obs, device=self.device)
        batch = batch.permute(0, 3, 1, 2)  # (N, H, W, 3k) -> (N, 3k, H, W)
        was_training = self.training
        self.eval()
        with torch.inference_mode():
            actions = self(batch).cpu().numpy().astype(np.float32)
        self.train(was_training)
        return (actions[0] if single else actions), None

    def save(self, path: str | Path) -> None:
        """Write weights and the JSON header to one ``.safetensors`` file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"kind": STUDENT_KIND, "version": str(STUDENT_VERSION), "config": json.dumps(self.config)}
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata=header)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> PixelStudentPolicy:
        """Rebuild a student saved with :meth:`save`.

        Raises:
            ValueError: if the file is not a student file.
        """
        header = read_safetensors_header(path)
        if header.get("kind") != STUDENT_KIND:
            raise ValueError(f"{path} is not a pixel student file (kind {header.get('kind')!r}, "
                             f"expected {STUDENT_KIND!r})")
        policy = cls(**json.loads(header["config"]))
        policy.load_state_dict(load_file(str(path)))
        return policy.to(device).eval()


def read_safetensors_header(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file (empty when it has none).

    Raises:
        ValueError: if the file is not a safetensors file.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # safetensors raises its own error types for non-safetensors files
        raise ValueError(f"{path} is not a safetensors file ({type(err).__name__})") from None
