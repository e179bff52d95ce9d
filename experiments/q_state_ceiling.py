"""How well can a Q-network rank held-out Monte-Carlo returns on a dataset at all? A ceiling for the pixel check.

``train-q`` checks a pixel Q-network by the Spearman correlation of ``Q(x_t, a_t)`` with the discounted return
from ``t`` on held-out episodes (target 0.7). This script trains ``Q(s, a)`` on the true physical state instead
(``qpos`` without the x position, and ``qvel``: the teacher's observation, which holds everything that sets
the future return), with the same SARSA TD, target network, discount, steps and batch size, on the same
training episodes, and scores it with the same check on the same held-out episodes. What it reaches is about
what a pixel Q-network could reach with this data and this training: a pixel Q far below it points at the
pixels, one near it at the data (how far apart the held-out episodes lie, how noisy a single return is).
``--fit mc`` regresses the state Q on the Monte-Carlo returns themselves (steps far enough from the
episode's end), the most direct estimate of what the held-out returns let any ``Q(s, a)`` reach.

    python experiments/q_state_ceiling.py runs/std2/data/sim runs/std2/data/real --test runs/std2/data/real_test
    python experiments/q_state_ceiling.py runs/std2/data/real --steps 6000 30000 --fit td mc
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcyclegan.agents.q_network import make_target, polyak_update
from rlcyclegan.agents.q_training import (
    QCheck,
    QTrainConfig,
    discounted_returns,
    return_check,
    value_normalization,
)
from rlcyclegan.config import load_config
from rlcyclegan.data.loaders import EpisodeData, RolloutDataset
from rlcyclegan.losses import td_loss

EXPERIMENTS = Path(__file__).resolve().parent


def state_observations(episode: EpisodeData) -> np.ndarray:
    """``(T+1, 17)`` float32: HalfCheetah's observation, the state without the forward position."""
    return np.concatenate([episode.qpos[:, 1:], episode.qvel], axis=1).astype(np.float32)


@dataclasses.dataclass
class Transitions:
    state: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor
    next_state: torch.Tensor
    next_action: torch.Tensor
    terminated: torch.Tensor


def sarsa_transitions(episodes: list[EpisodeData]) -> Transitions:
    """The ``RolloutDataset`` transitions, on states: a truncated episode's last step has no next action."""
    parts: dict[str, list[np.ndarray]] = {f.name: [] for f in dataclasses.fields(Transitions)}
    for episode in episodes:
        states, actions = state_observations(episode), episode.actions
        terminated = bool(episode.terminations[-1])
        n = len(actions) if terminated else len(actions) - 1
        next_actions = np.concatenate([actions[1:], np.zeros_like(actions[:1])])[:n]
        parts["state"].append(states[:n])
        parts["action"].append(actions[:n])
        parts["reward"].append(episode.rewards[:n].astype(np.float32))
        parts["next_state"].append(states[1:n + 1])
        parts["next_action"].append(next_actions)
        parts["terminated"].append(episode.terminations[:n].astype(np.float32))
    return Transitions(**{name: torch.from_numpy(np.concatenate(arrays)) for name, arrays in parts.items()})


def monte_carlo_targets(episodes: list[EpisodeData], gamma: float, min_remaining: int) -> tuple[torch.Tensor, ...]:
    """States, actions and discounted returns of the steps at least ``min_remaining`` from a truncated end."""
    states, actions, returns = [], [], []
    for episode in episodes:
        keep = slice(None) if episode.terminations.any() else slice(0, max(len(episode.rewards) - min_remaining + 1, 0))
        states.append(state_observations(episode)[:-1][keep])
        actions.append(episode.actions[keep])
        returns.append(discounted_returns(episode.rewards, gamma)[keep].astype(np.float32))
    return tuple(torch.from_numpy(np.concatenate(a)) for a in (states, actions, returns))


class StateQ(nn.Module):
    """``Q(s, a) = offset + scale * MLP([standardized s, a])``, the pixel network's MLP and output scaling."""

    def __init__(self, states: torch.Tensor, action_dim: int, scale: float, offset: float, hidden: int = 256) -> None:
        super().__init__()
        self.register_buffer("mean", states.mean(0))
        self.register_buffer("std", states.std(0).clamp_min(1e-6))
        self.scale, self.offset = scale, offset
        self.mlp = nn.Sequential(nn.Linear(states.shape[1] + action_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([(state - self.mean) / self.std, action], dim=1)
        return self.offset + self.scale * self.mlp(x).squeeze(1)


def train_state_q(data: Transitions, config: QTrainConfig, steps: int) -> StateQ:
    rewards = data.reward.double()
    scale, offset = value_normalization(float(rewards.mean()), float(rewards.std()), config.gamma)
    q = StateQ(data.state, data.action.shape[1], scale, offset)
    target = make_target(q)
    optimizer = torch.optim.Adam(q.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(0, len(data.reward), size=config.batch_size))
        with torch.no_grad():
            next_value = target(data.next_state[i], data.next_action[i])
        loss = td_loss(q(data.state[i], data.action[i]), data.reward[i], next_value, data.terminated[i], config.gamma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        polyak_update(q, target, config.tau)
    return q.eval()


def fit_state_q_to_returns(episodes: list[EpisodeData], config: QTrainConfig, steps: int) -> StateQ:
    """Least-squares regression of ``Q(s, a)`` on the Monte-Carlo return, with the TD fit's optimizer."""
    states, actions, returns = monte_carlo_targets(episodes, config.gamma, config.horizon())
    q = StateQ(states, actions.shape[1], float(returns.std()), float(returns.mean()))
    optimizer = torch.optim.Adam(q.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    for _ in range(steps):
        i = torch.from_numpy(rng.integers(0, len(returns), size=config.batch_size))
        loss = ((q(states[i], actions[i]) - returns[i]) / q.scale).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return q.eval()


@torch.no_grad()
def check(q: StateQ, episodes: list[EpisodeData], config: QTrainConfig) -> QCheck:
    predicted = [q(torch.from_numpy(state_observations(e)[:-1]), torch.from_numpy(e.actions)).numpy() for e in episodes]
    return return_check(predicted, episodes, config.gamma, config.horizon())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, nargs="+", help="dataset directories (rlcyclegan collect)")
    parser.add_argument("--q-config", type=Path, default=EXPERIMENTS / "q_standard.yaml")
    parser.add_argument("--steps", type=int, nargs="+", help="gradient steps (default: the Q config's)")
    parser.add_argument("--test", type=Path, help="also check on all episodes of this dataset (for the data of its domain)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--fit", choices=["td", "mc"], nargs="+", default=["td"],
                        help="td: SARSA as train-q; mc: regression on the Monte-Carlo returns")
    args = parser.parse_args()
    torch.set_num_threads(1)
    test_domain = RolloutDataset(args.test).domain_name if args.test else None
    print("| data | fit | steps | seed | held-out on | Spearman | within episodes | steps checked |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    for path in args.data:
        for seed in args.seeds:
            config = load_config(QTrainConfig, args.q_config, [f"seed={seed}"])
            dataset = RolloutDataset(path)
            episodes = list(dataset.episodes())
            train, held_out = episodes[:-config.holdout_episodes], episodes[-config.holdout_episodes:]
            data = sarsa_transitions(train)
            for fit, steps in itertools.product(args.fit, args.steps or [config.steps]):
                torch.manual_seed(seed)
                q = train_state_q(data, config, steps) if fit == "td" else fit_state_q_to_returns(train, config, steps)
                checks = {f"last {len(held_out)} of {path.name}": check(q, held_out, config)}
                if args.test and test_domain == dataset.domain_name:
                    checks[args.test.name] = check(q, list(RolloutDataset(args.test).episodes()), config)
                for name, result in checks.items():
                    print(f"| {path} | {fit} | {steps} | {seed} | {name} | {result.spearman:.3f} | "
                          f"{result.spearman_within_episodes:.3f} | {result.steps} |", flush=True)


if __name__ == "__main__":
    main()
