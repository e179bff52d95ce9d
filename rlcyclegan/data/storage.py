"""On-disk rollout datasets: one directory, a ``metadata.json`` and one HDF5 shard per complete episode.

Layout (Minari's episode layout, in plain HDF5 read with h5py)::

    DIR/metadata.json                 domain spec, behaviour policy, seed, image size, versions
    DIR/episode_000000.h5
        episode_0/                    attrs: id, seed, total_steps[, domain_spec (JSON, randomized domains)]
            observations  (T+1, H, W, 3) uint8   the reset frame, then one frame per step (newest only)
            actions       (T, A) float32
            rewards       (T,) float64
            terminations  (T,) bool
            truncations   (T,) bool
            infos/qpos    (T+1, nq) float64      true physical state: evaluation only, never for training
            infos/qvel    (T+1, nv) float64

Why shards and not Minari's single growing ``main_data.hdf5``: HDF5 has no journal, so a process killed
while it appends can leave the one file unreadable, and every episode in it with it. Here each episode is
written to ``*.tmp`` and renamed into place with ``os.replace`` (atomic on POSIX), so a killed collection
leaves only complete episodes plus ``.tmp`` leftovers that readers ignore and the next run deletes.

Why not Minari itself: its HDF5 backend (``minari/dataset/_storages/hdf5_storage.py``) creates every
dataset with ``chunks=True`` and no compression filter, so 64x64 frames would take ~125 MB per 10k
instead of ~39 MB with gzip level 1; nor does it write atomically. The episode groups here follow its
names, so Minari-style readers find the same keys; frames are chunked a few at a time so that reading
one frame stack decompresses little.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from rlcyclegan.fileio import fsync_path

FORMAT_NAME = "rlcyclegan-rollouts"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
SHARD_PATTERN = re.compile(r"^episode_(\d+)\.h5$")
PARTIAL_SUFFIX = ".tmp"
COLLECTION_KEYS = ("domain", "policy", "seed", "image_size", "frame_stack", "max_steps")
"""The settings that decide a dataset's data, under ``metadata["collection"]``."""
CHUNK_BYTES = 1 << 17
"""Target size of one compressed frame chunk: ~10 frames at 64x64, small enough for random reads."""

Compression = Literal["gzip", "lzf", "none"]
_FILTERS: dict[str, dict[str, Any]] = {
    "gzip": {"compression": "gzip", "compression_opts": 1},  # readable by every HDF5 tool
    "lzf": {"compression": "lzf"},  # h5py-only filter
    "none": {},
}


@dataclass
class Episode:
    """One complete episode, as collected and as stored."""

    episode_id: int
    seed: int
    frames: np.ndarray  # (T+1, H, W, 3) uint8
    actions: np.ndarray  # (T, A) float32
    rewards: np.ndarray  # (T,) float64
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    qpos: np.ndarray  # (T+1, nq) float64
    qvel: np.ndarray  # (T+1, nv) float64
    domain_spec: dict[str, Any] | None = None
    """The spec this episode was rendered with, for randomized domains (a new one per episode)."""

    @property
    def num_steps(self) -> int:
        return len(self.actions)

    def check(self) -> None:
        """Raise ``ValueError`` when the arrays do not describe one episode of ``T`` steps."""
        t = self.num_steps
        expected = {
            "frames": t + 1, "rewards": t, "terminations": t, "truncations": t, "qpos": t + 1, "qvel": t + 1,
        }
        for name, length in expected.items():
            if len(getattr(self, name)) != length:
                raise ValueError(
                    f"episode {self.episode_id}: {name} has {len(getattr(self, name))} entries, expected {length} "
                    f"for {t} steps"
                )
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"episode {self.episode_id}: frames must be uint8 (T+1, H, W, 3), got "
                             f"{self.frames.dtype} {self.frames.shape}")


def shard_path(directory: Path, episode_id: int) -> Path:
    return directory / f"episode_{episode_id:06d}.h5"


def list_shards(directory: Path) -> dict[int, Path]:
    """Complete episode shards by episode id; partial ``.tmp`` files and other files are ignored."""
    shards = {}
    for path in directory.iterdir():
        match = SHARD_PATTERN.match(path.name)
        if match:
            shards[int(match.group(1))] = path
    return dict(sorted(shards.items()))


def remove_partial_files(directory: Path) -> int:
    """Delete shards a killed writer left half-written; returns how many."""
    partial = [p for p in directory.iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def write_episode(directory: Path, episode: Episode, compression: Compression = "gzip") -> Path:
    """Write ``episode`` to its own shard, atomically: the shard either exists complete or not at all.

    The temporary name carries the pid, so a writer orphaned by a killed run and a resumed run never
    write into the same file; both produce identical bytes for the same episode id anyway.
    """
    episode.check()
    final = shard_path(directory, episode.episode_id)
    partial = final.with_name(f"{final.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    frame_shape = episode.frames.shape[1:]
    chunk_frames = int(np.clip(CHUNK_BYTES // int(np.prod(frame_shape)), 1, len(episode.frames)))
    with h5py.File(partial, "w") as file:
        file.attrs["format"] = FORMAT_NAME
        file.attrs["format_version"] = FORMAT_VERSION
        file.attrs["total_episodes"] = 1
        file.attrs["total_steps"] = episode.num_steps
        group = file.create_group(f"episode_{episode.episode_id}")
        group.attrs["id"] = episode.episode_id
        group.attrs["seed"] = episode.seed
        group.attrs["total_steps"] = episode.num_steps
        if episode.domain_spec is not None:
            group.attrs["domain_spec"] = json.dumps(episode.domain_spec)
        group.create_dataset(
            "observations", data=episode.frames, chunks=(chunk_frames, *frame_shape), **_FILTERS[compression]
        )
        group.create_dataset("actions", data=episode.actions.astype(np.float32))
        group.create_dataset("rewards", data=episode.rewards.astype(np.float64))
        group.create_dataset("terminations", data=episode.terminations.astype(bool))
        group.create_dataset("truncations", data=episode.truncations.astype(bool))
        infos = group.create_group("infos")
        infos.create_dataset("qpos", data=episode.qpos)
        infos.create_dataset("qvel", data=episode.qvel)
    fsync_path(partial)
    os.replace(partial, final)
    return final


def open_shard(path: Path) -> h5py.File:
    """Open a shard read-only, turning HDF5's errors into a one-line ``ValueError`` naming the file."""
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(
            f"{path} is corrupt or not an HDF5 file ({_first_line(err)}); delete it and re-run `rlcyclegan collect` "
            "with the same arguments to collect that episode again"
        ) from None


def episode_group(file: h5py.File, episode_id: int) -> h5py.Group:
    """The episode group of a shard, checked for every dataset the loaders read."""
    name = f"episode_{episode_id}"
    group = file.get(name)
    missing = [key for key in ("observations", "actions", "rewards", "terminations", "truncations", "infos/qpos",
                               "infos/qvel") if group is None or key not in group]
    if missing:
        raise ValueError(f"{file.filename} is corrupt: group {name} lacks {', '.join(missing)}")
    return group


def read_episode(path: Path, episode_id: int) -> Episode:
    """Read a whole episode back from its shard.

    Raises:
        ValueError: if the shard is corrupt or its arrays disagree in length.
    """
    with open_shard(path) as file:
        group = episode_group(file, episode_id)
        try:
            spec = group.attrs.get("domain_spec")
            episode = Episode(
                episode_id=int(group.attrs["id"]),
                seed=int(group.attrs["seed"]),
                frames=group["observations"][()],
                actions=group["actions"][()],
                rewards=group["rewards"][()],
                terminations=group["terminations"][()],
                truncations=group["truncations"][()],
                qpos=group["infos/qpos"][()],
                qvel=group["infos/qvel"][()],
                domain_spec=json.loads(spec) if spec is not None else None,
            )
        except (OSError, KeyError) as err:  # a damaged chunk surfaces only when it is read
            raise ValueError(f"{path} is corrupt: {_first_line(err)}") from None
    try:
        episode.check()
    except ValueError as err:
        raise ValueError(f"{path} is corrupt: {err}") from None
    return episode


def write_metadata(directory: Path, metadata: Mapping[str, Any]) -> None:
    """Write ``metadata.json`` atomically (a reader never sees half of it)."""
    path = directory / METADATA_FILE
    partial = path.with_name(f"{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    partial.write_text(json.dumps(metadata, indent=2, sort_keys=False) + "\n")
    os.replace(partial, path)


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The dataset's metadata, after checking that ``directory`` is a dataset in a format this code reads.

    Raises:
        FileNotFoundError: if the directory or its ``metadata.json`` is missing.
        ValueError: if the metadata is not valid JSON or names another format or a newer version.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {directory}")
    path = directory / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a rollout dataset (no {METADATA_FILE}); create one with "
                                "`rlcyclegan collect --out DIR`")
    try:
        metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is corrupt: {_first_line(err)}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} does not describe an {FORMAT_NAME} dataset")
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{directory} has format version {metadata['format_version']}; this rlcyclegan reads up to "
                         f"{FORMAT_VERSION} (upgrade rlcyclegan)")
    collection = metadata.get("collection")
    missing = [k for k in COLLECTION_KEYS if not isinstance(collection, dict) or k not in collection]
    if missing:
        raise ValueError(f"{path} is corrupt: collection settings lack {', '.join(missing)}")
    return metadata


def dataset_bytes(directory: Path) -> int:
    """Bytes on disk of the metadata and complete shards."""
    files = [directory / METADATA_FILE, *list_shards(directory).values()]
    return sum(p.stat().st_size for p in files if p.exists())


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
