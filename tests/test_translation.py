"""The deployment wrappers and the FCN-score, with real rendering."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv

from rlcyclegan.envs import load_domain, make_env
from rlcyclegan.envs.model import SEGMENTATION_CLASSES
from rlcyclegan.segmentation import (
    fcn_score,
    load_segmenter,
    read_segmenter_tag,
    render_segmentation_set,
    save_segmenter,
    train_segmenter,
)
from rlcyclegan.wrappers import FrameTranslator, TranslateObservation, TranslateVecObservation

SIZE = 32


class CountingIdentity(torch.nn.Module):
    """An identity generator that counts the frames it is asked to translate."""

    def __init__(self) -> None:
        super().__init__()
        self.frames_seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.frames_seen += x.shape[0]
        return x


class Invert(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


def test_identity_generator_makes_the_wrapper_the_identity() -> None:
    identity = CountingIdentity()
    raw = make_env("real", image_size=SIZE)
    wrapped = TranslateObservation(make_env("real", image_size=SIZE), FrameTranslator(identity, device="cpu"))
    assert wrapped.observation_space == raw.observation_space
    obs_raw, _ = raw.reset(seed=4)
    obs_wrapped, _ = wrapped.reset(seed=4)
    np.testing.assert_array_equal(obs_wrapped, obs_raw)
    for _ in range(5):
        action = raw.action_space.sample()
        obs_raw, *_ = raw.step(action)
        obs_wrapped, *_ = wrapped.step(action)
        assert obs_wrapped.dtype == np.uint8 and obs_wrapped.shape == obs_raw.shape
        np.testing.assert_array_equal(obs_wrapped, obs_raw)
    # per frame, before stacking: 3 frames at reset, then one new frame per step
    assert identity.frames_seen == 3 + 5


def test_perfect_translation_of_sim_into_sim_is_the_env_itself() -> None:
    from rlcyclegan.evaluation import PerfectTranslation

    env = make_env("sim", image_size=SIZE)
    wrapped = PerfectTranslation(make_env("sim", image_size=SIZE), "sim")
    obs, _ = env.reset(seed=3)
    seen, _ = wrapped.reset(seed=3)
    np.testing.assert_array_equal(seen, obs)
    for _ in range(4):  # the stack shifts like the env's own
        action = env.action_space.sample()
        obs, *_ = env.step(action)
        seen, *_ = wrapped.step(action)
        np.testing.assert_array_equal(seen, obs)
    real = PerfectTranslation(make_env("real", image_size=SIZE), "sim")
    raw, _ = make_env("real", image_size=SIZE).reset(seed=3)
    assert not np.array_equal(real.reset(seed=3)[0], raw)  # real frames are replaced by sim renderings
    wrapped.close()
    real.close()


def test_perfect_translation_renders_through_a_given_renderer() -> None:
    """The hook `experiments/floor_cue.py` uses to alter what the policy is shown, and its premise: moving the
    root along x moves the floor under the tracking camera and leaves the cheetah where it was."""
    from rlcyclegan.envs import PairedRenderer
    from rlcyclegan.evaluation import PerfectTranslation

    class Moved:
        def __init__(self, renderer: PairedRenderer) -> None:
            self.renderer, self.seen = renderer, []

        def render(self, qpos: np.ndarray) -> np.ndarray:
            self.seen.append(np.array(qpos))
            return self.renderer.render(qpos + np.eye(len(qpos))[0] / 3)

        def close(self) -> None:
            self.renderer.close()

    moved: list[Moved] = []

    def wrap(renderer: PairedRenderer) -> Moved:
        moved.append(Moved(renderer))
        return moved[-1]

    wrapped = PerfectTranslation(make_env("real", image_size=SIZE), "sim", wrap)
    plain = PerfectTranslation(make_env("real", image_size=SIZE), "sim")
    seen, info = wrapped.reset(seed=2)
    assert not np.array_equal(seen, plain.reset(seed=2)[0])
    np.testing.assert_array_equal(moved[0].seen[-1], info["qpos"])
    renderer = moved[0].renderer
    shifted = info["qpos"] + np.eye(len(info["qpos"]))[0] / 3
    np.testing.assert_array_equal(renderer.segment(shifted), renderer.segment(info["qpos"]))
    assert not np.array_equal(renderer.render(shifted), renderer.render(info["qpos"]))
    wrapped.close()
    plain.close()


def test_wrapper_translates_every_frame_of_the_stack() -> None:
    wrapped = TranslateObservation(make_env("sim", image_size=SIZE), FrameTranslator(Invert(), device="cpu"))
    raw = make_env("sim", image_size=SIZE)
    obs_raw, _ = raw.reset(seed=1)
    obs_wrapped, _ = wrapped.reset(seed=1)
    for _ in range(4):
        action = raw.action_space.sample()
        obs_raw, *_ = raw.step(action)
        obs_wrapped, *_ = wrapped.step(action)
    inverted = 255 - obs_raw.astype(int)
    assert np.abs(obs_wrapped.astype(int) - inverted).max() <= 1


def test_vec_wrapper_matches_single_env_wrapper_across_episode_ends() -> None:
    def make():
        return make_env("real", image_size=SIZE, max_episode_steps=3)

    venv = TranslateVecObservation(DummyVecEnv([make, make]), FrameTranslator(Invert(), device="cpu"))
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (2, SIZE, SIZE, 9) and obs.dtype == np.uint8
    raw = DummyVecEnv([make, make])
    raw.seed(0)
    raw_obs = raw.reset()
    for _ in range(7):  # crosses two autoresets
        actions = np.zeros((2, 6), dtype=np.float32)
        obs, _, dones, _ = venv.step(actions)
        raw_obs, _, raw_dones, _ = raw.step(actions)
        np.testing.assert_array_equal(dones, raw_dones)
        assert np.abs(obs.astype(int) - (255 - raw_obs.astype(int))).max() <= 1


def test_bad_observation_space_is_rejected() -> None:
    with pytest.raises(ValueError, match="uint8"):
        TranslateObservation(make_env("sim", obs_type="state"), FrameTranslator(Invert(), device="cpu"))


@pytest.mark.slow
def test_fcn_score_is_near_perfect_on_true_renders_and_poor_on_blank_images(tmp_path: Path) -> None:
    env = make_env("sim", image_size=SIZE)
    env.reset(seed=0)
    env.action_space.seed(0)
    qpos = []
    for _ in range(240):
        _, _, _, _, info = env.step(env.action_space.sample())
        qpos.append(info["qpos"])
    qpos = np.array(qpos)
    images, labels = render_segmentation_set(load_domain("sim"), qpos, SIZE)
    net = train_segmenter(images[:200], labels[:200], steps=700, batch_size=16, width=8)
    held_out = fcn_score(net, images[200:], labels[200:])
    blank = fcn_score(net, np.zeros_like(images[200:]), labels[200:])
    # measured: per-pixel accuracy 0.99, class IoU 0.86 on held-out renders (the action space is seeded so
    # the training states are the same on every run)
    assert held_out["per_pixel_accuracy"] > 0.95
    assert held_out["class_iou"] > 0.7
    # A blank frame still gets sky above and floor below from the network's location priors (class IoU about
    # 0.28 over 7 classes); every body part is lost.
    assert blank["class_iou"] < 0.35
    assert blank["class_iou"] < held_out["class_iou"] - 0.4
    assert set(np.unique(labels)) <= set(range(len(SEGMENTATION_CLASSES)))
    # saved and loaded, it labels the same; a file that is not a segmenter is refused with its path
    save_segmenter(net, tmp_path / "segmenter.safetensors", tag="some inputs")
    loaded, tag = load_segmenter(tmp_path / "segmenter.safetensors")
    assert tag == "some inputs" and fcn_score(loaded, images[200:], labels[200:]) == held_out
    assert read_segmenter_tag(tmp_path / "segmenter.safetensors") == "some inputs"
    (tmp_path / "broken.safetensors").write_bytes(b"not weights")
    assert read_segmenter_tag(tmp_path / "broken.safetensors") is None
    with pytest.raises(ValueError, match="broken.safetensors is not a segmenter"):
        load_segmenter(tmp_path / "broken.safetensors")
