"""Loading pixel policies: our DAgger students and SB3 models trained on the pixel envs, behind one interface.

Anything returned by :func:`load_policy` has SB3's ``predict(obs, state=None, episode_start=None,
deterministic=True) -> (actions, None)`` on one uint8 observation ``(H, W, 3k)`` or a batch
``(N, H, W, 3k)``, and an ``observation_space`` in that channels-last layout. SB3 zips are recognised
from their ``data`` JSON without unpickling anything, so a file of the wrong kind fails with one line.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces

from rlcyclegan.agents.student import STUDENT_KIND, PixelStudentPolicy, read_safetensors_header


class PixelPolicy(Protocol):
    """What the pipeline needs from a pixel policy (an SB3 policy satisfies it)."""

    observation_space: spaces.Space

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]: ...


def _sb3_data(path: Path) -> dict[str, Any]:
    """The JSON ``data`` entry of an SB3 zip (class entries are left serialized, never unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a stable-baselines3 model zip (no readable 'data' entry)") from None


def sb3_observation_shape(path: str | Path) -> tuple[int, ...] | None:
    """The observation shape an SB3 zip was trained on, read from its JSON (``None`` if it does not say)."""
    shape = _sb3_data(Path(path)).get("observation_space", {}).get("_shape")
    return tuple(shape) if isinstance(shape, list) else None


def sb3_algorithm_class(path: str | Path) -> type:
    """The SB3 algorithm class that saved ``path``, read from the policy class module and the saved fields.

    Raises:
        ValueError: if the zip is not an SB3 model of a supported algorithm.
    """
    import stable_baselines3 as sb3

    path = Path(path)
    data = _sb3_data(path)
    module = data.get("policy_class", {}).get("__module__", "")
    by_module = {"stable_baselines3.sac.policies": sb3.SAC, "stable_baselines3.td3.policies": sb3.TD3}
    if module in by_module:
        return by_module[module]
    if module == "stable_baselines3.common.policies":
        return sb3.PPO if "clip_range" in data else sb3.A2C
    raise ValueError(f"{path} is an SB3 model with policy module {module or '?'!r}; "
                     "supported algorithms are PPO, A2C, SAC, TD3 and DDPG")


def _channels_last(space: spaces.Box) -> spaces.Box:
    """SB3 stores image spaces transposed to ``(C, H, W)`` by ``VecTransposeImage``; the envs give ``(H, W, C)``."""
    from stable_baselines3.common.preprocessing import is_image_space_channels_first

    if len(space.shape) == 3 and is_image_space_channels_first(space):
        c, h, w = space.shape
        return spaces.Box(0, 255, (h, w, c), dtype=np.uint8)
    return space


class SB3PixelPolicy:
    """An SB3 model trained on pixel observations, presented with the channels-last observation space.

    SB3's own ``predict`` already transposes ``(H, W, C)`` images and handles single and batched inputs.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.observation_space = _channels_last(model.observation_space)
        self.action_space = model.action_space

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: np.ndarray | None = None,
                deterministic: bool = True) -> tuple[np.ndarray, Any]:
        return self.model.predict(observation, state, episode_start, deterministic)


def _check_pixel_space(space: spaces.Space, path: Path) -> None:
    shape = getattr(space, "shape", None)
    if not (isinstance(space, spaces.Box) and space.dtype == np.uint8 and shape and len(shape) == 3):
        raise ValueError(f"{path} is a policy over observations {space} (shape {shape}), not uint8 pixel frames "
                         "(H, W, 3k); a state-based teacher cannot be used as a pixel policy")


def load_policy(path: str | Path, device: str = "auto") -> PixelPolicy:
    """Load a pixel policy: a student ``.safetensors`` or an SB3 zip trained on the pixel envs.

    Args:
        path: the policy file.
        device: torch device name (``auto`` picks CUDA when available).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is neither kind, or its observations are not pixel frames.
    """
    from rlcyclegan.device import resolve_device

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy file at {path}")
    torch_device = resolve_device(device)
    if zipfile.is_zipfile(path):
        model = sb3_algorithm_class(path).load(path, device=torch_device)
        _check_pixel_space(model.observation_space, path)
        if not isinstance(model.action_space, spaces.Box):
            raise ValueError(f"{path} has action space {model.action_space}; HalfCheetah needs a Box policy")
        return SB3PixelPolicy(model)
    header = read_safetensors_header(path)
    if header.get("kind") != STUDENT_KIND:
        raise ValueError(f"{path} is a safetensors file of kind {header.get('kind', 'unknown')!r}, not a pixel "
                         "student; pass a student file or an SB3 model zip")
    return PixelStudentPolicy.load(path, torch_device)


def check_policy_fits(policy: PixelPolicy, observation_space: spaces.Space, what: str = "the env") -> None:
    """Raise a one-line error when a policy's observations are not the env's.

    Raises:
        ValueError: naming both shapes and the knobs that set them.
    """
    expected = tuple(policy.observation_space.shape or ())
    got = tuple(observation_space.shape or ())
    if expected != got:
        raise ValueError(f"policy expects observations of shape {expected} but {what} gives {got}; "
                         "make the env with the policy's image_size and frame_stack")
