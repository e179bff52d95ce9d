"""Training pixel Q-networks by TD on collected transitions, and checking them against Monte-Carlo returns.

Target choice (SARSA): ``V(x') = Q_target(x', a')`` with ``a'`` the behaviour policy's next action from the
data. It needs no policy at training time, works for any collected dataset, and estimates ``Q`` of the
behaviour policy, which is exactly what the Monte-Carlo check measures. The target network follows the
online one by Polyak averaging (``tau``).

``Q_sim`` is trained on sim transitions and ``Q_real`` on real transitions, each with its own domain's
rewards: the same function, two datasets (``rlcyclegan train-q --data DIR``).

Time limits: HalfCheetah episodes are truncated, never terminated, so the data's ``terminated`` is 0 and
TD bootstraps through the cut, while a Monte-Carlo return near the end of an episode only sums the few
remaining rewards. :func:`q_return_correlation` therefore skips the last ``min_remaining`` steps of each
episode by default (there the Monte-Carlo return is not an estimate of ``Q``); both numbers are reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from rlcyclegan.agents.q_network import PixelQNetwork, make_target, polyak_update
from rlcyclegan.data.batches import TransitionBatch, frames_to_float
from rlcyclegan.losses import td_loss

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from rlcyclegan.data.loaders import EpisodeData, RolloutDataset


@dataclass
class QNetConfig:
    """Size of the Q-network (``PixelQNetwork`` arguments besides the data's shapes)."""

    features_dim: int = 256
    hidden_dim: int = 256
    width: int = 16


@dataclass
class QTrainConfig:
    """``rlcyclegan train-q``: TD learning of ``Q(frames, action)`` on one domain's dataset."""

    data: Path | None = None
    """Dataset directory (``rlcyclegan collect``); its domain's rewards are learned."""
    out: Path | None = None
    """Where to write ``q.safetensors`` and logs; default ``runs/{domain}__{exp_name}__{seed}__{time}``."""
    exp_name: str = "q"
    seed: int = 0
    device: str = "auto"
    torch_threads: int = 0
    frame_stack: int = 3
    gamma: float = 0.99
    steps: int = 10_000
    """Gradient steps."""
    batch_size: int = 128
    lr: float = 3e-4
    tau: float = 0.01
    """Polyak rate of the target network."""
    holdout_episodes: int = 5
    """Last episodes of the dataset kept out of training for the Spearman check."""
    check_data: Path | None = None
    """A separately collected dataset of the same domain, all of whose episodes are checked too. Longer
    episodes than the training data's give the check more steps beyond the horizon, and more episodes make
    it depend less on which ones were drawn (see ``QCheck.spearman_ci95``)."""
    min_remaining: int | None = None
    """Skip steps this close to an episode's end in the check; None: the horizon where gamma^n < 0.05."""
    log_every: int = 100
    normalize_values: bool = True
    """Set Q's output offset and scale from the training rewards (``value_normalization``)."""
    q: QNetConfig | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if self.steps < 0 or self.batch_size < 1 or self.holdout_episodes < 0:
            raise ValueError("steps and holdout_episodes must be non-negative and batch_size positive")

    def horizon(self) -> int:
        """Steps skipped at episode ends in the check: ``min_remaining`` or :func:`truncation_horizon`."""
        return self.min_remaining if self.min_remaining is not None else truncation_horizon(self.gamma)


def truncation_horizon(gamma: float, tail_weight: float = 0.05) -> int:
    """Steps ``n`` after which the discounted tail ``gamma^n`` falls below ``tail_weight`` (299 for 0.99).

    Closer than this to a truncated episode's end, the Monte-Carlo return misses a noticeable part of Q.
    """
    return math.ceil(math.log(tail_weight) / math.log(gamma)) if gamma > 0 else 1


def q_values(q: PixelQNetwork, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``Q(x, a)`` ``(B,)`` for uint8 stacks ``(B, 3k, H, W)``: the one place frames become floats for Q."""
    return q(frames_to_float(frames), actions)


def td_step(
    q: PixelQNetwork, target: PixelQNetwork, optimizer: torch.optim.Optimizer, batch: TransitionBatch,
    gamma: float, tau: float,
) -> float:
    """One SARSA TD update of ``q`` on ``batch`` followed by the Polyak update of ``target``; the loss."""
    with torch.no_grad():
        next_value = q_values(target, batch.next_obs, batch.next_action)
    loss = td_loss(q_values(q, batch.obs, batch.action), batch.reward, next_value, batch.terminated, gamma)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    polyak_update(q, target, tau)
    return loss.item()


def train_q(
    q: PixelQNetwork,
    sample: Callable[[int, np.random.Generator], TransitionBatch],
    steps: int,
    gamma: float = 0.99,
    batch_size: int = 128,
    lr: float = 3e-4,
    tau: float = 0.01,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> PixelQNetwork:
    """TD-train ``q`` in place on batches from ``sample(batch_size, rng)``; returns its target network.

    Args:
        q: the network to train (on the device the batches are moved to).
        sample: draws a ``TransitionBatch`` (``RolloutDataset.sample`` or a restricted version of it).
        steps: gradient steps.
        gamma: discount.
        batch_size: transitions per step.
        lr: Adam learning rate.
        tau: Polyak rate of the target network.
        seed: seeds the batch sampling.
        on_step: called with ``(step, loss)`` after every step.
    """
    device = _device(q)
    target = make_target(q)
    optimizer = torch.optim.Adam(q.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    q.train()
    for step in range(steps):
        loss = td_step(q, target, optimizer, sample(batch_size, rng).to(device), gamma, tau)
        if on_step is not None:
            on_step(step, loss)
    q.eval()
    return target


def _device(module: torch.nn.Module) -> torch.device:
    tensor = next(iter(module.parameters()), None)
    if tensor is None:
        tensor = next(iter(module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """Monte-Carlo ``G_t = sum_i gamma^i r_{t+i}`` to the end of the recorded episode, for every ``t``."""
    returns = np.zeros(len(rewards), dtype=np.float64)
    running = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (NumPy only)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"spearman needs two equal-length arrays of at least 2 values, got {x.shape} and {y.shape}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denominator if denominator > 0 else float("nan")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def episode_stacks(frames: np.ndarray, frame_stack: int) -> np.ndarray:
    """Stacks ``(T+1, 3k, H, W)`` uint8 from an episode's frames ``(T+1, H, W, 3)``, as the env stacks them."""
    idx = np.maximum(np.arange(len(frames))[:, None] + np.arange(-frame_stack + 1, 1), 0)  # (T+1, k)
    stacked = frames[idx]  # (T+1, k, H, W, 3)
    n, k, h, w, c = stacked.shape
    return stacked.transpose(0, 1, 4, 2, 3).reshape(n, k * c, h, w)  # (T+1, 3k, H, W), oldest first


@dataclass
class QCheck:
    """Spearman correlations of ``Q(x_t, a_t)`` with the discounted Monte-Carlo return from ``t``."""

    spearman: float
    """On steps at least ``min_remaining`` from the episode's end (where the return estimates Q)."""
    spearman_all_steps: float
    steps: int
    episodes: int
    spearman_within_episodes: float
    """The mean over episodes of each episode's own correlation (same steps): whether Q follows the return
    as it changes inside an episode. The pooled figure also rewards telling episodes apart, so it rises with
    how much the held-out episodes differ from each other, which is luck of the draw with few episodes."""
    spearman_ci95: tuple[float, float]
    """95% bootstrap interval of ``spearman`` over episodes drawn with replacement: the steps of one episode
    are far from independent, so the episodes, not the steps, are the sample."""


def q_return_check(
    q: PixelQNetwork, episodes: Iterable[EpisodeData], gamma: float, min_remaining: int, frame_stack: int,
    batch_size: int = 256,
) -> QCheck:
    """Compare ``Q`` with Monte-Carlo returns on ``episodes`` (``EpisodeData`` of a ``RolloutDataset``)."""
    episodes = list(episodes)
    return return_check(q_predictions(q, episodes, frame_stack, batch_size), episodes, gamma, min_remaining)


@torch.no_grad()
def q_predictions(q: PixelQNetwork, episodes: list[EpisodeData], frame_stack: int,
                  batch_size: int = 256) -> list[np.ndarray]:
    """``Q(x_t, a_t)`` for every step of each episode, one ``(T,)`` array per episode."""
    device = _device(q)
    q.eval()
    predicted = []
    for episode in episodes:
        stacks = episode_stacks(episode.frames, frame_stack)[:-1]  # (T, 3k, H, W): x_t for every action a_t
        values = []
        for start in range(0, len(stacks), batch_size):
            frames = torch.from_numpy(stacks[start:start + batch_size]).to(device)
            actions = torch.from_numpy(episode.actions[start:start + batch_size]).to(device)
            values.append(q_values(q, frames, actions).float().cpu().numpy())
        predicted.append(np.concatenate(values))
    return predicted


def return_check(predicted: list[np.ndarray], episodes: list[EpisodeData], gamma: float,
                 min_remaining: int) -> QCheck:
    """Spearman correlations of any estimate of ``Q(x_t, a_t)`` (one ``(T,)`` array per episode) with the
    episodes' Monte-Carlo returns: the pixel Q-networks' check, and that of estimators that see more."""
    if not predicted:
        raise ValueError("no episodes to check Q against; hold out at least one episode")
    returns, keep = [], []
    for episode in episodes:
        returns.append(discounted_returns(episode.rewards, gamma))
        remaining = len(episode.rewards) - np.arange(len(episode.rewards))
        keep.append(remaining >= min_remaining if not episode.terminations.any() else np.ones_like(remaining, bool))
    q_all, g_all, mask = np.concatenate(predicted), np.concatenate(returns), np.concatenate(keep)
    kept = spearman(q_all[mask], g_all[mask]) if mask.sum() >= 2 else float("nan")
    within = [spearman(q_e[k], g_e[k]) for q_e, g_e, k in zip(predicted, returns, keep, strict=True) if k.sum() >= 2]
    interval = episode_bootstrap_interval([q_e[k] for q_e, k in zip(predicted, keep, strict=True)],
                                          [g_e[k] for g_e, k in zip(returns, keep, strict=True)])
    return QCheck(kept, spearman(q_all, g_all), int(mask.sum()), len(episodes),
                  float(np.mean(within)) if within else float("nan"), interval)


def episode_bootstrap_interval(predicted: list[np.ndarray], returns: list[np.ndarray], resamples: int = 1000,
                               seed: int = 0) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of the pooled Spearman correlation over resamples of whole episodes.

    ``predicted`` and ``returns`` hold one array per episode (the checked steps only). NaN where fewer than two
    steps are checked.
    """
    pairs = [(q_e, g_e) for q_e, g_e in zip(predicted, returns, strict=True) if len(q_e)]
    if sum(len(q_e) for q_e, _ in pairs) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    correlations = []
    for _ in range(resamples):
        drawn = [pairs[i] for i in rng.integers(0, len(pairs), size=len(pairs))]
        q_drawn, g_drawn = np.concatenate([q for q, _ in drawn]), np.concatenate([g for _, g in drawn])
        correlations.append(spearman(q_drawn, g_drawn) if len(q_drawn) >= 2 else float("nan"))
    finite = np.asarray(correlations)[np.isfinite(correlations)]
    if not finite.size:
        return float("nan"), float("nan")
    low, high = np.percentile(finite, [2.5, 97.5])
    return float(low), float(high)


def q_return_correlation(q: PixelQNetwork, dataset: RolloutDataset, gamma: float, episodes: int | None = None,
                         min_remaining: int = 0) -> float:
    """Spearman correlation of ``Q(x, a)`` with the discounted Monte-Carlo return, on a dataset's episodes.

    Args:
        q: the Q-network.
        dataset: a ``RolloutDataset`` (use held-out episodes: a separate collection or the held-out tail).
        gamma: the discount ``q`` was trained with.
        episodes: use the last this many episodes (None: all).
        min_remaining: skip steps closer than this to a truncated episode's end (see the module docstring).
    """
    selected = list(last_episodes(dataset, episodes))
    return q_return_check(q, selected, gamma, min_remaining, dataset.frame_stack).spearman


def last_episodes(dataset: RolloutDataset, count: int | None) -> Iterable[EpisodeData]:
    """The last ``count`` episodes of a ``RolloutDataset`` (all when None): the held-out tail."""
    first = 0 if count is None else max(dataset.num_episodes - count, 0)
    for i, episode in enumerate(dataset.episodes()):
        if i >= first:
            yield episode


@dataclass
class TrainingSplit:
    """The training part of a dataset (all but its last ``holdout`` episodes) and its reward statistics."""

    transitions: int
    """Transitions before the held-out episodes (the dataset's transitions are in episode order)."""
    reward_mean: float
    reward_std: float


def training_split(dataset: RolloutDataset, holdout_episodes: int) -> TrainingSplit:
    """Count the training transitions and measure their rewards.

    A truncated episode of ``T`` steps has ``T - 1`` transitions (its last step has no next action), a
    terminated one ``T``.

    Raises:
        ValueError: if nothing would be left to train on.
    """
    if holdout_episodes >= dataset.num_episodes:
        raise ValueError(f"cannot hold out {holdout_episodes} of {dataset.num_episodes} episodes; collect more "
                         "episodes or lower holdout_episodes")
    first_held = dataset.num_episodes - holdout_episodes
    transitions, rewards = 0, []
    for i, episode in enumerate(dataset.episodes()):
        if i < first_held:
            transitions += len(episode.rewards) - 1 + int(episode.terminations[-1])
            rewards.append(episode.rewards)
    flat = np.concatenate(rewards)
    return TrainingSplit(transitions, float(flat.mean()), float(flat.std()))


def value_normalization(reward_mean: float, reward_std: float, gamma: float) -> tuple[float, float]:
    """``(value_scale, value_offset)`` for :class:`PixelQNetwork` from per-step reward statistics.

    The offset is the value of receiving the mean reward forever, the scale that of its standard
    deviation, so the MLP learns O(1) deviations (see ``PixelQNetwork``).
    """
    horizon = 1.0 / (1.0 - gamma)
    return max(reward_std, 1e-3 * abs(reward_mean), 1e-6) * horizon, reward_mean * horizon


def run_train_q(config: QTrainConfig, progress: bool = True) -> dict:
    """Train one Q-network on ``config.data``, save it, and check it on the held-out episodes.

    Returns:
        A summary (paths, Spearman correlations, wall time), also written to ``summary.json``.
    """
    import dataclasses
    import json

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from rlcyclegan.agents.q_network import save_q
    from rlcyclegan.agents.train_policy import peak_memory_mb
    from rlcyclegan.config import save_config
    from rlcyclegan.data.loaders import RolloutDataset
    from rlcyclegan.device import resolve_device
    from rlcyclegan.seeding import seed_everything

    if config.data is None:
        raise ValueError("train-q needs a dataset: pass data=DIR (collect one with `rlcyclegan collect`)")
    if config.torch_threads > 0:
        torch.set_num_threads(config.torch_threads)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    dataset = RolloutDataset(config.data, frame_stack=config.frame_stack)
    # Read once, after training: streamed from disk rather than held in memory all along.
    check_dataset = None if config.check_data is None else RolloutDataset(
        config.check_data, frame_stack=config.frame_stack, cache=False)
    if check_dataset is not None and (check_dataset.domain_name, check_dataset.image_size) != (
            dataset.domain_name, dataset.image_size):
        raise ValueError(f"check_data {config.check_data} holds {check_dataset.domain_name} frames of "
                         f"{check_dataset.image_size}px, but Q learns {dataset.domain_name} frames of "
                         f"{dataset.image_size}px from {config.data}")
    split = training_split(dataset, config.holdout_episodes)
    n_train = split.transitions
    run_dir = Path(config.out) if config.out else (
        Path("runs") / f"{dataset.domain_name}__{config.exp_name}__{config.seed}__{int(time.time())}")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    writer = SummaryWriter(str(run_dir))
    action_dim = int(dataset.get_batch([0]).action.shape[1])
    scale, offset = value_normalization(split.reward_mean, split.reward_std, config.gamma) if config.normalize_values \
        else (1.0, 0.0)
    q = PixelQNetwork(config.frame_stack, action_dim, dataset.image_size, value_scale=scale, value_offset=offset,
                      **dataclasses.asdict(config.q or QNetConfig())).to(device)

    def sample(batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        return dataset.get_batch(rng.integers(0, n_train, size=batch_size))

    start = time.perf_counter()
    with tqdm(total=config.steps, desc=f"train-q {dataset.domain_name}", disable=not progress) as bar:
        def on_step(step: int, loss: float) -> None:
            bar.update()
            if step % config.log_every == 0:
                writer.add_scalar("losses/q_td", loss, step)
                bar.set_postfix(td_loss=f"{loss:.3f}")

        train_q(q, sample, config.steps, config.gamma, config.batch_size, config.lr, config.tau, config.seed, on_step)
    wall = time.perf_counter() - start
    path = run_dir / "q.safetensors"
    save_q(q.cpu(), path, gamma=config.gamma, domain=dataset.domain_name, data=str(config.data))
    q.to(device)
    summary: dict = {"q_path": str(path), "domain": dataset.domain_name, "train_transitions": n_train,
                     "train_wall_s": wall, "value_scale": scale, "value_offset": offset}
    if config.holdout_episodes:
        check = q_return_check(q, last_episodes(dataset, config.holdout_episodes), config.gamma, config.horizon(),
                               config.frame_stack)
        summary.update(dataclasses.asdict(check), min_remaining=config.horizon())
        _log_check(writer, "q", check, config.steps)
    if check_dataset is not None:
        check = q_return_check(q, check_dataset.episodes(), config.gamma, config.horizon(), config.frame_stack)
        summary["check_data"] = {"data": str(config.check_data), **dataclasses.asdict(check)}
        _log_check(writer, "q_check_data", check, config.steps)
    writer.close()
    summary["peak_memory_mb"] = peak_memory_mb()
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _log_check(writer: SummaryWriter, prefix: str, check: QCheck, step: int) -> None:
    writer.add_scalar(f"{prefix}/spearman_mc_return", check.spearman, step)
    writer.add_scalar(f"{prefix}/spearman_mc_return_all_steps", check.spearman_all_steps, step)
    writer.add_scalar(f"{prefix}/spearman_mc_return_within_episodes", check.spearman_within_episodes, step)
