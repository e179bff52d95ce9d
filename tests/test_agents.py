"""The sim-trained pixel policy: DAgger, the student's SB3-like interface, SB3 models in its place, bad input."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from rlcyclegan.agents import (
    PixelStudentPolicy,
    check_policy_fits,
    load_policy,
    load_teacher,
    state_observation,
)
from rlcyclegan.agents.dagger import (
    DAggerConfig,
    FrameStackBuffer,
    RolloutState,
    collect,
    imitation_loss,
    random_shift,
    train_dagger,
)
from rlcyclegan.agents.evaluation import evaluate_policy, student_t_quantile, summarize
from rlcyclegan.agents.teacher import evaluate_teacher
from rlcyclegan.envs import make_env

SIZE = 32
STEPS = 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class LinearTeacher:
    """A fixed state -> action map that records every state it labels."""

    def __init__(self, seed: int = 0) -> None:
        self.weights = np.random.default_rng(seed).normal(scale=0.3, size=(17, 6)).astype(np.float32)
        self.seen: list[np.ndarray] = []

    def act(self, states: np.ndarray) -> np.ndarray:
        self.seen.append(np.array(states))
        return np.tanh(states @ self.weights)


class RecordObservations(gym.Wrapper):
    """Keeps every observation the wrapped env returns, in order."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observations: list[np.ndarray] = []

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.observations.append(obs)
        return obs, info

    def step(self, action):
        obs, *rest = self.env.step(action)
        self.observations.append(obs)
        return (obs, *rest)


class RecordActions(gym.Wrapper):
    """Keeps every action the wrapped env executes, in order."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.actions: list[np.ndarray] = []

    def step(self, action):
        self.actions.append(np.array(action))
        return self.env.step(action)


def tiny_student(env: gym.Env, seed: int = 0) -> PixelStudentPolicy:
    torch.manual_seed(seed)
    return PixelStudentPolicy.for_spaces(env.observation_space, env.action_space, features_dim=32, hidden_dim=32,
                                         width=8)


def test_state_observation_is_the_state_env_observation() -> None:
    pixels, state = make_env("sim", image_size=SIZE), make_env("sim", obs_type="state")
    pixels.reset(seed=5)
    expected, _ = state.reset(seed=5)
    np.testing.assert_allclose(state_observation(pixels), expected, rtol=1e-6)
    action = np.full(6, 0.3, dtype=np.float32)
    pixels.step(action)
    expected, *_ = state.step(action)
    np.testing.assert_allclose(state_observation(pixels), expected, rtol=1e-6)


def test_random_shift_moves_each_stack_as_a_whole_within_the_pad() -> None:
    stacks = torch.randint(0, 256, (5, 6, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    assert random_shift(stacks, 0, np.random.default_rng(0)) is stacks
    shifted = random_shift(stacks, 2, np.random.default_rng(1))
    assert shifted.shape == stacks.shape and shifted.dtype == torch.uint8
    padded = torch.nn.functional.pad(stacks.float(), (2, 2, 2, 2), mode="replicate").to(torch.uint8)
    offsets = set()
    for sample, out in zip(padded, shifted, strict=True):
        # One offset in [-2, 2] per axis explains every channel of the stack at once.
        matches = [(dy, dx) for dy in range(5) for dx in range(5) if torch.equal(sample[:, dy:dy + 8, dx:dx + 8], out)]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 1  # samples get their own offsets


def test_dagger_aggregates_labelled_states_and_reduces_imitation_loss() -> None:
    env = RecordObservations(make_env("sim", image_size=SIZE, max_episode_steps=STEPS))
    teacher = LinearTeacher()
    student = tiny_student(env)
    config = DAggerConfig(iterations=2, steps_per_iteration=30, gradient_steps=60, batch_size=16, lr=2e-3,
                          holdout_fraction=0.0)
    buffer, history = train_dagger(student, teacher, env, config, seed=0)

    # Aggregation: every visited state, in order, labelled with the teacher's action for that very state.
    assert len(buffer) == 60 and [h.samples for h in history] == [30, 60]
    assert [h.beta for h in history] == [1.0, 0.5]
    np.testing.assert_allclose(buffer.labels[:60], np.tanh(np.stack(teacher.seen) @ teacher.weights), atol=1e-6)
    # The stacks rebuilt from single frames are exactly the env's observations (across episode resets:
    # 60 steps of 20-step episodes), and only the observations that were acted on are stored.
    acted_on = [obs for i, obs in enumerate(env.observations[:-1]) if (i + 1) % (STEPS + 1) != 0]
    stacks = buffer.stacks(np.arange(60)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(stacks, np.stack(acted_on))
    # Retraining lowered the imitation loss on the aggregate compared with the untrained student.
    untrained = tiny_student(env)
    all_indices = np.arange(60)
    assert imitation_loss(student, buffer, all_indices) < 0.7 * imitation_loss(untrained, buffer, all_indices)
    assert history[1].train_loss < history[0].onpolicy_loss


def test_dagger_noise_perturbs_the_executed_actions_and_leaves_the_labels_clean() -> None:
    def teacher_rollout(noise: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        env = RecordActions(make_env("sim", image_size=SIZE, max_episode_steps=STEPS))
        teacher, buffer = LinearTeacher(), FrameStackBuffer(30, SIZE, 3, 6)
        collect(env, tiny_student(env), teacher, 30, beta=1.0, action_noise=noise, buffer=buffer,
                rollout=RolloutState(), rng=np.random.default_rng(0), seed=0)
        teacher_actions = np.tanh(np.stack(teacher.seen) @ teacher.weights)
        return buffer.labels[:30], teacher_actions, np.stack(env.actions)

    _, clean_actions, executed = teacher_rollout(0.0)
    np.testing.assert_allclose(executed, clean_actions, atol=1e-6)  # no noise: the label is what runs
    labels, teacher_actions, executed = teacher_rollout(0.1)
    np.testing.assert_allclose(labels, teacher_actions, atol=1e-6)  # the visited states' clean labels
    assert not np.allclose(teacher_actions, clean_actions, atol=1e-3)  # the noise moved the cheetah
    assert np.all(np.abs(executed) <= 1.0)
    assert 0.07 < np.std(executed - teacher_actions) < 0.13


def test_evaluate_teacher_returns_each_episode_and_shows_where_it_ended() -> None:
    teacher, ends = LinearTeacher(), []
    returns = evaluate_teacher(teacher, "sim", 2, seed=7, max_episode_steps=STEPS,
                               on_episode_end=lambda env: ends.append(env.unwrapped.data.qpos.copy()))
    env = make_env("sim", obs_type="state", max_episode_steps=STEPS)
    for i in range(2):  # the same episodes by hand
        state, _ = env.reset(seed=7 + i)
        total, done = 0.0, False
        while not done:
            state, reward, terminated, truncated, _ = env.step(teacher.act(state))
            total, done = total + reward, terminated or truncated
        assert returns[i] == pytest.approx(total)
        np.testing.assert_allclose(ends[i], env.unwrapped.data.qpos)
    assert len(ends) == 2 and not np.allclose(ends[0], ends[1])


def test_dagger_ends_with_the_iterate_that_validated_best() -> None:
    env = make_env("sim", image_size=SIZE, max_episode_steps=STEPS)
    student = tiny_student(env)
    config = DAggerConfig(iterations=3, steps_per_iteration=10, gradient_steps=5, batch_size=8, lr=2e-3,
                          holdout_fraction=0.0, validation_episodes=1, validate_last=2)
    scores, candidates = iter([7.0, 3.0]), []

    def validate(candidate: PixelStudentPolicy) -> float:
        candidates.append({k: v.clone() for k, v in candidate.state_dict().items()})
        return next(scores)

    _, history = train_dagger(student, LinearTeacher(), env, config, seed=0, validate=validate)
    assert [h.validation_return for h in history] == [None, 7.0, 3.0]  # only the last two iterates are scored
    first, last = candidates
    assert not all(torch.equal(first[k], last[k]) for k in first)  # training went on after the best iterate
    assert all(torch.equal(v, first[k]) for k, v in student.state_dict().items())


def test_frame_stack_buffer_repeats_the_first_frame_at_episode_starts() -> None:
    buffer = FrameStackBuffer(capacity=4, image_size=2, frame_stack=3, action_dim=1)
    for value, new_episode in ((1, True), (2, False), (3, True), (4, False)):
        buffer.add(np.full((2, 2, 9), value, np.uint8), np.zeros(1), new_episode)
    firsts = buffer.stacks(np.arange(4))[:, ::3, 0, 0].numpy()  # (4, 3): one value per stacked frame
    np.testing.assert_array_equal(firsts, [[1, 1, 1], [1, 1, 2], [3, 3, 3], [3, 3, 4]])


def test_student_save_load_round_trip_gives_identical_actions(tmp_path) -> None:
    env = make_env("sim", image_size=SIZE)
    student = tiny_student(env, seed=3)
    obs, _ = env.reset(seed=0)
    batch = np.stack([obs, env.step(env.action_space.sample())[0]])
    student.save(tmp_path / "student.safetensors")
    loaded = load_policy(tmp_path / "student.safetensors", device="cpu")
    assert isinstance(loaded, PixelStudentPolicy)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], student.predict(obs)[0])
    actions, state = loaded.predict(batch)
    assert actions.shape == (2, 6) and state is None
    np.testing.assert_array_equal(actions, student.predict(batch)[0])
    assert loaded.observation_space == env.observation_space


def _small_extractor():
    """A features extractor for 32x32 frames (SB3's NatureCNN needs at least 36x36)."""
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from torch import nn

    class Small(BaseFeaturesExtractor):
        def __init__(self, observation_space: gym.spaces.Box, features_dim: int = 16) -> None:
            super().__init__(observation_space, features_dim)
            self.net = nn.Sequential(nn.Conv2d(observation_space.shape[0], 4, 4, stride=4), nn.ReLU(), nn.Flatten())
            with torch.no_grad():
                flat = self.net(torch.zeros(1, *observation_space.shape)).shape[1]
            self.linear = nn.Linear(flat, features_dim)

        def forward(self, observations: torch.Tensor) -> torch.Tensor:
            return self.linear(self.net(observations))

    return Small


@pytest.mark.parametrize("algo", ["PPO", "SAC"])
def test_sb3_cnn_policy_model_is_accepted_in_place_of_the_student(tmp_path, algo: str) -> None:
    import stable_baselines3 as sb3

    env = make_env("sim", image_size=SIZE, max_episode_steps=STEPS)
    kwargs = {"n_steps": 16, "batch_size": 16, "n_epochs": 1} if algo == "PPO" else {
        "buffer_size": 64, "learning_starts": 8, "batch_size": 8}
    model = getattr(sb3, algo)("CnnPolicy", env, seed=0, device="cpu",
                               policy_kwargs={"features_extractor_class": _small_extractor()}, **kwargs)
    model.learn(16)
    model.save(tmp_path / "model.zip")

    policy = load_policy(tmp_path / "model.zip", device="cpu")
    assert policy.observation_space.shape == env.observation_space.shape  # channels-last, like the env
    obs, _ = env.reset(seed=1)
    batch = np.stack([obs, obs])
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])
    assert policy.predict(batch, deterministic=True)[0].shape == (2, 6)
    returns = evaluate_policy(policy, "sim", episodes=1, max_episode_steps=5, seed=0)
    assert returns.shape == (1,) and np.isfinite(returns).all()


def test_policy_loading_rejects_the_wrong_kind_of_file(tmp_path) -> None:
    from stable_baselines3 import PPO

    from rlcyclegan.agents.q_network import PixelQNetwork, save_q

    text = tmp_path / "notes.txt"
    text.write_text("not a policy")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_policy(text)
    save_q(PixelQNetwork(3, 6, SIZE, features_dim=8, hidden_dim=8, width=4), tmp_path / "q.safetensors")
    with pytest.raises(ValueError, match="not a pixel student"):
        load_policy(tmp_path / "q.safetensors")
    state_model = PPO("MlpPolicy", make_env("sim", obs_type="state"), n_steps=16, batch_size=16, device="cpu")
    state_model.save(tmp_path / "teacher.zip")
    with pytest.raises(ValueError, match=r"not uint8 pixel frames"):
        load_policy(tmp_path / "teacher.zip")
    with pytest.raises(FileNotFoundError, match="no policy file"):
        load_policy(tmp_path / "missing.safetensors")


def test_observation_shape_mismatch_is_a_one_line_error(tmp_path) -> None:
    student = tiny_student(make_env("sim", image_size=SIZE))
    other = make_env("sim", image_size=40, frame_stack=2)
    with pytest.raises(ValueError, match=r"policy expects observations of shape \(32, 32, 9\) but .* \(40, 40, 6\)"):
        check_policy_fits(student, other.observation_space)
    with pytest.raises(ValueError, match=r"observation shape \(40, 40, 6\) does not match"):
        student.predict(other.reset(seed=0)[0])


def test_missing_teacher_is_a_one_line_error(tmp_path) -> None:
    from rlcyclegan.cli import main

    with pytest.raises(FileNotFoundError, match="no teacher at"):
        load_teacher(tmp_path / "teacher.zip")
    assert main(["train-policy", "--teacher", str(tmp_path / "teacher.zip"), "--out", str(tmp_path / "run")]) == 2


def test_teacher_save_load_round_trip_keeps_normalization(tmp_path) -> None:
    from rlcyclegan.agents.teacher import TeacherConfig, normalizer_path, train_teacher

    config = TeacherConfig(total_timesteps=128, eval_every=10**6,
                           algo_kwargs={"n_steps": 64, "batch_size": 32, "n_epochs": 1})
    teacher = train_teacher(config, "sim", seed=0, device="cpu")
    teacher.save(tmp_path / "teacher.zip")
    assert normalizer_path(tmp_path / "teacher.zip").is_file()
    loaded = load_teacher(tmp_path / "teacher.zip", device="cpu")
    states = np.random.default_rng(0).normal(size=(4, 17)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(states), teacher.act(states))
    assert not np.allclose(loaded.normalizer(states), states)  # the statistics came back, not identity


def test_action_noise_perturbs_clips_and_is_seeded() -> None:
    from rlcyclegan.agents.teacher import ActionNoise

    env = make_env("sim", obs_type="state")
    first, second = ActionNoise(env, 0.5, seed=1), ActionNoise(env, 0.5, seed=1)
    action = np.full(6, 0.9, dtype=np.float32)
    noisy = first.action(action)
    np.testing.assert_array_equal(noisy, second.action(action))
    assert not np.allclose(noisy, action) and noisy.max() <= 1.0 and noisy.dtype == np.float32
    np.testing.assert_array_equal(ActionNoise(env, 0.0).action(action), action)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        ActionNoise(env, -0.1)


def test_summary_interval_uses_student_t() -> None:
    assert student_t_quantile(0.975, 9) == pytest.approx(2.2622, abs=1e-4)
    assert student_t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    summary = summarize(np.array([1.0, 2.0, 3.0, 4.0]))
    half = 3.1824 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert summary.mean == 2.5 and summary.ci95 == pytest.approx((2.5 - half, 2.5 + half), abs=1e-3)
    with pytest.raises(ValueError, match="no returns"):
        summarize(np.array([]))


def test_train_and_eval_policy_commands_end_to_end(tmp_path, capsys) -> None:
    from rlcyclegan.cli import main

    overrides = [
        "image_size=32", "max_episode_steps=20", "eval_episodes=2", "teacher.total_timesteps=128",
        "teacher.eval_every=64", "teacher.eval_episodes=1", "teacher.max_episode_steps=20",
        "teacher.algo_kwargs={n_steps: 64, batch_size: 32, n_epochs: 1}", "dagger.iterations=2",
        "dagger.steps_per_iteration=25", "dagger.gradient_steps=5", "dagger.batch_size=8",
        "dagger.validation_episodes=1", "dagger.validate_last=2",
        "student.width=4", "student.features_dim=16", "student.hidden_dim=16",
    ]
    run = tmp_path / "run"
    assert main(["train-policy", "--budget", "quick", "--out", str(run), "--no-progress", "--device", "cpu",
                 *overrides]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["dagger_samples"] == 50 and len(summary["student_returns"]) == 2
    validation = [it["validation_return"] for it in summary["dagger"]]
    assert all(math.isfinite(v) for v in validation)
    assert summary["dagger_selected_iteration"] == int(np.argmax(validation))
    assert {p.name for p in run.iterdir()} >= {"teacher.zip", "teacher.obs_norm.json", "student.safetensors",
                                                "config.yaml", "summary.json"}
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    capsys.readouterr()
    assert main(["eval-policy", "--policy", str(run / "student.safetensors"), "--domain", "real", "--episodes", "2",
                 "--max-steps", "10", "--no-progress"]) == 0
    assert "95% CI" in capsys.readouterr().out
    # The state teacher is not a pixel policy: one line, exit code 2.
    assert main(["eval-policy", "--policy", str(run / "teacher.zip"), "--episodes", "1", "--no-progress"]) == 2
    assert "not uint8 pixel frames" in capsys.readouterr().err
