"""Roll out a behaviour policy in one domain and write the episodes as a dataset (``rlcyclegan collect``).

Reproducible and resumable by construction: episode ``i`` (of ``0 .. N-1``) always resets the env with
seed ``seed + i`` and draws random actions and action noise from a generator seeded with ``(seed, i)``.
An episode's data therefore depends on nothing but its id, not on which worker ran it or whether the run
was interrupted, and a re-run collects exactly the ids that have no shard yet.

Workers are processes started with ``spawn`` (an EGL context does not survive ``fork``), one env and one
renderer each, each writing its own episode shards. A Python callable as behaviour policy runs in-process
when ``workers == 1``; with more workers it must be picklable (a module-level function or an instance of
a module-level class), because spawned workers receive it by pickling. For the same reason a script that
calls ``collect`` with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import multiprocessing as mp
import pickle
import queue
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

import rlcyclegan
from rlcyclegan.config import ConfigError, to_dict
from rlcyclegan.data.storage import (
    FORMAT_NAME,
    FORMAT_VERSION,
    Compression,
    Episode,
    list_shards,
    read_metadata,
    remove_partial_files,
    write_episode,
    write_metadata,
)

PolicyFn = Callable[[np.ndarray], np.ndarray]
"""A behaviour policy as a plain callable: uint8 observation ``(H, W, 3k)`` -> action ``(A,)``."""
StartEpisode = Callable[[np.random.Generator], Callable[[np.ndarray], np.ndarray]]
"""A behaviour policy with its noise: given an episode's generator, that episode's ``obs -> action``."""

PROGRESS_EVERY = 50
"""Steps between progress reports from a worker (a queue message each)."""


@dataclass(frozen=True)
class CollectConfig:
    """What to collect and where. Every field but ``episodes``, ``workers`` and ``compression`` must match
    when a collection resumes into an existing dataset, so that resumed data equals uninterrupted data."""

    out: Path = Path("data/rollouts")
    """Dataset directory; created if missing, resumed if it already holds a dataset."""
    domain: str = "sim"
    """A shipped domain name (sim, real, randomized) or a domain spec file."""
    policy: str = "random"
    """``random`` (uniform actions), the path of a saved pixel policy, or the path of a state teacher (an SB3
    zip over the 17-dim HalfCheetah state). A teacher is a privileged behaviour policy: it reads the env's
    true state, as a scripted or hand-tuned controller would in a real deployment. Only the actions and
    frames it produces reach the dataset."""
    episodes: int = 10
    """Total episodes the dataset should hold (ids 0 .. episodes-1)."""
    noise: float = 0.0
    """Standard deviation of Gaussian noise added to each action before clipping to the action bounds."""
    noise_max: float | None = None
    """If set, each episode draws its noise std uniformly from [noise, noise_max]: behaviour of mixed quality,
    whose returns spread widely (what a Q-network needs to learn to rank states and actions)."""
    seed: int = 0
    workers: int = 2
    """Worker processes, one renderer each."""
    image_size: int = 64
    frame_stack: int | None = None
    """Frames per observation given to the policy; ``None``: a saved policy's own, else 3."""
    max_steps: int = 1000
    """Steps after which an episode is truncated."""
    compression: Compression = "gzip"

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"episodes must be at least 1, got {self.episodes}")
        if self.noise < 0:
            raise ConfigError(f"noise must be >= 0, got {self.noise}")
        if self.noise_max is not None and self.noise_max < self.noise:
            raise ConfigError(f"noise_max ({self.noise_max}) must be at least noise ({self.noise})")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.image_size < 8:
            raise ConfigError(f"image_size must be at least 8 pixels, got {self.image_size}")
        if self.frame_stack is not None and self.frame_stack < 1:
            raise ConfigError(f"frame_stack must be at least 1, got {self.frame_stack}")
        if self.max_steps < 1:
            raise ConfigError(f"max_steps must be at least 1, got {self.max_steps}")
        if self.compression not in ("gzip", "lzf", "none"):
            raise ConfigError(f"compression must be gzip, lzf or none, got {self.compression!r}")


class CollectResult(NamedTuple):
    path: Path
    collected: int
    """Episodes written by this run."""
    total: int
    """Complete episodes in the dataset now."""
    transitions: int
    """Transitions written by this run."""
    seconds: float


def episode_rng(seed: int, episode_id: int) -> np.random.Generator:
    """The generator for episode ``episode_id``'s random actions and noise, independent of the worker."""
    return np.random.default_rng([seed, episode_id])


def collect(
    config: CollectConfig, policy: PolicyFn | None = None, progress: bool = True
) -> CollectResult:
    """Collect the episodes of ``config.out`` that are not there yet.

    Args:
        config: what to collect.
        policy: a Python callable ``obs -> action`` used instead of ``config.policy``; it must be
            picklable when ``config.workers > 1``.
        progress: show a progress bar with transitions/s.

    Returns:
        What this run wrote.

    Raises:
        ConfigError: for settings that contradict the dataset already in ``config.out``, or a callable
            that cannot be sent to worker processes.
        ValueError: if another collection is writing into ``config.out``.
    """
    frame_stack = _resolve_frame_stack(config, policy)
    metadata = _metadata(config, policy, frame_stack)  # checks the domain before anything is created
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out):
        _prepare(out, metadata)
        done = list_shards(out)
        missing = [i for i in range(config.episodes) if i not in done]
        start = time.perf_counter()
        transitions = 0
        if missing:
            runner = _collect_in_process if config.workers == 1 or len(missing) == 1 else _collect_in_workers
            with _Progress(f"collect {out.name}", len(missing), config.max_steps, enabled=progress) as bar:
                transitions = runner(config, frame_stack, policy, missing, bar)
        return CollectResult(out, len(missing), len(list_shards(out)), transitions, time.perf_counter() - start)


class _Progress:
    """A tqdm bar counting transitions (so its rate reads transitions/s) and finished episodes."""

    def __init__(self, name: str, episodes: int, max_steps: int, enabled: bool) -> None:
        self._bar = tqdm(total=episodes * max_steps, unit="transition", unit_scale=True, desc=name,
                         disable=not enabled, smoothing=0.1)
        self._episodes = episodes
        self._max_steps = max_steps
        self._done = 0
        self.transitions = 0

    def steps(self, count: int) -> None:
        self._bar.update(count)

    def episode(self, episode_id: int, steps: int) -> None:
        self._done += 1
        self.transitions += steps
        self._bar.total -= self._max_steps - steps  # episodes that end early shrink the bar
        self._bar.set_postfix_str(f"{self._done}/{self._episodes} episodes", refresh=False)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()


@contextlib.contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Hold an advisory lock on the dataset; the kernel drops it when the process dies, even by SIGKILL."""
    with open(out / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"another `rlcyclegan collect` is writing to {out}; wait for it to finish") from None
        yield


def _resolve_frame_stack(config: CollectConfig, policy: PolicyFn | None) -> int:
    """The frame stack the behaviour policy sees; a saved policy's observation space fixes it and the image size."""
    if policy is not None or config.policy == "random":
        return config.frame_stack or 3
    from rlcyclegan.agents.teacher import Teacher

    saved = _load_saved_policy(config.policy)
    if isinstance(saved, Teacher):
        return config.frame_stack or 3
    height, _, channels = saved.observation_space.shape  # (H, W, 3k)
    if height != config.image_size:
        raise ConfigError(f"policy {config.policy} sees {height}x{height} frames; pass --image-size {height}")
    if config.frame_stack not in (None, channels // 3):
        raise ConfigError(f"policy {config.policy} stacks {channels // 3} frames; pass --frame-stack "
                          f"{channels // 3} or omit it")
    return channels // 3


def _load_saved_policy(path: str) -> Any:
    """A pixel policy, or a :class:`Teacher` when ``path`` is an SB3 zip over the true state."""
    if not Path(path).exists():
        raise FileNotFoundError(f"policy not found: {path} (use --policy random or the path of a saved policy)")
    from rlcyclegan.agents import load_policy
    from rlcyclegan.agents.teacher import is_state_model, load_teacher

    return load_teacher(path, device="cpu") if is_state_model(path) else load_policy(path)


def _policy_description(config: CollectConfig, policy: PolicyFn | None) -> dict[str, Any]:
    if policy is not None:
        name = f"{getattr(policy, '__module__', '?')}.{getattr(policy, '__qualname__', type(policy).__qualname__)}"
        description: dict[str, Any] = {"kind": "callable", "name": name}
    elif config.policy == "random":
        description = {"kind": "random"}
    else:
        description = {"kind": "saved", "path": str(Path(config.policy).resolve()), "deterministic": True}
        from rlcyclegan.agents.teacher import is_state_model

        if is_state_model(config.policy):
            description["privileged"] = True
    noise_range = {} if config.noise_max is None else {"noise_max": config.noise_max}
    return {**description, "noise": config.noise, **noise_range}


def _metadata(config: CollectConfig, policy: PolicyFn | None, frame_stack: int) -> dict[str, Any]:
    from rlcyclegan.envs import ENV_ID, RandomizedDomain, load_domain

    domain = load_domain(config.domain)
    kind = "randomized" if isinstance(domain, RandomizedDomain) else "fixed"
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": rlcyclegan.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "env_id": ENV_ID,
        # Everything below decides the data; a resume must match it exactly.
        "collection": {
            "domain": {"kind": kind, **to_dict(domain)},
            "policy": _policy_description(config, policy),
            "seed": config.seed,
            "image_size": config.image_size,
            "frame_stack": frame_stack,
            "max_steps": config.max_steps,
        },
        "compression": config.compression,
    }


def _prepare(out: Path, metadata: dict[str, Any]) -> None:
    """Write the metadata of a new dataset, or check that an existing one was collected the same way."""
    if not (out / "metadata.json").exists():
        if list_shards(out):
            raise ConfigError(f"{out} holds episode shards but no metadata.json; use an empty --out directory")
        write_metadata(out, metadata)
        return
    existing = read_metadata(out)["collection"]
    for key, value in metadata["collection"].items():
        if existing.get(key) != value:
            raise ConfigError(
                f"{out} was collected with different {key} ({_short(existing.get(key))} vs {_short(value)}); "
                "use another --out to collect a new dataset"
            )
    remove_partial_files(out)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("name", value.get("kind", value)))
    return repr(value)


def make_actor(config: CollectConfig, policy: PolicyFn | None, env: Any) -> StartEpisode:
    """The behaviour policy in ``env``: ``start(episode_rng)`` gives that episode's ``act(obs) -> action``,
    with noise (its std drawn once per episode when ``noise_max`` is set) and clipping applied."""
    action_low, action_high = env.action_space.low, env.action_space.high
    base: Callable[[np.ndarray, np.random.Generator], np.ndarray]
    if policy is not None:
        def base(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return np.asarray(policy(obs), dtype=np.float32)
    elif config.policy == "random":
        def base(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
            return rng.uniform(action_low, action_high).astype(np.float32)
    else:
        from rlcyclegan.agents.teacher import Teacher, state_observation

        saved = _load_saved_policy(config.policy)
        if isinstance(saved, Teacher):
            def base(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
                return np.asarray(saved.act(state_observation(env)), dtype=np.float32)
        else:
            def base(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
                return np.asarray(saved.predict(obs, deterministic=True)[0], dtype=np.float32)

    def start(rng: np.random.Generator) -> Callable[[np.ndarray], np.ndarray]:
        std = config.noise if config.noise_max is None else rng.uniform(config.noise, config.noise_max)
        if std == 0:
            return lambda obs: base(obs, rng)

        def noisy(obs: np.ndarray) -> np.ndarray:
            action = base(obs, rng) + std * rng.standard_normal(action_low.shape)
            return np.clip(action, action_low, action_high).astype(np.float32)

        return noisy

    return start


def rollout_episode(
    env: Any, start: StartEpisode, episode_id: int, seed: int, report: Callable[[int], None] = lambda n: None
) -> Episode:
    """Run one episode to its end and return it, calling ``report(steps)`` every ``PROGRESS_EVERY`` steps."""
    from rlcyclegan.envs import RandomizedDomain

    act = start(episode_rng(seed, episode_id))
    obs, info = env.reset(seed=seed + episode_id)
    limit = env.spec.max_episode_steps
    frames = np.empty((limit + 1, *obs.shape[:2], 3), dtype=np.uint8)  # (T+1, H, W, 3)
    actions = np.empty((limit, *env.action_space.shape), dtype=np.float32)
    rewards = np.empty(limit)
    terminations = np.zeros(limit, dtype=bool)
    truncations = np.zeros(limit, dtype=bool)
    qpos = np.empty((limit + 1, len(info["qpos"])))
    qvel = np.empty((limit + 1, len(info["qvel"])))
    frames[0], qpos[0], qvel[0] = obs[..., -3:], info["qpos"], info["qvel"]
    for t in range(limit):
        actions[t] = act(obs)
        obs, rewards[t], terminations[t], truncations[t], info = env.step(actions[t])
        frames[t + 1], qpos[t + 1], qvel[t + 1] = obs[..., -3:], info["qpos"], info["qvel"]
        if (t + 1) % PROGRESS_EVERY == 0:
            report(PROGRESS_EVERY)
        if terminations[t] or truncations[t]:
            break
    steps = t + 1
    if steps % PROGRESS_EVERY:
        report(steps % PROGRESS_EVERY)
    unwrapped = env.unwrapped
    spec = to_dict(unwrapped.current_spec) if isinstance(unwrapped.domain, RandomizedDomain) else None
    return Episode(
        episode_id, seed + episode_id, frames[: steps + 1], actions[:steps], rewards[:steps], terminations[:steps],
        truncations[:steps], qpos[: steps + 1], qvel[: steps + 1], spec,
    )


def _make_env(config: CollectConfig, frame_stack: int) -> Any:
    from rlcyclegan.envs import make_env

    return make_env(config.domain, image_size=config.image_size, frame_stack=frame_stack,
                    max_episode_steps=config.max_steps)


def _collect_episodes(
    config: CollectConfig, frame_stack: int, policy: PolicyFn | None, episode_ids: Sequence[int],
    report: Callable[[int], None], finished: Callable[[int, int], None], keep_going: Callable[[], bool],
) -> None:
    """The loop every worker runs: roll out each id and write its shard."""
    env = _make_env(config, frame_stack)
    try:
        start = make_actor(config, policy, env)
        for episode_id in episode_ids:
            if not keep_going():
                return
            episode = rollout_episode(env, start, episode_id, config.seed, report)
            write_episode(Path(config.out), episode, config.compression)
            finished(episode_id, episode.num_steps)
    finally:
        env.close()


def _collect_in_process(
    config: CollectConfig, frame_stack: int, policy: PolicyFn | None, missing: list[int], progress: _Progress
) -> int:
    _collect_episodes(config, frame_stack, policy, missing, progress.steps, progress.episode, lambda: True)
    return progress.transitions


def _worker(config: CollectConfig, frame_stack: int, policy: PolicyFn | None, episode_ids: list[int],
            messages: mp.Queue) -> None:
    """Entry point of a spawned worker; every outcome reaches the parent as a queue message."""
    import torch

    # One worker per core: intra-op threads would only spin-wait against the other workers (measured: a
    # policy-driven collection ran at 9 transitions/s with torch's default threads on 2 busy cores).
    torch.set_num_threads(1)
    parent = mp.parent_process()
    try:
        _collect_episodes(
            config, frame_stack, policy, episode_ids,
            report=lambda n: messages.put(("steps", n)),
            finished=lambda episode_id, steps: messages.put(("episode", episode_id, steps)),
            # A parent killed by SIGKILL cannot stop its workers: they notice and stop themselves.
            keep_going=lambda: parent is None or parent.is_alive(),
        )
    except BaseException as err:  # reported to the parent, which raises
        messages.put(("error", type(err).__name__, str(err), traceback.format_exc()))
        raise SystemExit(1) from None


def _collect_in_workers(
    config: CollectConfig, frame_stack: int, policy: PolicyFn | None, missing: list[int], progress: _Progress
) -> int:
    if policy is not None:
        try:
            pickle.dumps(policy)
        except (pickle.PicklingError, AttributeError, TypeError) as err:
            raise ConfigError(f"the policy callable cannot be sent to worker processes ({err}); "
                              "use workers=1 or a module-level function") from None
    context = mp.get_context("spawn")
    messages = context.Queue()
    count = min(config.workers, len(missing))
    workers = [
        context.Process(target=_worker, args=(config, frame_stack, policy, missing[w::count], messages), daemon=True)
        for w in range(count)
    ]
    for process in workers:
        process.start()
    try:
        while True:
            try:
                message = messages.get(timeout=0.5)
            except queue.Empty:
                if all(p.exitcode is not None for p in workers):
                    break
                continue
            _handle(message, progress)
        _check_exit_codes(workers)
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
            process.join()
    return progress.transitions


def _handle(message: tuple, progress: _Progress) -> None:
    """Apply one worker message to the progress; a worker's error is raised here, in the parent."""
    kind = message[0]
    if kind == "steps":
        progress.steps(message[1])
    elif kind == "episode":
        progress.episode(*message[1:])
    else:
        _, name, text, trace = message
        if name in ("ValueError", "ConfigError", "FileNotFoundError"):
            raise ValueError(f"collection worker failed: {text}")
        raise RuntimeError(f"collection worker failed with {name}: {text}\n{trace}")


def _check_exit_codes(workers: list[mp.Process]) -> None:
    failed = [(i, p.exitcode) for i, p in enumerate(workers) if p.exitcode != 0]
    if failed:
        worker, code = failed[0]
        raise RuntimeError(f"collection worker {worker} died with exit code {code} (killed, or out of memory?); "
                           "re-run the same command to resume")

