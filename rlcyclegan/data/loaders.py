"""Loaders for training and evaluation: rollout transitions, plain image folders, and unpaired pairs of them.

- ``RolloutDataset``: transitions with frame stacks for Q-learning, frames for the translator, and the
  hidden true states for evaluation, from a dataset written by ``rlcyclegan collect``.
- ``ImageFolderDataset``: single frames from CycleGAN-style ``trainA/ trainB/ testA/ testB/`` folders.
- ``UnpairedDataset``: a sim source and a real source sampled independently, as RL-CycleGAN trains.

Frame stacks are built at load time from one stored frame per step: the stack at step ``t`` holds frames
``t-k+1 .. t`` of the same episode, and at an episode's start repeats its first frame, as the env does after
a reset, so no frame of one episode ever enters a stack of another. Sampling is vectorized numpy fancy
indexing over an in-memory copy of all frames when they fit (decompressed, under a quarter of RAM), and
otherwise reads only the needed frames from the HDF5 shards per batch.
"""

from __future__ import annotations

import collections
import copy
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from rlcyclegan.data.batches import TransitionBatch
from rlcyclegan.data.paired import SEGMENTATION_CONTENT
from rlcyclegan.data.storage import episode_group, list_shards, open_shard, read_metadata

CACHE_RAM_FRACTION = 0.25
"""Frames are cached in memory when their decompressed size is below this fraction of physical RAM."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class EpisodeData(NamedTuple):
    """One stored episode, for evaluation (Monte Carlo returns, paired rendering of the true states)."""

    episode_id: int
    frames: np.ndarray  # (T+1, H, W, 3) uint8
    actions: np.ndarray  # (T, A) float32
    rewards: np.ndarray  # (T,) float64
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    qpos: np.ndarray  # (T+1, nq) float64
    qvel: np.ndarray  # (T+1, nv) float64


class FrameSource(Protocol):
    """What ``UnpairedDataset`` and the trainer need from any source of frames."""

    image_size: int
    frame_stack: int
    domain_name: str
    has_transitions: bool

    @property
    def domain_key(self) -> str: ...

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch: ...


class _Index(NamedTuple):
    """Where each transition's data lives in the flat per-step and per-frame arrays."""

    step: np.ndarray  # (N,) int64, row in actions/rewards/terminations
    frame: np.ndarray  # (N,) int64, row in frames/qpos/qvel of the observation's newest frame
    first: np.ndarray  # (N,) int64, row of the first frame of the transition's episode
    has_next: np.ndarray  # (N,) bool, whether step t+1 exists (it has a behaviour action)


class RolloutDataset(Dataset):
    """Transitions ``(x_t, a_t, r_t, x_{t+1}, a_{t+1}, terminated_t)`` of a collected dataset.

    A transition exists for every step whose successor either has an action (so SARSA-style targets have
    ``a_{t+1}``) or is not needed (the episode terminated there). The last step of a truncated episode
    has neither and is never sampled; its final frame still serves as the previous step's ``x_{t+1}``.
    Indices ``0 .. len-1`` address transitions in episode order.

    Args:
        path: dataset directory written by ``rlcyclegan collect``.
        frame_stack: frames per observation ``k``; observations are ``(3k, H, W)`` uint8, oldest first.
        cache: keep all frames in memory (``True``), stream them from disk per batch (``False``), or
            decide by size (``None``: cache below a quarter of physical RAM).

    Raises:
        FileNotFoundError: if ``path`` is not a dataset.
        ValueError: if it is corrupt, empty, or its frames disagree with its metadata.
    """

    has_transitions = True

    def __init__(self, path: str | Path, frame_stack: int = 3, cache: bool | None = None) -> None:
        if frame_stack < 1:
            raise ValueError(f"frame_stack must be at least 1, got {frame_stack}")
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        collection = self.metadata["collection"]
        self.image_size: int = collection["image_size"]
        self.frame_stack = frame_stack
        self.domain_spec: dict[str, Any] = collection["domain"]
        self.domain_name: str = self.domain_spec["name"]
        shards = list_shards(self.path)
        if not shards:
            raise ValueError(f"{self.path} holds no complete episodes; run `rlcyclegan collect --out {self.path}` "
                             "with its original arguments to collect them")
        self._episode_ids = np.fromiter(shards, dtype=np.int64)
        self._read_arrays(list(shards.values()))
        frame_bytes = 3 * self.image_size**2
        self.cached = _fits_in_memory(self.num_frames * frame_bytes) if cache is None else cache
        self._frames: _InMemoryFrames | _StreamingFrames = (
            _InMemoryFrames.load(self._shards, self._episode_ids, self._frame_starts, self.image_size)
            if self.cached else _StreamingFrames(self._shards, self._episode_ids, self._frame_starts, self.image_size)
        )
        self._index = self._transition_index()
        if len(self) == 0:
            raise ValueError(f"{self.path} has no usable transitions (every episode is a single truncated step)")

    # -- reading -------------------------------------------------------------------------------------

    def _read_arrays(self, shards: list[Path]) -> None:
        """Read every per-step array (small) and check each shard's frame shape against the metadata."""
        parts: dict[str, list[np.ndarray]] = collections.defaultdict(list)
        lengths = []
        expected = (self.image_size, self.image_size, 3)
        for path, episode_id in zip(shards, self._episode_ids, strict=True):
            with open_shard(path) as file:
                group = episode_group(file, int(episode_id))
                frames = group["observations"]
                steps = len(group["actions"])
                if frames.shape != (steps + 1, *expected) or frames.dtype != np.uint8:
                    raise ValueError(
                        f"{path} holds frames {frames.dtype} {frames.shape}, but the dataset's metadata says "
                        f"uint8 ({steps + 1}, {', '.join(map(str, expected))}); the shard belongs to another dataset"
                    )
                for key in ("actions", "rewards", "terminations", "truncations", "infos/qpos", "infos/qvel"):
                    parts[key].append(_read(group[key], path))
                lengths.append(steps)
        self._shards = shards
        self._actions = np.concatenate(parts["actions"]).astype(np.float32)  # (S, A)
        self._rewards = np.concatenate(parts["rewards"])  # (S,)
        self._terminations = np.concatenate(parts["terminations"]).astype(bool)  # (S,)
        self._truncations = np.concatenate(parts["truncations"]).astype(bool)  # (S,)
        self._qpos = np.concatenate(parts["infos/qpos"])  # (F, nq), F = S + episodes
        self._qvel = np.concatenate(parts["infos/qvel"])  # (F, nv)
        self._lengths = np.asarray(lengths, dtype=np.int64)
        self._step_starts = np.concatenate([[0], np.cumsum(self._lengths)])  # (E+1,)
        self._frame_starts = np.concatenate([[0], np.cumsum(self._lengths + 1)])  # (E+1,)

    def _transition_index(self) -> _Index:
        episode = np.repeat(np.arange(len(self._lengths)), self._lengths)  # (S,)
        t = np.arange(len(episode)) - self._step_starts[episode]
        has_next = t + 1 < self._lengths[episode]
        usable = has_next | self._terminations
        step = np.flatnonzero(usable)
        return _Index(
            step=step,
            frame=self._frame_starts[episode[step]] + t[step],
            first=self._frame_starts[episode[step]],
            has_next=has_next[step],
        )

    # -- sizes ---------------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        return len(self._lengths)

    @property
    def num_transitions(self) -> int:
        return len(self._index.step)

    @property
    def episode_ids(self) -> np.ndarray:
        """Stored episode ids ``(E,)``, ascending (gaps where a collection is still incomplete)."""
        return self._episode_ids

    @property
    def episode_lengths(self) -> np.ndarray:
        """Steps of each episode ``(E,)``."""
        return self._lengths

    @property
    def num_frames(self) -> int:
        return int(self._frame_starts[-1])

    @property
    def domain_key(self) -> str:
        """The domain's look and physics without its name: equal keys mean the same domain."""
        spec = {k: v for k, v in self.domain_spec.items() if k != "name"}
        return json.dumps(spec, sort_keys=True)

    def __len__(self) -> int:
        return self.num_transitions

    # -- sampling ------------------------------------------------------------------------------------

    def sample_indices(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """``batch_size`` transition indices drawn uniformly with replacement."""
        return rng.integers(0, len(self), size=batch_size)

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        """A uniform random batch of transitions."""
        return self.get_batch(self.sample_indices(batch_size, rng))

    def get_batch(self, indices: Sequence[int] | np.ndarray) -> TransitionBatch:
        """The transitions at ``indices``, as channels-first uint8 frame stacks and float32 tensors."""
        rows = np.asarray(indices, dtype=np.int64)
        step, frame, first, has_next = (a[rows] for a in self._index)
        k = self.frame_stack
        window = np.maximum(frame[:, None] + np.arange(-k + 1, 2), first[:, None])  # (B, k+1) frame rows
        frames = self._frames.gather(window)  # (B, k+1, 3, H, W)
        next_step = np.minimum(step + 1, len(self._actions) - 1)
        next_action = np.where(has_next[:, None], self._actions[next_step], 0.0).astype(np.float32)
        return TransitionBatch(
            obs=_stack(frames[:, :-1]),
            action=torch.from_numpy(self._actions[step]),
            reward=torch.from_numpy(self._rewards[step].astype(np.float32)),
            next_obs=_stack(frames[:, 1:]),
            next_action=torch.from_numpy(next_action),
            terminated=torch.from_numpy(self._terminations[step].astype(np.float32)),
        )

    def __getitem__(self, index: int) -> TransitionBatch:
        """One transition without a batch axis (``obs`` is ``(3k, H, W)``); use ``DataLoader(...,
        collate_fn=collate_transitions)``, which keeps the empty fields empty."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"transition {index} out of range for {len(self)} transitions")
        batch = self.get_batch([index % len(self)])
        return TransitionBatch(*(None if field is None else field[0] for field in batch))

    def shard(self, rank: int, world_size: int) -> RolloutDataset:
        """A view holding every ``world_size``-th transition from ``rank`` on (one DDP process's share)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        if world_size > len(self):
            raise ValueError(f"cannot split {len(self)} transitions across {world_size} processes")
        view = copy.copy(self)
        view._index = _Index(*(a[rank::world_size] for a in self._index))
        return view

    # -- evaluation only -----------------------------------------------------------------------------

    def true_states(self, indices: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(qpos, qvel)`` at which each transition's newest observation frame was rendered.

        For evaluation only (paired rendering, probes): a learner that reads these cheats.
        """
        frame = self._index.frame[np.asarray(indices, dtype=np.int64)]
        return self._qpos[frame], self._qvel[frame]

    def episodes(self) -> Iterator[EpisodeData]:
        """Every stored episode in id order (of the whole dataset, also for a ``shard`` view)."""
        for e, episode_id in enumerate(self._episode_ids):
            steps = slice(self._step_starts[e], self._step_starts[e + 1])
            frames = slice(self._frame_starts[e], self._frame_starts[e + 1])
            yield EpisodeData(
                int(episode_id), self._frames.episode(e), self._actions[steps], self._rewards[steps],
                self._terminations[steps], self._truncations[steps], self._qpos[frames], self._qvel[frames],
            )

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each stored episode ``(E,)`` (of the whole dataset, also for a view)."""
        return np.add.reduceat(self._rewards, self._step_starts[:-1])

    def __repr__(self) -> str:
        return (f"RolloutDataset({str(self.path)!r}, domain={self.domain_name!r}, episodes={self.num_episodes}, "
                f"transitions={len(self)}, image_size={self.image_size}, frame_stack={self.frame_stack}, "
                f"cached={self.cached})")


def _stack(frames: np.ndarray) -> torch.Tensor:
    """``(B, k, 3, H, W)`` frames -> ``(B, 3k, H, W)`` uint8 tensor, oldest frame first."""
    b, k, c, h, w = frames.shape
    return torch.from_numpy(np.ascontiguousarray(frames).reshape(b, k * c, h, w))  # (B, 3k, H, W)


def _read(dataset: h5py.Dataset, path: Path) -> np.ndarray:
    try:
        return dataset[()]
    except OSError as err:  # damaged chunks only show when read
        raise ValueError(f"{path} is corrupt: cannot read {dataset.name} ({str(err).splitlines()[0]})") from None


def _fits_in_memory(nbytes: int) -> bool:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return nbytes < CACHE_RAM_FRACTION * ram


class _InMemoryFrames:
    """All frames of a dataset in one channels-first array, so a stack gathers without a transpose."""

    def __init__(self, frames: np.ndarray, frame_starts: np.ndarray) -> None:
        self.frames = frames  # (F, 3, H, W) uint8
        self.frame_starts = frame_starts

    @classmethod
    def load(cls, shards: list[Path], episode_ids: np.ndarray, frame_starts: np.ndarray,
             image_size: int) -> _InMemoryFrames:
        frames = np.empty((frame_starts[-1], 3, image_size, image_size), dtype=np.uint8)
        for e, (path, episode_id) in enumerate(zip(shards, episode_ids, strict=True)):
            with open_shard(path) as file:
                episode = _read(episode_group(file, int(episode_id))["observations"], path)  # (T+1, H, W, 3)
            frames[frame_starts[e]: frame_starts[e + 1]] = episode.transpose(0, 3, 1, 2)  # (T+1, 3, H, W)
        return cls(frames, frame_starts)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        return self.frames[rows]

    def episode(self, e: int) -> np.ndarray:
        frames = self.frames[self.frame_starts[e]: self.frame_starts[e + 1]]
        return np.ascontiguousarray(frames.transpose(0, 2, 3, 1))  # (T+1, H, W, 3)


class _StreamingFrames:
    """Reads the frames of each batch from the shards; for datasets larger than memory.

    Consecutive frames of one episode are read as one slice (a frame stack and its successor are one
    run of ``k + 1`` frames). HDF5 handles are opened lazily and per process, so a ``DataLoader`` worker
    never uses a handle inherited through ``fork``, and at most ``max_open`` stay open.
    """

    def __init__(self, shards: list[Path], episode_ids: np.ndarray, frame_starts: np.ndarray, image_size: int,
                 max_open: int = 64) -> None:
        self.shards = shards
        self.episode_ids = episode_ids
        self.frame_starts = frame_starts
        self.frame_shape = (image_size, image_size, 3)
        self.max_open = max_open
        self._datasets: collections.OrderedDict[int, h5py.Dataset] = collections.OrderedDict()  # open, LRU order
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_datasets"] = collections.OrderedDict()  # HDF5 handles do not cross processes
        return state

    def _observations(self, e: int) -> h5py.Dataset:
        if self._pid != os.getpid():
            self._datasets, self._pid = collections.OrderedDict(), os.getpid()
        if e in self._datasets:
            self._datasets.move_to_end(e)
        else:
            if len(self._datasets) >= self.max_open:
                self._datasets.popitem(last=False)[1].file.close()
            file = open_shard(self.shards[e])
            self._datasets[e] = episode_group(file, int(self.episode_ids[e]))["observations"]
        return self._datasets[e]

    def gather(self, rows: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(rows.ravel(), return_inverse=True)
        episode = np.searchsorted(self.frame_starts, unique, side="right") - 1
        local = unique - self.frame_starts[episode]
        out = np.empty((len(unique), *self.frame_shape), dtype=np.uint8)  # (U, H, W, 3)
        breaks = np.flatnonzero((np.diff(unique) != 1) | (np.diff(episode) != 0)) + 1
        for lo, hi in zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(unique)]]), strict=True):
            e = int(episode[lo])
            try:
                self._observations(e).read_direct(out, np.s_[local[lo]: local[hi - 1] + 1], np.s_[lo:hi])
            except OSError as err:
                raise ValueError(f"{self.shards[e]} is corrupt: {str(err).splitlines()[0]}") from None
        frames = out[inverse].transpose(0, 3, 1, 2)  # (U', 3, H, W)
        return frames.reshape(*rows.shape, 3, *self.frame_shape[:2])

    def episode(self, e: int) -> np.ndarray:
        return _read(self._observations(e), self.shards[e])


class ImageFolderDataset(Dataset):
    """Single frames from a CycleGAN-style folder (``{root}/{split}{domain}/*.png``), for translator-only runs.

    Images of any size are resized (shorter side to ``image_size``, bicubic) and center-cropped, then
    kept in memory as uint8. There are no transitions: ``sample`` fills only ``obs`` ``(B, 3, H, W)``.

    Raises:
        FileNotFoundError: if the folder is missing.
        ValueError: if it holds no images or an unreadable one.
    """

    has_transitions = False
    frame_stack = 1

    def __init__(self, root: str | Path, split: str = "train", domain: str = "A", image_size: int = 64) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if domain not in ("A", "B"):
            raise ValueError(f"domain must be 'A' or 'B', got {domain!r}")
        self.folder = Path(root) / f"{split}{domain}"
        if not self.folder.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.folder} (expected {root}/trainA, trainB, ...)")
        files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{self.folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        self.image_size = image_size
        self.domain_name = f"{Path(root).name}/{split}{domain}"
        self._images = np.stack([_load_image(p, image_size) for p in files])  # (N, 3, H, W)

    @property
    def domain_key(self) -> str:
        return str(self.folder.resolve())

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> TransitionBatch:
        return TransitionBatch(obs=torch.from_numpy(self._images[index]))

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        return TransitionBatch(obs=torch.from_numpy(self._images[rng.integers(0, len(self), size=batch_size)]))


def _load_image(path: Path, size: int) -> np.ndarray:
    """An image file as ``(3, size, size)`` uint8: shorter side resized to ``size``, then center-cropped."""
    from PIL import Image, UnidentifiedImageError  # PIL comes with imageio

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except (OSError, UnidentifiedImageError) as err:
        raise ValueError(f"{path} is not a readable image ({err})") from None
    scale = size / min(image.size)
    width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    left, top = (width - size) // 2, (height - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)))  # (H, W, 3)
    return pixels.transpose(2, 0, 1).copy()  # (3, H, W)


class PairedSource:
    """Real transitions together with the same states rendered in another look: the paired oracle's data.

    ``paired`` (and ``segmentation``, the same states' class maps) must be ``real`` re-rendered
    (``rlcyclegan.data.paired``): the same collection settings (seed, policy, noise), episodes and lengths,
    so one index names the same state in all of them.
    """

    def __init__(self, real: RolloutDataset, paired: RolloutDataset, segmentation: RolloutDataset | None = None) -> None:
        def settings(d: RolloutDataset) -> dict[str, Any]:
            return {k: v for k, v in d.metadata["collection"].items() if k != "domain"}

        for other in [d for d in (paired, segmentation) if d is not None]:
            same = (settings(real) == settings(other) and np.array_equal(real.episode_ids, other.episode_ids)
                    and np.array_equal(real.episode_lengths, other.episode_lengths))
            if not same:
                raise ValueError(f"{other.path} is not {real.path} re-rendered: collection settings, episodes or "
                                 "lengths differ")
        if paired.metadata.get("content") == SEGMENTATION_CONTENT:
            raise ValueError(f"{paired.path} holds class maps, not pictures; pass it as the segmentation")
        if segmentation is not None and segmentation.metadata.get("content") != SEGMENTATION_CONTENT:
            raise ValueError(f"{segmentation.path} holds pictures, not class maps; write it with "
                             "rerender_dataset(..., segmentation=True)")
        self.real, self.paired, self.segmentation = real, paired, segmentation
        self.image_size, self.frame_stack = real.image_size, real.frame_stack
        self.domain_name, self.has_transitions = real.domain_name, real.has_transitions

    @property
    def domain_key(self) -> str:
        return self.real.domain_key

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        indices = self.real.sample_indices(batch_size, rng)
        batch = self.real.get_batch(indices)._replace(paired_obs=self.paired.get_batch(indices).obs)
        if self.segmentation is None:
            return batch
        labels = self.segmentation.get_batch(indices).obs[:, ::3]  # (B, k, H, W): the class in every channel
        return batch._replace(paired_labels=labels.contiguous())

    def shard(self, rank: int, world_size: int) -> PairedSource:
        view = copy.copy(self)
        view.real, view.paired = self.real.shard(rank, world_size), self.paired.shard(rank, world_size)
        if self.segmentation is not None:
            view.segmentation = self.segmentation.shard(rank, world_size)
        return view


class UnpairedDataset(IterableDataset):
    """Batches from a sim and a real source, drawn independently: nothing pairs a sim frame with a real one.

    As an ``IterableDataset`` it yields ``(sim_batch, real_batch)`` forever; use it with
    ``DataLoader(dataset, batch_size=None)``. Each ``DataLoader`` worker draws from its own streams,
    seeded by ``(seed, worker id)``, and within a stream sim and real indices come from separate generators.

    Raises:
        ValueError: if the sources differ in image size or frame stack, or come from the same domain.
    """

    def __init__(self, sim: FrameSource, real: FrameSource, batch_size: int = 64, seed: int = 0) -> None:
        if sim.image_size != real.image_size:
            raise ValueError(f"sim data ({sim.domain_name}) has {sim.image_size}x{sim.image_size} frames but real data "
                             f"({real.domain_name}) has {real.image_size}x{real.image_size}; collect both at one size")
        if sim.frame_stack != real.frame_stack:
            raise ValueError(f"sim data stacks {sim.frame_stack} frames but real data {real.frame_stack}; "
                             "load both with the same frame_stack")
        if sim.domain_key == real.domain_key:
            raise ValueError(f"sim and real data both come from domain {sim.domain_name!r}; RL-CycleGAN needs "
                             "datasets of two different domains")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.sim, self.real = sim, real
        self.batch_size = batch_size
        self.seed = seed
        self.image_size = sim.image_size
        self.frame_stack = sim.frame_stack

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[TransitionBatch, TransitionBatch]:
        """One sim batch and one real batch; consecutive draws from ``rng`` are independent."""
        return self.sim.sample(batch_size, rng), self.real.sample(batch_size, rng)

    def __iter__(self) -> Iterator[tuple[TransitionBatch, TransitionBatch]]:
        worker = get_worker_info()
        streams = np.random.SeedSequence([self.seed, worker.id if worker else 0]).spawn(2)
        sim_rng, real_rng = (np.random.default_rng(s) for s in streams)
        while True:
            yield self.sim.sample(self.batch_size, sim_rng), self.real.sample(self.batch_size, real_rng)


def check_image_size(dataset: FrameSource, expected: int, what: str = "the model") -> None:
    """Raise a one-line ``ValueError`` unless ``dataset`` has ``expected``-pixel frames."""
    if dataset.image_size != expected:
        raise ValueError(f"{dataset.domain_name} data has {dataset.image_size}x{dataset.image_size} frames but "
                         f"{what} expects {expected}x{expected}; collect at --image-size {expected}")


def collate_transitions(items: list[TransitionBatch]) -> TransitionBatch:
    """Stack ``__getitem__`` results into a batch, keeping ``None`` fields ``None`` (for ``DataLoader``)."""
    return TransitionBatch(*(None if parts[0] is None else torch.stack(parts) for parts in zip(*items, strict=True)))
