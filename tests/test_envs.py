"""The HalfCheetah domains: API conformance, determinism, paired rendering, segmentation, specs."""

from __future__ import annotations

import dataclasses
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from rlcyclegan.config import ConfigError
from rlcyclegan.envs import (
    NAMED_ENV_IDS,
    DomainSpec,
    PairedRenderer,
    RandomizedDomain,
    RenderSettings,
    load_domain,
    make_env,
    save_domain,
)
from rlcyclegan.envs.model import SEGMENTATION_CLASSES

pytestmark = pytest.mark.render
SIZE = 32


def rollout_frames(env: gym.Env, seed: int, steps: int) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames = [obs]
    for _ in range(steps):
        obs, *_ = env.step(env.action_space.sample())
        frames.append(obs)
    return frames


@pytest.mark.parametrize("env_id", sorted(NAMED_ENV_IDS.values()))
def test_registered_domains_pass_gymnasium_and_sb3_checkers(env_id: str) -> None:
    env = gym.make(env_id, image_size=SIZE)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    obs, info = env.reset(seed=0)
    assert obs.shape == (SIZE, SIZE, 9) and obs.dtype == np.uint8
    assert info["qpos"].shape == (9,) and info["qvel"].shape == (9,)
    env.close()


def test_sim_domain_has_stock_half_cheetah_dynamics_and_reward() -> None:
    ours = make_env("sim", obs_type="state")
    stock = gym.make("HalfCheetah-v5")
    obs_a, _ = ours.reset(seed=3)
    obs_b, _ = stock.reset(seed=3)
    np.testing.assert_allclose(obs_a, obs_b)
    rng = np.random.default_rng(0)
    for _ in range(50):
        action = rng.uniform(-1, 1, 6).astype(np.float32)
        obs_a, rew_a, term_a, trunc_a, _ = ours.step(action)
        obs_b, rew_b, term_b, trunc_b, _ = stock.step(action)
        np.testing.assert_allclose(obs_a, obs_b, rtol=1e-6, atol=1e-8)
        assert rew_a == pytest.approx(rew_b, rel=1e-6, abs=1e-8)
        assert (term_a, trunc_a) == (term_b, trunc_b)


def test_same_seed_same_frames_and_domains_differ() -> None:
    first = rollout_frames(make_env("sim", image_size=SIZE), seed=7, steps=5)
    second = rollout_frames(make_env("sim", image_size=SIZE), seed=7, steps=5)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    real = rollout_frames(make_env("real", image_size=SIZE), seed=7, steps=5)
    assert np.abs(real[-1].astype(int) - first[-1].astype(int)).mean() > 20


def test_frame_stack_shifts_oldest_first() -> None:
    env = make_env("sim", image_size=SIZE, frame_stack=3)
    obs0, _ = env.reset(seed=1)
    np.testing.assert_array_equal(obs0[..., 0:3], obs0[..., 6:9])  # reset fills the stack with one frame
    obs1, *_ = env.step(env.action_space.sample())
    np.testing.assert_array_equal(obs1[..., 0:6], obs0[..., 3:9])
    assert not np.array_equal(obs1[..., 6:9], obs0[..., 6:9])


def test_paired_rendering_reproduces_the_envs_own_frame() -> None:
    env = make_env("real", image_size=SIZE)
    env.reset(seed=2)
    for _ in range(10):
        obs, _, _, _, info = env.step(env.action_space.sample())
    paired = PairedRenderer(load_domain("real"), image_size=SIZE)
    np.testing.assert_array_equal(paired.render(info["qpos"]), obs[..., -3:])
    other = PairedRenderer(load_domain("sim"), image_size=SIZE).render(info["qpos"])
    assert not np.array_equal(other, obs[..., -3:])
    with pytest.raises(ValueError, match="qpos must have shape"):
        paired.render(np.zeros(3))


def test_segmentation_labels_exactly_the_cheetah_pixels_and_the_floor() -> None:
    settings = RenderSettings(reflection=False)
    spec = load_domain("sim")
    assert isinstance(spec, DomainSpec)
    recoloured = dataclasses.replace(
        spec, visual=dataclasses.replace(spec.visual, body_colors=load_domain("real").visual.body_colors)
    )
    qpos = np.array([0.0, 0.0, 0.1, 0.3, -0.4, 0.2, -0.3, 0.4, -0.2])
    renderer = PairedRenderer(spec, SIZE * 2, settings)
    classes = renderer.segment(qpos)
    body_changed = np.any(renderer.render(qpos) != PairedRenderer(recoloured, SIZE * 2, settings).render(qpos), axis=-1)
    body_labelled = classes >= SEGMENTATION_CLASSES.index("torso")
    # Pixels whose colour follows the body colours are exactly the pixels labelled as body parts.
    assert (body_changed == body_labelled).mean() > 0.995
    present = {SEGMENTATION_CLASSES[c] for c in np.unique(classes)}
    assert {"background", "floor", "torso", "thighs", "shins", "feet"} <= present


def test_floor_phase_jitter_moves_only_the_floor_and_keeps_the_states() -> None:
    plain = make_env("sim", image_size=SIZE)
    jittered = make_env("sim_floor_jitter", image_size=SIZE)
    plain_frames = rollout_frames(plain, seed=5, steps=4)
    jittered_frames = rollout_frames(jittered, seed=5, steps=4)
    np.testing.assert_array_equal(plain.unwrapped.data.qpos, jittered.unwrapped.data.qpos)  # same states
    classes = jittered.unwrapped.segment()
    floor = classes == SEGMENTATION_CLASSES.index("floor")
    newest_plain, newest_jittered = plain_frames[-1][..., -3:], jittered_frames[-1][..., -3:]
    # The cheetah and the sky are drawn as without jitter; the floor's pattern has moved.
    np.testing.assert_array_equal(newest_plain[~floor], newest_jittered[~floor])
    assert np.abs(newest_plain[floor].astype(int) - newest_jittered[floor]).mean() > 5
    # and it moves anew in every frame: consecutive floors differ far more than without jitter
    def floor_change(frames: list[np.ndarray]) -> float:
        return float(np.mean([np.abs(a[..., -3:][floor].astype(int) - b[..., -3:][floor]).mean()
                              for a, b in zip(frames[1:-1], frames[2:], strict=True)]))
    assert floor_change(jittered_frames) > 3 * floor_change(plain_frames)
    np.testing.assert_array_equal(rollout_frames(jittered, seed=5, steps=4)[-1], jittered_frames[-1])  # seeded


def test_randomized_domain_is_seeded_and_varies() -> None:
    env = make_env("randomized", image_size=SIZE)
    env.reset(seed=11)
    spec_a = env.unwrapped.current_spec
    env.reset(seed=11)
    assert env.unwrapped.current_spec == spec_a
    env.reset()
    assert env.unwrapped.current_spec != spec_a
    assert isinstance(env.unwrapped.domain, RandomizedDomain)


def test_pickled_env_keeps_its_domain() -> None:
    env = make_env("real", image_size=SIZE).unwrapped
    clone = pickle.loads(pickle.dumps(env))
    obs_a, _ = env.reset(seed=0)
    obs_b, _ = clone.reset(seed=0)
    np.testing.assert_array_equal(obs_a, obs_b)


@pytest.mark.parametrize("name", ["sim", "real", "randomized", "sim_floor_jitter"])
def test_spec_files_round_trip(name: str, tmp_path) -> None:
    domain = load_domain(name)
    save_domain(domain, tmp_path / "spec.yaml")
    assert load_domain(tmp_path / "spec.yaml") == domain


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: fixed\nvisual: {checker_size: -1}\n", "checker_size must be positive"),
        ("kind: fixed\nvisual: {floor_rgb1: [2, 0, 0]}\n", "floor_rgb1 must have three values"),
        ("kind: fixed\nphysical: {bogus: 1}\n", "unknown key 'physical.bogus'"),
        ("kind: other\n", "kind must be 'fixed' or 'randomized'"),
        ("kind: randomized\nranges: {visual.nope: [0, 1]}\n", "names no scalar field"),
        ("- a\n- b\n", "must hold a mapping"),
    ],
)
def test_bad_spec_files_are_rejected_with_a_clear_message(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_domain(path)


def test_unknown_domain_and_missing_file() -> None:
    with pytest.raises(ConfigError, match="unknown domain 'moon'"):
        load_domain("moon")
    with pytest.raises(ConfigError, match="config file not found"):
        load_domain("missing/spec.yaml")


@pytest.mark.parametrize(("kwargs", "message"), [({"image_size": 0}, "image_size"), ({"frame_stack": 0}, "frame_stack")])
def test_bad_env_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_env("sim", **kwargs)
