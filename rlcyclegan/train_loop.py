"""The training loop around ``RLCycleGANTrainer.step``: data, logging, checkpoints, resume and DDP.

``train(config)`` is what ``rlcyclegan train`` runs. Under ``torchrun --nproc_per_node N`` the same call
trains with ``DistributedDataParallel`` (gloo on CPU, nccl on CUDA): each process samples its own shard of
each rollout dataset, gradients are averaged before every optimizer step, and only rank 0 writes.

Reproducibility: the batch of iteration ``i`` is drawn with ``np.random.default_rng([seed, rank, i])``, so
batches need no RNG state to checkpoint and can be sampled ahead in a background thread; the image pools'
RNGs and contents, the optimizers and the schedules are checkpointed. A run interrupted and resumed with
``resume=True`` therefore ends with the same weights as an uninterrupted one (on CPU; tested).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import yaml

from rlcyclegan.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from rlcyclegan.config import save_config, to_dict
from rlcyclegan.cpu_cores import OtherProcessesLoad, process_cores, threads_for
from rlcyclegan.data.batches import TransitionBatch
from rlcyclegan.device import resolve_device
from rlcyclegan.networks import translator_metadata
from rlcyclegan.seeding import seed_everything
from rlcyclegan.train_config import DataConfig, TrainConfig, architecture
from rlcyclegan.trainer import BatchSource, NonFiniteLossError, RLCycleGANTrainer, ShardableSource


@dataclasses.dataclass(frozen=True)
class ProcessGroup:
    """This process's place in a (possibly single-process) run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process_group(device_name: str) -> ProcessGroup:
    """Join the process group that ``torchrun`` describes in RANK/WORLD_SIZE/LOCAL_RANK, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return ProcessGroup()
    group = ProcessGroup(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not torch.distributed.is_initialized():
        backend = "nccl" if resolve_device(device_name).type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return group


def build_sources(data: DataConfig) -> tuple[BatchSource, BatchSource]:
    """The sim (X) and real (Y) sources a data config names, checked against ``data.image_size``.

    Raises:
        ValueError: when a rollout dataset's frames are not ``data.image_size`` pixels.
    """
    from rlcyclegan.data.loaders import ImageFolderDataset, PairedSource, RolloutDataset

    if data.format == "image_folder":
        assert data.root is not None
        return (ImageFolderDataset(data.root, "train", "A", data.image_size),
                ImageFolderDataset(data.root, "train", "B", data.image_size))
    assert data.sim is not None and data.real is not None
    sources = RolloutDataset(data.sim, data.frame_stack), RolloutDataset(data.real, data.frame_stack)
    for key, source in zip(("sim", "real"), sources, strict=True):
        if source.image_size != data.image_size:
            raise ValueError(f"data.{key} ({source.path}) has {source.image_size}x{source.image_size} frames but "
                             f"data.image_size is {data.image_size}; set data.image_size={source.image_size} "
                             f"or collect at --image-size {data.image_size}")
    if data.paired_real is not None:
        segmentation = (RolloutDataset(data.paired_real_segmentation, data.frame_stack)
                        if data.paired_real_segmentation is not None else None)
        return sources[0], PairedSource(sources[1], RolloutDataset(data.paired_real, data.frame_stack), segmentation)
    return sources


def batch_rng(seed: int, rank: int, iteration: int) -> np.random.Generator:
    """The random source of one iteration's batches: a pure function of (seed, rank, iteration)."""
    return np.random.default_rng([seed, rank, iteration])


class Prefetcher:
    """Samples the batches of iterations ``start .. stop-1`` ahead, in a background thread.

    Sampling (fancy indexing, HDF5 reads) releases the GIL for most of its time, so it overlaps the training
    step. ``depth=0`` samples on the calling thread instead. Errors in the thread re-raise on ``next``.
    """

    def __init__(self, sim: BatchSource, real: BatchSource, batch_size: int, seed: int, rank: int, start: int,
                 stop: int, depth: int, pin_memory: bool, extra_frames: int = 0) -> None:
        self.sim, self.real, self.batch_size, self.extra_frames = sim, real, batch_size, extra_frames
        self.seed, self.rank = seed, rank
        self.pin_memory = pin_memory
        self.iterations = range(start, stop)
        self.depth = depth
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if depth > 0:
            self._thread = threading.Thread(target=self._fill, name="prefetch", daemon=True)
            self._thread.start()

    def sample(self, iteration: int) -> tuple[TransitionBatch, TransitionBatch]:
        rng = batch_rng(self.seed, self.rank, iteration)
        sim, real = self.sim.sample(self.batch_size, rng), self.real.sample(self.batch_size, rng)
        if self.extra_frames:
            sim, real = (batch._replace(extra_frames=source.sample(self.extra_frames, rng).obs[:, -3:].contiguous())
                         for batch, source in ((sim, self.sim), (real, self.real)))
        if self.pin_memory:
            sim, real = (TransitionBatch(*(t.pin_memory() if t is not None else None for t in b)) for b in (sim, real))
        return sim, real

    def _fill(self) -> None:
        try:
            for iteration in self.iterations:
                item = self.sample(iteration)
                while not self._stop.is_set():
                    with contextlib.suppress(queue.Full):
                        self._queue.put(item, timeout=0.1)
                        break
                if self._stop.is_set():
                    return
        except BaseException as err:  # handed to the training thread, which re-raises it
            self._queue.put(err)

    def __iter__(self) -> Iterator[tuple[TransitionBatch, TransitionBatch]]:
        for iteration in self.iterations:
            if self._thread is None:
                yield self.sample(iteration)
                continue
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def choose_threads(config: TrainConfig, candidates: tuple[int, ...], rounds: int = 3) -> int:
    """The thread count, among ``candidates``, with the fastest generator forward+backward on two frames.

    OpenMP worker threads spin at every barrier; when another job holds one of the cores, a spinning thread
    waits for a descheduled peer and a multi-threaded step can take several times longer than a
    single-threaded one. Rounds alternate between the candidates so a passing burst of load hits all of them.
    """
    from rlcyclegan.networks import ResnetGenerator

    if len(set(candidates)) == 1:
        return candidates[0]
    with torch.random.fork_rng():  # leaves the seeded RNG untouched
        spec = config.model.generator_spec()
        generator = ResnetGenerator(spec.in_channels, spec.out_channels, spec.ngf, spec.n_blocks)
        frames = torch.zeros(2, 3, config.data.image_size, config.data.image_size)
        best = dict.fromkeys(candidates, float("inf"))
        for _ in range(rounds):
            for count in candidates:
                torch.set_num_threads(count)
                start = time.perf_counter()
                generator(frames).mean().backward()
                best[count] = min(best[count], time.perf_counter() - start)
    return min(best, key=best.__getitem__)


def default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.exp_name}__{config.seed}__{int(time.time())}"


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train RL-CycleGAN (or CycleGAN) as ``config`` says; returns the run directory.

    Args:
        config: the run's configuration; ``config.run_dir`` must be set to resume.
        resume: continue from ``run_dir/checkpoints/latest`` instead of starting afresh.
        progress: show a progress bar (rank 0 only).

    Raises:
        ValueError: for bad data or config (one line), a checkpoint of another architecture, or when a loss
            turns NaN/inf (``NonFiniteLossError``; the last good checkpoint stays on disk).
    """
    group = init_process_group(config.speed.device)
    threads = torch.get_num_threads()
    try:
        if not config.speed.threads and resolve_device(config.speed.device).type == "cpu":
            chosen = choose_threads(config, candidates=(1, threads))
            config = dataclasses.replace(config, speed=dataclasses.replace(config.speed, threads=chosen))
        if config.speed.threads:
            torch.set_num_threads(config.speed.threads)
        return _train(config, resume, progress, group)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it
        if group.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _train(config: TrainConfig, resume: bool, progress: bool, group: ProcessGroup) -> Path:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from rlcyclegan.data.loaders import UnpairedDataset

    device = resolve_device(config.speed.device)
    if device.type == "cuda" and group.distributed:
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    seed_everything(config.seed, config.speed.deterministic)

    # Data: both domains, checked against each other and the config, each process on its own shard.
    sim, real = build_sources(config.data)
    UnpairedDataset(sim, real)  # raises on mismatched sizes, frame stacks or identical domains
    if group.distributed:
        sim, real = (s.shard(group.rank, group.world_size) if isinstance(s, ShardableSource) else s for s in (sim, real))
    probe_sim, probe_real = sim.sample(1, np.random.default_rng(0)), real.sample(1, np.random.default_rng(0))
    action_dim = probe_sim.action.shape[1] if probe_sim.action is not None else None
    if probe_real.action is not None and probe_real.action.shape[1] != action_dim:
        raise ValueError(f"sim actions have {action_dim} dimensions but real actions {probe_real.action.shape[1]}")
    if config.loss.resolved().uses_q and not (sim.has_transitions and real.has_transitions):
        action_dim = None  # the trainer explains why RL terms need transitions
    trainer = RLCycleGANTrainer(config, sim.image_size, sim.frame_stack, action_dim, device, group.distributed)

    # Run directory (rank 0 names it) and the state to resume from.
    run_dir = config.run_dir or default_run_dir(config)
    if group.distributed:
        names = [str(run_dir)]
        torch.distributed.broadcast_object_list(names, src=0)
        run_dir = Path(names[0])
    config = dataclasses.replace(config, run_dir=run_dir)
    arch = architecture(config) | {"action_dim": action_dim}
    start = 0
    latest = latest_checkpoint(run_dir)
    if resume:
        if latest is None:
            raise FileNotFoundError(f"nothing to resume: {run_dir} has no checkpoints/latest")
        start, state = load_checkpoint(latest, trainer.networks(), arch)
        trainer.load_training_state(state)
        pools = state["pools"]
        if group.rank < len(pools):
            trainer.load_pool_state(pools[group.rank])
    elif latest is not None:
        raise ValueError(f"{run_dir} already holds checkpoints; pass --resume to continue that run or pick another run_dir")

    writer = None
    if group.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        writer = SummaryWriter(str(run_dir / "tb"))
        hparams = yaml.safe_dump(to_dict(config), sort_keys=False)
        writer.add_text("hyperparameters", "```yaml\n" + hparams + "```", start)

    frames_per_iteration = 2 * config.data.batch_size * sim.frame_stack * group.world_size
    translator = translator_metadata(config.model.generator_spec(), sim.image_size, sim.frame_stack,
                                     averaged=config.optim.ema_decay > 0)

    def checkpoint(iteration: int) -> Path | None:
        pools = [trainer.pool_state()]
        if group.distributed:
            pools = [None] * group.world_size
            torch.distributed.all_gather_object(pools, trainer.pool_state())
        path = None
        if group.is_main:
            info = {"architecture": arch, "config": to_dict(config)}
            state = trainer.training_state() | {"pools": pools}
            path = save_checkpoint(run_dir, iteration, trainer.networks(), state, translator, info,
                                   config.keep_checkpoints)
        if group.distributed:
            torch.distributed.barrier()
        return path

    batches = Prefetcher(sim, real, config.data.batch_size, config.seed, group.rank, start, config.iterations,
                         config.data.prefetch, pin_memory=device.type == "cuda", extra_frames=config.data.extra_frames)
    bar = tqdm(total=config.iterations, initial=start, unit="it", dynamic_ncols=True,
               disable=not (progress and group.is_main))
    last_saved = latest
    tick, tick_iteration = time.perf_counter(), start
    load = OtherProcessesLoad() if config.speed.rechoose_threads_every and device.type == "cpu" else None
    try:
        for iteration, (sim_batch, real_batch) in enumerate(batches, start=start):
            done = iteration + 1
            try:
                metrics = trainer.step(sim_batch, real_batch)
            except NonFiniteLossError as err:
                raise NonFiniteLossError(
                    f"training stopped at iteration {done}: {err}; the last good checkpoint is "
                    f"{last_saved or 'none (none was written yet)'} (lower optim.lr or a loss weight, then resume)"
                ) from None
            bar.update(1)
            if writer is not None and (done % config.log_every == 0 or done == config.iterations):
                now = time.perf_counter()
                seconds = (now - tick) / (done - tick_iteration)  # per iteration since the last log
                tick, tick_iteration = now, done
                metrics["charts/iterations_per_s"] = 1.0 / seconds
                metrics["charts/images_per_s"] = frames_per_iteration / seconds
                metrics["charts/threads"] = torch.get_num_threads()
                for tag, value in metrics.items():
                    writer.add_scalar(tag, value, done)
                bar.set_postfix({k.split("/")[1]: f"{metrics[k]:.3g}" for k in
                                 ("losses/generators", "losses/D_real", "losses/cycle_forward") if k in metrics})
            if writer is not None and config.image_every and done % config.image_every == 0:
                writer.add_image("charts/translations", trainer.translation_grid(sim_batch.obs, real_batch.obs), done)
            if done % config.checkpoint_every == 0 or done == config.iterations:
                last_saved = checkpoint(done)
            if load is not None and done % config.speed.rechoose_threads_every == 0 and done < config.iterations:
                others_busy = load.cores_busy()
                if others_busy is not None:
                    torch.set_num_threads(threads_for(process_cores(), others_busy))
        if group.distributed:
            check_replicas_in_sync(trainer)
    finally:
        batches.close()
        bar.close()
        if writer is not None:
            writer.close()
    return run_dir


def check_replicas_in_sync(trainer: RLCycleGANTrainer) -> None:
    """Raise ``RuntimeError`` if the processes' networks differ (DDP must keep them identical)."""
    sums = torch.stack([torch.stack([p.detach().double().sum() for p in net.parameters()]).sum()
                        for net in trainer.networks().values()])
    low, high = sums.clone(), sums.clone()
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    if not torch.equal(low, high):
        names = [n for n, lo, hi in zip(trainer.networks(), low, high, strict=True) if lo != hi]
        raise RuntimeError(f"DDP replicas diverged in {', '.join(names)}")
