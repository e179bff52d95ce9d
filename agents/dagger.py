"""DAgger: train the pixel student to imitate the privileged teacher on the student's own state distribution.

Each iteration ``i`` (Ross et al. 2011, "A Reduction of Imitation Learning ... to No-Regret Online
Learning"):

1. roll out the mixture policy ``pi_i = beta_i * teacher + (1 - beta_i) * student`` in the pixel env (the
   mixture is per step: with probability ``beta_i`` the teacher's action is executed);
2. label every visited state with the teacher's action, computed from the true state of that same env
   (:func:`~rlcyclegan.agents.teacher.state_observation`);
3. aggregate the labelled frames with all earlier ones;
4. retrain the student on the aggregate by regressing the teacher's actions (mean squared error).

``beta_0 = 1`` makes the first iteration plain behaviour cloning; ``beta_i = beta_0 * decay^i`` hands
control to the student. Episodes run on across iterations, so short iterations still finish episodes.

DAgger's guarantee is for the best of its iterates, and Ross et al. return "the best policy on validation".
The last iterate is not reliably the best: five standard-budget students ended at 63-91% of the teacher,
and in four of them the rollouts of an iterate a few iterations earlier had scored higher. With
``validation_episodes > 0`` the student runs alone for that many episodes after each of the last
``validate_last`` iterations, and the best-scoring iterate is the one returned. With seed 1 that kept
iteration 6 (88% of the teacher) over the last (70%); with seed 0 the last iterate was the best.

Frames are stored once per step (uint8, newest frame only) and the stacks are rebuilt by index, a third
of the memory of storing ``(H, W, 3k)`` stacks.

``action_noise`` perturbs the executed actions while the labels stay clean (DART, Laskey et al. 2017), so
the student also sees states off its own path, with the teacher's actions there. Both budgets set 0.2:
the standard seed-0 student then did better in ``real``, whose physics differ, though worse in ``sim``
(README, *Noise in DAgger's rollouts*; ``experiments/nose_up_trap.py``).

``shift_pad`` trains on randomly shifted stacks (DrQ's augmentation, Kostrikov et al. 2021), meant to make
the student less sensitive to a translator's small errors. Off by default: over two seeds it helped neither
the student's return in ``sim`` nor its transfer reliably (README, *Students*).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from rlcyclegan.agents.student import PixelStudentPolicy
from rlcyclegan.agents.teacher import state_observation


class Labeller(Protocol):
    """Anything that maps true states ``(N, S)`` to actions ``(N, A)``, like :class:`Teacher`."""

    def act(self, states: np.ndarray) -> np.ndarray: ...


@dataclass
class DAggerConfig:
    """DAgger's schedule and the student's regression."""

    iterations: int = 10
    """Roll out, label, aggregate, retrain: this many times."""
    steps_per_iteration: int = 6000
    """Env steps labelled per iteration."""
    beta0: float = 1.0
    """Probability of executing the teacher's action in iteration 0 (1: start with behaviour cloning)."""
    beta_decay: float = 0.5
    """``beta_i = beta0 * beta_decay ** i``."""
    gradient_steps: int = 1000
    """Student updates after each aggregation."""
    batch_size: int = 128
    lr: float = 3e-4
    action_noise: float = 0.0
    """Std of Gaussian noise added to executed actions (broader state coverage; labels stay clean)."""
    holdout_fraction: float = 0.05
    """Share of the newest iteration's samples kept out of training to measure the imitation loss."""
    shift_pad: int = 0
    """Train on stacks shifted by up to this many pixels each way (edges replicated); 0: no augmentation."""
    validation_episodes: int = 0
    """Episodes of the student alone after each of the last ``validate_last`` iterations, from reset seeds
    ``validation_seed + i`` (apart from training's and the final evaluation's); the best iterate is kept.
    0: keep the last iterate."""
    validate_last: int = 4
    validation_seed: int = 20_000

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.steps_per_iteration < 1 or self.gradient_steps < 0 or self.batch_size < 1:
            raise ValueError("dagger.iterations, steps_per_iteration and batch_size must be positive "
                             "and gradient_steps non-negative")
        if not (0.0 <= self.beta0 <= 1.0 and 0.0 <= self.beta_decay <= 1.0):
            raise ValueError(f"dagger.beta0 and beta_decay must lie in [0, 1], got {self.beta0}, {self.beta_decay}")
        if self.validation_episodes < 0 or self.validate_last < 1:
            raise ValueError("dagger.validation_episodes must be non-negative and validate_last positive, got "
                             f"{self.validation_episodes} and {self.validate_last}")
        if self.shift_pad < 0:
            raise ValueError(f"dagger.shift_pad must be non-negative, got {self.shift_pad}")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ValueError(f"dagger.holdout_fraction must lie in [0, 1), got {self.holdout_fraction}")

    def beta(self, iteration: int) -> float:
        return self.beta0 * self.beta_decay**iteration


class FrameStackBuffer:
    """Labelled visited states: one uint8 frame per step, stacks rebuilt on sampling.

    A sample's stack is its frame and the ``k - 1`` previous frames of the same episode, the first frame
    repeated before the episode start: exactly how the env stacks frames after a reset.
    """

    def __init__(self, capacity: int, image_size: int, frame_stack: int, action_dim: int) -> None:
        self.frame_stack = frame_stack
        self.frames = np.zeros((capacity, image_size, image_size, 3), dtype=np.uint8)
        self.labels = np.zeros((capacity, action_dim), dtype=np.float32)
        self.episode_start = np.zeros(capacity, dtype=np.int64)  # index of the sample's episode's first frame
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs: np.ndarray, label: np.ndarray, new_episode: bool) -> None:
        """Store observation ``(H, W, 3k)`` (its newest frame) with the teacher's ``label``."""
        if self.size >= len(self.frames):
            raise ValueError(f"buffer full at {self.size} samples; size it for iterations x steps_per_iteration")
        i = self.size
        self.frames[i] = obs[..., -3:]
        self.labels[i] = label
        self.episode_start[i] = i if new_episode or i == 0 else self.episode_start[i - 1]
        self.size += 1

    def stacks(self, indices: np.ndarray) -> torch.Tensor:
        """uint8 stacks ``(B, 3k, H, W)`` for sample ``indices``, oldest frame first."""
        offsets = np.arange(-(self.frame_stack - 1), 1)  # (k,)
        frame_idx = np.maximum(indices[:, None] + offsets, self.episode_start[indices][:, None])  # (B, k)
        frames = self.frames[frame_idx]  # (B, k, H, W, 3)
        b, k, h, w, _ = frames.shape
        stacked = frames.transpose(0, 2, 3, 1, 4).reshape(b, h, w, 3 * k)  # (B, H, W, 3k), oldest first
        return torch.from_numpy(stacked).permute(0, 3, 1, 2)  # (B, 3k, H, W)


@dataclass
class RolloutState:
    """The env's current observation, carried across iterations so episodes run on."""

    obs: np.ndarray | None = None
    episode_return: float = 0.0
    returns: list[float] = field(default_factory=list)


def collect(
    env: gym.Env,
    student: PixelStudentPolicy,
    teacher: Labeller,
    steps: int,
    beta: float,
    action_noise: float,
    buffer: FrameStackBuffer,
    rollout: RolloutState,
    rng: np.random.Generator,
    seed: int,
) -> list[float]:
    """Run the beta-mixture for ``steps`` steps, storing every visited state with the teacher's label.

    Returns:
        The returns of the episodes that finished during these steps.
    """
    finished: list[float] = []
    new_episode = rollout.obs is None
    if rollout.obs is None:
        rollout.obs, _ = env.reset(seed=seed)
    low, high = env.action_space.low, env.action_space.high
    for _ in range(steps):
        label = np.asarray(teacher.act(state_observation(env)), dtype=np.float32)
        buffer.add(rollout.obs, label, new_episode)
        action = label if rng.random() < beta else student.predict(rollout.obs)[0]
        if action_noise > 0:
            action = action + action_noise * rng.standard_normal(action.shape)
        rollout.obs, reward, terminated, truncated, _ = env.step(np.clip(action, low, high).astype(np.float32))
        rollout.episode_return += float(reward)
        new_episode = terminated or truncated
        if new_episode:
            finished.append(rollout.episode_return)
            rollout.returns.append(rollout.episode_return)
            rollout.episode_return = 0.0
            rollout.obs, _ = env.reset()
    return finished


def random_shift(stacks: torch.Tensor, pad: int, rng: np.random.Generator) -> torch.Tensor:
    """Shift each stack ``(B, C, H, W)`` by its own random offset in ``[-pad, pad]`` pixels, per axis.

    All frames of one stack move together, so the motion between them is kept; the edge pixels fill the
    uncovered border.
    """
    if pad == 0:
        return stacks
    b, _, h, w = stacks.shape
    padded = F.pad(stacks.float(), (pad, pad, pad, pad), mode="replicate").to(stacks.dtype)
    tops, lefts = rng.integers(0, 2 * pad + 1, size=(2, b))
    crops = [padded[i, :, top:top + h, left:left + w] for i, (top, left) in enumerate(zip(tops, lefts, strict=True))]
    return torch.stack(crops)


def imitation_loss(student: PixelStudentPolicy, buffer: FrameStackBuffer, indices: np.ndarray,
                   batch_size: int = 256) -> float:
    """Mean squared error between the student's and the teacher's actions on ``indices`` (no gradient)."""
    if len(indices) == 0:
        return float("nan")
    student.eval()
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start:start + batch_size]
            frames = buffer.stacks(chunk).to(student.device)
            labels = torch.from_numpy(buffer.labels[chunk]).to(student.device)
            total += F.mse_loss(student(frames), labels, reduction="sum").item() / labels.shape[1]
    return total / len(indices)


def fit(
    student: PixelStudentPolicy,
    optimizer: torch.optim.Optimizer,
    buffer: FrameStackBuffer,
    train_indices: np.ndarray,
    steps: int,
    batch_size: int,
    rng: np.random.Generator,
    shift_pad: int = 0,
    on_step: Callable[[float], None] | None = None,
) -> float:
    """Regress the teacher's labels on uniformly sampled aggregated states; the mean training loss."""
    student.train()
    losses = []
    for _ in range(steps):
        chunk = rng.choice(train_indices, size=min(batch_size, len(train_indices)), replace=False)
        frames = random_shift(buffer.stacks(chunk), shift_pad, rng).to(student.device, non_blocking=True)
        labels = torch.from_numpy(buffer.labels[chunk]).to(student.device, non_blocking=True)
        loss = F.mse_loss(student(frames), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(losses[-1])
    return float(np.mean(losses)) if losses else float("nan")


@dataclass
class IterationStats:
    """What one DAgger iteration measured; logged under ``losses/`` and ``charts/``."""

    iteration: int
    beta: float
    samples: int
    onpolicy_loss: float
    """Imitation loss on the states just visited, before retraining: the loss DAgger drives down."""
    train_loss: float
    holdout_loss: float
    """Imitation loss after retraining, on held-out samples of this iteration."""
    episode_returns: list[float]
    validation_return: float | None = None
    """Mean return of the student alone on the validation episodes (``None``: not validated)."""


def train_dagger(
    student: PixelStudentPolicy,
    teacher: Labeller,
    env: gym.Env,
    config: DAggerConfig,
    seed: int = 0,
    on_iteration: Callable[[IterationStats], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    validate: Callable[[PixelStudentPolicy], float] | None = None,
) -> tuple[FrameStackBuffer, list[IterationStats]]:
    """Run DAgger and return the aggregated data and per-iteration statistics.

    Args:
        student: trained in place.
        teacher: labels states from the env's true state.
        env: a pixel env of the training domain (its frames must match the student).
        config: schedule and optimisation settings.
        seed: seeds the first reset and the sampling.
        on_iteration: called after each iteration (logging).
        on_progress: called with the number of env steps or gradient steps just done (progress bar).
        validate: the student's mean return on validation episodes; with it, the last
            ``config.validate_last`` iterates are scored and the student ends as the best of them.
    """
    from rlcyclegan.agents.policies import check_policy_fits

    check_policy_fits(student, env.observation_space, "the DAgger env")
    rng = np.random.default_rng(seed)
    image_size, _, channels = student.observation_space.shape
    buffer = FrameStackBuffer(config.iterations * config.steps_per_iteration, image_size, channels // 3,
                              student.action_space.shape[0])
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    env.action_space.seed(seed)
    rollout = RolloutState()
    train_indices = np.zeros(0, dtype=np.int64)
    history = []
    best_return, best_weights = -np.inf, None
    for iteration in range(config.iterations):
        beta = config.beta(iteration)
        start = len(buffer)
        returns = collect(env, student, teacher, config.steps_per_iteration, beta, config.action_noise,
                          buffer, rollout, rng, seed)
        if on_progress is not None:
            on_progress(config.steps_per_iteration)
        new = np.arange(start, len(buffer))
        onpolicy = imitation_loss(student, buffer, new)
        n_hold = int(round(config.holdout_fraction * len(new)))
        holdout = rng.choice(new, size=n_hold, replace=False) if n_hold else new[:0]
        train_indices = np.concatenate([train_indices, np.setdiff1d(new, holdout)])
        train_loss = fit(student, optimizer, buffer, train_indices, config.gradient_steps, config.batch_size, rng,
                         config.shift_pad, on_step=(lambda _: on_progress(1)) if on_progress is not None else None)
        validation = (float(validate(student)) if validate is not None
                      and iteration >= config.iterations - config.validate_last else None)
        if validation is not None and validation > best_return:
            best_return = validation
            best_weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
        stats = IterationStats(iteration, beta, len(buffer), onpolicy, train_loss,
                               imitation_loss(student, buffer, holdout), returns, validation)
        history.append(stats)
        if on_iteration is not None:
            on_iteration(stats)
    if best_weights is not None:
        student.load_state_dict(best_weights)
    student.eval()
    return buffer, history
