"""Pixel Q-networks: TD learning against analytic values, save/load, the Monte-Carlo rank check, the commands."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlcyclegan.agents.q_network import PixelQNetwork, load_q, save_q
from rlcyclegan.agents.q_training import (
    discounted_returns,
    episode_bootstrap_interval,
    episode_stacks,
    q_return_check,
    q_values,
    spearman,
    train_q,
    truncation_horizon,
)
from rlcyclegan.data.batches import TransitionBatch

CHAIN_GAMMA = 0.9
CHAIN_LENGTH = 4
IMAGE = 8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def chain_frames(states: np.ndarray) -> torch.Tensor:
    """State ``s`` of the chain drawn as an 8x8 frame stack whose row ``2s`` is white: ``(B, 3, 8, 8)`` uint8."""
    frames = np.zeros((len(states), 3, IMAGE, IMAGE), dtype=np.uint8)
    frames[np.arange(len(states)), :, 2 * states, :] = 255
    return torch.from_numpy(frames)


def chain_batch(batch_size: int, rng: np.random.Generator) -> TransitionBatch:
    """The chain s0 -> s1 -> s2 -> s3 -> end with reward s + 1 on leaving state s; s3 terminates.

    The action is constant, so Q(s, a) = V(s) = sum_i gamma^i (s + 1 + i) over the remaining states.
    """
    states = rng.integers(0, CHAIN_LENGTH, size=batch_size)
    nxt = np.minimum(states + 1, CHAIN_LENGTH - 1)
    action = torch.zeros(batch_size, 1)
    return TransitionBatch(
        obs=chain_frames(states), action=action, reward=torch.from_numpy((states + 1).astype(np.float32)),
        next_obs=chain_frames(nxt), next_action=action,
        terminated=torch.from_numpy((states == CHAIN_LENGTH - 1).astype(np.float32)),
    )


def analytic_chain_values() -> np.ndarray:
    values = np.zeros(CHAIN_LENGTH)
    for s in range(CHAIN_LENGTH - 1, -1, -1):
        values[s] = (s + 1) + (CHAIN_GAMMA * values[s + 1] if s + 1 < CHAIN_LENGTH else 0.0)
    return values  # [1 + .9*(2 + .9*(3 + .9*4)), ...] = [8.146, 7.94, 6.6, 4.0]


def tiny_q(frame_stack: int = 1, action_dim: int = 1, image_size: int = IMAGE, **kwargs: float) -> PixelQNetwork:
    torch.manual_seed(0)
    return PixelQNetwork(frame_stack, action_dim, image_size, features_dim=16, hidden_dim=32, width=8, **kwargs)


def test_td_learning_on_a_chain_mdp_converges_to_the_analytic_values() -> None:
    q = tiny_q()
    expected = analytic_chain_values()
    states = np.arange(CHAIN_LENGTH)
    with torch.no_grad():
        before = q_values(q, chain_frames(states), torch.zeros(CHAIN_LENGTH, 1)).numpy()
    assert np.abs(before - expected).max() > 3.0  # the check below is not met by chance
    losses: list[float] = []
    train_q(q, chain_batch, steps=300, gamma=CHAIN_GAMMA, batch_size=32, lr=3e-3, tau=0.2, seed=0,
            on_step=lambda _, loss: losses.append(loss))
    with torch.no_grad():
        learned = q_values(q, chain_frames(states), torch.zeros(CHAIN_LENGTH, 1)).numpy()
    np.testing.assert_allclose(learned, expected, atol=0.05)
    assert np.mean(losses[-50:]) < 1e-3 * np.mean(losses[:50])


def test_q_save_load_round_trip_gives_identical_values(tmp_path) -> None:
    q = tiny_q(frame_stack=3, action_dim=6, image_size=32, value_scale=50.0, value_offset=-20.0)
    frames = torch.randint(0, 256, (4, 9, 32, 32), dtype=torch.uint8)
    actions = torch.rand(4, 6) * 2 - 1
    save_q(q, tmp_path / "q.safetensors", gamma=0.99, domain="sim")
    loaded = load_q(tmp_path / "q.safetensors")
    assert loaded.config == q.config and loaded.value_scale == 50.0 and loaded.metadata == {"gamma": 0.99, "domain": "sim"}
    with torch.no_grad():
        torch.testing.assert_close(q_values(loaded.eval(), frames, actions), q_values(q.eval(), frames, actions),
                                   rtol=0, atol=0)
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_q(tmp_path / "bad.safetensors")


def test_discounted_returns_and_spearman_match_hand_computed_values() -> None:
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])
    assert truncation_horizon(0.99) == 299 and 0.99**299 < 0.05 < 0.99**298
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # Ties get average ranks: x ranks [1, 2.5, 2.5, 4] vs y ranks [1, 2, 3, 4] -> r = 4.5 / sqrt(4.5 * 5).
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(4.5 / np.sqrt(4.5 * 5))


def test_episode_stacks_repeat_the_first_frame_like_the_env() -> None:
    frames = np.arange(4, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)  # (4, 2, 2, 3)
    stacks = episode_stacks(frames, frame_stack=3)
    assert stacks.shape == (4, 9, 2, 2)
    np.testing.assert_array_equal(stacks[:, ::3, 0, 0], [[0, 0, 0], [0, 0, 1], [0, 1, 2], [1, 2, 3]])


class _Episode:
    """The fields of ``EpisodeData`` that the check reads."""

    def __init__(self, rewards: np.ndarray) -> None:
        self.rewards = rewards
        self.actions = np.zeros((len(rewards), 1), np.float32)
        self.terminations = np.zeros(len(rewards), bool)
        # Frame t shows the episode's step count as a row, so a Q that reads it can rank the steps.
        self.frames = np.stack([np.full((IMAGE, IMAGE, 3), t, np.uint8) for t in range(len(rewards) + 1)])


class _ReturnOracle(torch.nn.Module):
    """A 'Q-network' that outputs the true discounted return from the step encoded in its frame."""

    def __init__(self, returns: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("returns", torch.as_tensor(returns, dtype=torch.float32))

    def forward(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        step = ((frames[:, -1, 0, 0] + 1) * 127.5).round().long()
        return self.returns[step]


def test_q_return_check_rewards_the_right_ranking_and_skips_truncated_tails() -> None:
    rewards = np.linspace(3.0, 1.0, 30)
    episode = _Episode(rewards)
    truth = discounted_returns(rewards, 0.9)
    perfect = q_return_check(_ReturnOracle(truth), [episode], 0.9, min_remaining=10, frame_stack=1)
    assert perfect.spearman == pytest.approx(1.0) and perfect.steps == 21
    reversed_q = q_return_check(_ReturnOracle(truth[::-1].copy()), [episode], 0.9, min_remaining=0, frame_stack=1)
    assert reversed_q.spearman == pytest.approx(-1.0)


def test_within_episode_correlation_ignores_how_far_apart_the_episodes_are() -> None:
    # Two episodes whose returns fall over time, the second one 100 higher throughout. A Q that reads the
    # step but not the episode gets each episode's order right and their relative level wrong.
    first = np.linspace(3.0, 1.0, 20)
    truth = discounted_returns(first, 0.9)
    check = q_return_check(_ReturnOracle(truth), [_Episode(first), _Episode(first + 100.0)], 0.9, min_remaining=0,
                           frame_stack=1)
    assert check.spearman_within_episodes == pytest.approx(1.0)
    assert check.spearman < 0.9  # pooled, the second episode's much larger returns are ranked with the first's


def test_bootstrap_interval_resamples_whole_episodes() -> None:
    rng = np.random.default_rng(0)
    noisy = [rng.normal(size=50) for _ in range(3)]
    truth = [q + rng.normal(size=50) for q in noisy]
    # One episode: every resample is that episode, so the interval is its own correlation (resampling steps
    # would spread it).
    low, high = episode_bootstrap_interval(noisy[:1], truth[:1], resamples=50)
    assert low == pytest.approx(spearman(noisy[0], truth[0])) and high == pytest.approx(low)
    # Episodes ranked right inside but at the wrong levels: which ones are drawn moves the pooled figure.
    steps = np.arange(10.0)
    low, high = episode_bootstrap_interval([steps, steps + 5.0, steps + 10.0], [steps + 20.0, steps + 10.0, steps],
                                           resamples=200)
    pooled = spearman(np.concatenate([steps, steps + 5, steps + 10]), np.concatenate([steps + 20, steps + 10, steps]))
    assert low <= pooled <= high and high - low > 0.5
    assert episode_bootstrap_interval([steps[:1]], [steps[:1]]) == pytest.approx((np.nan, np.nan), nan_ok=True)


def test_train_q_and_eval_q_commands_on_a_tiny_dataset(tmp_path, capsys) -> None:
    import json

    from rlcyclegan.agents.q_training import value_normalization
    from rlcyclegan.cli import main
    from rlcyclegan.data.collect import CollectConfig, collect
    from rlcyclegan.data.loaders import RolloutDataset

    data, check_data = tmp_path / "data", tmp_path / "check"
    collect(CollectConfig(out=data, domain="sim", episodes=3, workers=1, image_size=32, max_steps=12), progress=False)
    collect(CollectConfig(out=check_data, domain="sim", episodes=2, workers=1, image_size=32, max_steps=20,
                          seed=100), progress=False)
    out = tmp_path / "q"
    q_args = ["--no-progress", "--device", "cpu", "steps=5", "batch_size=8", "holdout_episodes=1", "min_remaining=2",
              "q={features_dim: 8, hidden_dim: 8, width: 4}"]
    assert main(["train-q", "--data", str(data), "--out", str(out), *q_args, f"check_data={check_data}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["check_data"]["episodes"] == 2 and summary["check_data"]["steps"] == 2 * 19
    assert "(" + str(check_data) + ")" in capsys.readouterr().out
    real = tmp_path / "real"
    collect(CollectConfig(out=real, domain="real", episodes=1, workers=1, image_size=32, max_steps=5), progress=False)
    assert main(["train-q", "--data", str(data), "--out", str(tmp_path / "q2"), *q_args, f"check_data={real}"]) == 2
    assert "check_data" in capsys.readouterr().err and not (tmp_path / "q2").exists()
    rewards = np.concatenate([e.rewards for e in RolloutDataset(data).episodes()][:2])
    q = load_q(out / "q.safetensors")
    assert (q.value_scale, q.value_offset) == pytest.approx(value_normalization(rewards.mean(), rewards.std(), 0.99))
    assert summary["episodes"] == 1 and summary["steps"] == 11 and -1.0 <= summary["spearman"] <= 1.0
    assert summary["train_transitions"] == 2 * 11  # two training episodes of 12 steps, the last step has no a'
    capsys.readouterr()
    assert main(["eval-q", "--q", str(out / "q.safetensors"), "--data", str(data), "--episodes", "2",
                 "--min-remaining", "2"]) == 0
    assert "Spearman" in capsys.readouterr().out
    assert main(["eval-q", "--q", str(out / "missing.safetensors"), "--data", str(data)]) == 2
