"""Training checkpoints: one directory per saved iteration, complete before anyone can see it.

Layout::

    RUN_DIR/checkpoints/step_{n:08d}/
        G_sim2real.safetensors, G_real2sim.safetensors   the translator (``networks.load_generator`` reads these)
        G_sim2real_ema.safetensors, G_real2sim_ema.safetensors   their moving averages, with ``optim.ema_decay``
                                                         (then ``translator.json`` names these for deployment)
        translator.json                                  generator kwargs, image size, frame format
        D_real.safetensors, D_sim.safetensors            discriminators
        Q_sim.safetensors, Q_real.safetensors (+ _target) Q-networks in ``save_q`` format (``load_q`` reads them)
        training_state.pt                                optimizers, schedules, image pools, RNG: tensors and
                                                         plain values only, read with ``torch.load(weights_only=True)``
        checkpoint.json                                  iteration, architecture, full config
    RUN_DIR/checkpoints/latest                           text: the newest complete checkpoint's name

Weights are safetensors, never pickled code. A checkpoint is written into a hidden temporary directory,
each file fsynced, then renamed into place (atomic on POSIX); ``latest`` is replaced the same way only
after that, so a crash at any point leaves the previous checkpoint and pointer intact.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlcyclegan.agents.q_network import PixelQNetwork, save_q
from rlcyclegan.fileio import fsync_path
from rlcyclegan.networks import LATEST_FILE, TRANSLATOR_FILE, load_state_dict_checked

CHECKPOINTS = "checkpoints"
STATE_FILE = "training_state.pt"
INFO_FILE = "checkpoint.json"


def checkpoint_name(iteration: int) -> str:
    return f"step_{iteration:08d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The directory ``RUN_DIR/checkpoints/latest`` points to, or ``None`` when there is none yet."""
    pointer = run_dir / CHECKPOINTS / LATEST_FILE
    if not pointer.is_file():
        return None
    target = run_dir / CHECKPOINTS / pointer.read_text().strip()
    if not (target / INFO_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {target.name}, which is missing or incomplete")
    return target


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    return sorted(d for d in (run_dir / CHECKPOINTS).glob("step_*") if (d / INFO_FILE).is_file())


def checkpoint_iteration(directory: Path) -> int | None:
    """The completed iterations a checkpoint directory holds (``None``: ``directory`` is not a checkpoint)."""
    info = directory / INFO_FILE
    return int(json.loads(info.read_text())["iteration"]) if info.is_file() else None


def save_checkpoint(
    run_dir: Path,
    iteration: int,
    networks: dict[str, nn.Module],
    training_state: dict[str, Any],
    translator: dict[str, Any],
    info: dict[str, Any],
    keep: int = 0,
) -> Path:
    """Write one checkpoint atomically, point ``latest`` at it, and prune old ones.

    Args:
        run_dir: the run's directory.
        iteration: completed iterations (the directory's name).
        networks: modules by file name (``G_sim2real`` ...); ``PixelQNetwork``s go through ``save_q``.
        training_state: optimizer/scheduler/pool/RNG state (tensors and plain values).
        translator: the ``translator.json`` content.
        info: written to ``checkpoint.json`` (iteration, architecture, config).
        keep: newest checkpoints to keep (0: all).

    Returns:
        The checkpoint directory.
    """
    root = run_dir / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(iteration)
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, module in networks.items():
        path = tmp / f"{name}.safetensors"
        if isinstance(module, PixelQNetwork):
            save_q(module, path, role=name)
        else:
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(state, str(path), metadata={"network": name, "class": type(module).__name__})
    torch.save(training_state, tmp / STATE_FILE)
    (tmp / TRANSLATOR_FILE).write_text(json.dumps(translator, indent=2))
    (tmp / INFO_FILE).write_text(json.dumps({"iteration": iteration, **info}, indent=2))
    for path in tmp.iterdir():
        fsync_path(path)
    if final.exists():  # e.g. a resumed run re-saving an iteration: move the old one aside first
        stale = root / f".{final.name}.old-{os.getpid()}"
        os.replace(final, stale)
        shutil.rmtree(stale)
    os.replace(tmp, final)
    pointer_tmp = root / f".{LATEST_FILE}.tmp-{os.getpid()}"
    pointer_tmp.write_text(final.name + "\n")
    fsync_path(pointer_tmp)
    os.replace(pointer_tmp, root / LATEST_FILE)
    fsync_path(root)
    if keep:
        for old in sorted(root.glob("step_*"))[:-keep]:
            shutil.rmtree(old)
    return final


def load_checkpoint(directory: Path, networks: dict[str, nn.Module], architecture: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Load weights into ``networks`` and return ``(iteration, training_state)``.

    Raises:
        ValueError: when the checkpoint was written for another architecture (one line naming the difference).
        FileNotFoundError: when a weight file is missing.
    """
    info = json.loads((directory / INFO_FILE).read_text())
    saved = _flatten(info["architecture"])
    here = _flatten(architecture)
    diff = sorted(k for k in set(saved) | set(here) if saved.get(k) != here.get(k))
    if diff:
        k = diff[0]
        raise ValueError(f"checkpoint {directory} was written for a different architecture: {k} is "
                         f"{saved.get(k)!r} there but {here.get(k)!r} here; resume with the run's own config.yaml")
    for name, module in networks.items():
        path = directory / f"{name}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {directory} lacks {path.name}")
        load_state_dict_checked(module, load_file(str(path)), path)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    return int(info["iteration"]), state


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat
