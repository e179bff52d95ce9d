"""``rlcyclegan collect`` with real MuJoCo rendering: data equals a replay, determinism, resume after SIGKILL."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from types import SimpleNamespace

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest

from rlcyclegan.cli import main
from rlcyclegan.config import ConfigError
from rlcyclegan.data.collect import CollectConfig, collect, make_actor
from rlcyclegan.data.loaders import RolloutDataset
from rlcyclegan.data.storage import list_shards, read_episode

pytestmark = pytest.mark.render

SIZE = 16
TINY = CollectConfig(episodes=3, workers=1, image_size=SIZE, max_steps=12, seed=7)


def sine_policy(obs: np.ndarray) -> np.ndarray:
    """A deterministic, picklable policy that depends on the pixels it sees."""
    return np.sin(obs.mean() / 10.0 + np.arange(6)).astype(np.float32)


def assert_same_episodes(a, b) -> None:
    shards_a, shards_b = list_shards(a), list_shards(b)
    assert list(shards_a) == list(shards_b)
    for i in shards_a:
        ea, eb = read_episode(shards_a[i], i), read_episode(shards_b[i], i)
        for name in ("frames", "actions", "rewards", "terminations", "truncations", "qpos", "qvel"):
            np.testing.assert_array_equal(getattr(ea, name), getattr(eb, name), err_msg=f"episode {i} {name}")


def test_stored_data_equals_an_independent_replay(tmp_path):
    """Frames, rewards and states on disk are what the env produces for the stored actions; stacks match the env's."""
    from rlcyclegan.envs import make_env

    config = replace(TINY, out=tmp_path / "ds", noise=0.3, frame_stack=3)
    result = collect(config, policy=sine_policy, progress=False)
    assert (result.collected, result.total, result.transitions) == (3, 3, 36)
    dataset = RolloutDataset(config.out, frame_stack=3)
    env = make_env("sim", image_size=SIZE, frame_stack=3, max_episode_steps=config.max_steps)
    start = 0
    for episode in dataset.episodes():
        obs, info = env.reset(seed=config.seed + episode.episode_id)
        stacks, frames, rewards, qpos = [obs], [obs[..., -3:]], [], [info["qpos"]]
        for action in episode.actions:
            obs, reward, terminated, truncated, info = env.step(action)
            stacks.append(obs), frames.append(obs[..., -3:]), rewards.append(reward), qpos.append(info["qpos"])
        assert truncated and not terminated
        np.testing.assert_array_equal(episode.frames, np.stack(frames))
        np.testing.assert_array_equal(episode.rewards, np.array(rewards))
        np.testing.assert_array_equal(episode.qpos, np.stack(qpos))
        assert np.all(np.abs(episode.actions) <= 1.0)
        # The loader's stacks are the env's own observations, transposed to (3k, H, W).
        steps = len(episode.actions) - 1  # the last, truncated step has no next action and is not a transition
        batch = dataset.get_batch(np.arange(start, start + steps))
        np.testing.assert_array_equal(batch.obs.numpy(), np.stack(stacks[:steps]).transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(batch.next_obs.numpy(), np.stack(stacks[1: steps + 1]).transpose(0, 3, 1, 2))
        start += steps
    env.close()
    assert start == len(dataset)


def test_two_workers_write_the_same_data_as_one(tmp_path):
    one = collect(replace(TINY, out=tmp_path / "one"), progress=False)
    two = collect(replace(TINY, out=tmp_path / "two", workers=2), progress=False)
    assert one.total == two.total == 3
    assert_same_episodes(tmp_path / "one", tmp_path / "two")


def test_resume_after_sigkill_gives_the_uninterrupted_dataset(tmp_path):
    args = ["collect", "--out", str(tmp_path / "killed"), "--episodes", "8", "--max-steps", "40", "--image-size",
            str(SIZE), "--workers", "1", "--seed", "3"]
    process = subprocess.Popen([sys.executable, "-m", "rlcyclegan.cli", *args], stderr=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "killed").glob("episode_*.h5")) and time.monotonic() < deadline:
        assert process.poll() is None, "collection ended before it could be killed"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    survivors = list_shards(tmp_path / "killed")
    assert 1 <= len(survivors) < 8, "the kill should land mid-way"
    # What the kill may leave besides complete shards: a half-written one, which readers ignore.
    (tmp_path / "killed" / "episode_000007.h5.99999.tmp").write_bytes(b"\x89HDF half")
    partial = RolloutDataset(tmp_path / "killed")
    assert partial.num_episodes == len(survivors)
    assert np.all(partial.episode_lengths == 40)

    assert main(args) == 0  # the same command resumes
    uninterrupted = collect(CollectConfig(out=tmp_path / "clean", episodes=8, max_steps=40, image_size=SIZE,
                                          workers=1, seed=3), progress=False)
    assert uninterrupted.total == 8
    assert list(list_shards(tmp_path / "killed")) == list(range(8))
    assert not list((tmp_path / "killed").glob("*.tmp"))
    assert_same_episodes(tmp_path / "killed", tmp_path / "clean")
    assert main(args) == 0  # and a third run finds nothing to do
    assert len(list_shards(tmp_path / "killed")) == 8


def test_resume_with_other_settings_is_refused_and_keeps_the_data(tmp_path):
    config = replace(TINY, out=tmp_path / "ds", episodes=2)
    collect(config, progress=False)
    before = {p.name: p.read_bytes() for p in config.out.iterdir()}
    for change in ({"seed": 8}, {"image_size": 24}, {"domain": "real"}, {"noise": 0.1}, {"max_steps": 13}):
        with pytest.raises(ConfigError, match="collected with different"):
            collect(replace(config, episodes=3, **change), progress=False)
    assert {p.name: p.read_bytes() for p in config.out.iterdir()} == before


def test_more_episodes_appends_without_duplicates(tmp_path):
    collect(replace(TINY, out=tmp_path / "ds", episodes=2), progress=False)
    first = read_episode(list_shards(tmp_path / "ds")[1], 1)
    result = collect(replace(TINY, out=tmp_path / "ds", episodes=3), progress=False)
    assert (result.collected, result.total) == (1, 3)
    np.testing.assert_array_equal(read_episode(list_shards(tmp_path / "ds")[1], 1).frames, first.frames)


def test_a_second_concurrent_collection_is_refused(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another `rlcyclegan collect` is writing"):
            collect(replace(TINY, out=out), progress=False)
    assert [p.name for p in out.iterdir()] == [".lock"]


def test_randomized_domain_stores_each_episode_spec(tmp_path):
    collect(replace(TINY, out=tmp_path / "ds", domain="randomized", episodes=2, max_steps=3), progress=False)
    specs = [read_episode(path, i).domain_spec for i, path in list_shards(tmp_path / "ds").items()]
    assert all(spec and spec["name"] == "randomized" for spec in specs)
    assert specs[0]["visual"] != specs[1]["visual"]


def test_random_policy_is_seeded_per_episode_and_noise_is_clipped():
    env = SimpleNamespace(action_space=gym.spaces.Box(-1.0, 1.0, (6,), np.float32))
    obs = np.zeros((SIZE, SIZE, 9), dtype=np.uint8)
    start = make_actor(TINY, None, env)
    draws = [start(np.random.default_rng([7, 0]))(obs) for _ in range(2)]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], start(np.random.default_rng([7, 1]))(obs))
    noisy = make_actor(replace(TINY, noise=5.0), lambda o: np.full(6, 0.9), env)
    actions = np.stack([noisy(np.random.default_rng(i))(obs) for i in range(50)])
    assert actions.min() == -1.0 and actions.max() == 1.0 and actions.dtype == np.float32


def test_noise_range_draws_one_std_per_episode():
    env = SimpleNamespace(action_space=gym.spaces.Box(-100.0, 100.0, (6,), np.float32))
    obs = np.zeros((SIZE, SIZE, 9), dtype=np.uint8)
    start = make_actor(replace(TINY, noise=0.1, noise_max=2.0), lambda o: np.zeros(6), env)
    stds = []
    for episode in range(6):
        act = start(np.random.default_rng([7, episode]))
        stds.append(np.stack([act(obs) for _ in range(400)]).std())
    assert 0.05 < min(stds) and max(stds) < 2.2 and max(stds) > 2 * min(stds)
    with pytest.raises(ConfigError, match="noise_max"):
        replace(TINY, noise=0.5, noise_max=0.1)


def test_state_teacher_drives_collection_from_the_true_state(tmp_path):
    from stable_baselines3 import PPO

    from rlcyclegan.agents.teacher import load_teacher

    PPO("MlpPolicy", gym.make("HalfCheetah-v5"), seed=0, device="cpu").save(tmp_path / "teacher.zip")
    collect(replace(TINY, out=tmp_path / "ds", policy=str(tmp_path / "teacher.zip"), episodes=1), progress=False)
    episode = read_episode(list_shards(tmp_path / "ds")[0], 0)
    states = np.concatenate([episode.qpos[:-1, 1:], episode.qvel[:-1]], axis=1)  # what the teacher saw
    expected = np.clip(load_teacher(tmp_path / "teacher.zip", device="cpu").act(states), -1, 1)
    np.testing.assert_allclose(episode.actions, expected, atol=1e-5)
    assert RolloutDataset(tmp_path / "ds", 3).metadata["collection"]["policy"]["privileged"] is True


def test_unpicklable_callable_with_workers_is_refused(tmp_path):
    policy = lambda obs: np.zeros(6)  # noqa: E731 - a local lambda cannot be pickled
    with pytest.raises(ConfigError, match="workers=1"):
        collect(replace(TINY, out=tmp_path / "ds", workers=2), policy=policy, progress=False)


def test_config_range_checks():
    for bad in ({"episodes": 0}, {"noise": -1.0}, {"workers": 0}, {"image_size": 4}, {"max_steps": 0},
                {"seed": -1}, {"compression": "zip"}):
        with pytest.raises(ConfigError):
            CollectConfig(**bad)


def test_cli_collect_info_grid_and_one_line_errors(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["collect", "--out", str(out), "--domain", "real", "--episodes", "2", "--max-steps", "6",
                 "--image-size", str(SIZE), "--workers", "1"]) == 0
    assert main(["dataset", "info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "domain       real (fixed)" in info and "episodes     2 (ids 0..1), 12 steps" in info
    assert main(["dataset", "grid", str(out), "--out", str(tmp_path / "grid.png"), "--samples", "6",
                 "--columns", "3", "--scale", "1"]) == 0
    grid = iio.imread(tmp_path / "grid.png")
    assert grid.shape == (2 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2, 3)
    capsys.readouterr()
    assert main(["dataset", "info", str(tmp_path / "missing")]) == 2
    assert main(["collect", "--out", str(tmp_path / "new"), "--domain", "nowhere"]) == 2
    assert main(["collect", "--out", str(out), "--seed", "1", "--image-size", str(SIZE)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("rlcyclegan ") for line in errors)
    assert not (tmp_path / "new").exists()
