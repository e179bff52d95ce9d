"""The paired oracle: re-rendered ground truth, its source, and the trainer's paired L1 term."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlcyclegan.config import ConfigError, load_config
from rlcyclegan.data.collect import CollectConfig, collect
from rlcyclegan.data.loaders import PairedSource, RolloutDataset
from rlcyclegan.data.paired import rerender_dataset
from rlcyclegan.envs import PairedRenderer, load_domain
from rlcyclegan.envs.model import SEGMENTATION_CLASSES
from rlcyclegan.train_config import TrainConfig
from rlcyclegan.train_loop import train
from rlcyclegan.trainer import RLCycleGANTrainer

SIZE = 16
FLOOR = SEGMENTATION_CLASSES.index("floor")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oracle")
    paths = {}
    for domain, seed in (("sim", 0), ("real", 1)):
        paths[domain] = collect(CollectConfig(out=root / domain, domain=domain, episodes=2, max_steps=12, seed=seed,
                                              workers=1, image_size=SIZE), progress=False).path
    paths["real_as_sim"] = rerender_dataset(paths["real"], root / "real_as_sim")
    paths["real_as_sim_segmentation"] = rerender_dataset(paths["real"], root / "real_as_sim_segmentation",
                                                         segmentation=True)
    return paths


def test_rerendered_dataset_holds_the_real_states_in_the_sim_look(datasets: dict[str, Path]) -> None:
    real = RolloutDataset(datasets["real"])
    paired = RolloutDataset(datasets["real_as_sim"])
    assert paired.domain_name == "sim" and real.domain_name == "real"
    renderer = PairedRenderer(load_domain("sim"), SIZE)
    for real_episode, paired_episode in zip(real.episodes(), paired.episodes(), strict=True):
        np.testing.assert_array_equal(paired_episode.qpos, real_episode.qpos)
        np.testing.assert_array_equal(paired_episode.actions, real_episode.actions)
        np.testing.assert_array_equal(paired_episode.frames[5], renderer.render(real_episode.qpos[5]))
        assert not np.array_equal(paired_episode.frames, real_episode.frames)


def test_paired_source_draws_the_same_states(datasets: dict[str, Path]) -> None:
    source = PairedSource(RolloutDataset(datasets["real"]), RolloutDataset(datasets["real_as_sim"]))
    batch = source.sample(8, np.random.default_rng(0))
    assert batch.paired_obs is not None and batch.paired_obs.shape == batch.obs.shape
    with pytest.raises(ValueError, match="not .* re-rendered"):
        PairedSource(RolloutDataset(datasets["real"]), RolloutDataset(datasets["sim"]))


def test_segmentation_dataset_holds_the_true_class_maps_in_every_channel(datasets: dict[str, Path]) -> None:
    real, segmentation = RolloutDataset(datasets["real"]), RolloutDataset(datasets["real_as_sim_segmentation"])
    renderer = PairedRenderer(load_domain("sim"), SIZE)
    for real_episode, segmentation_episode in zip(real.episodes(), segmentation.episodes(), strict=True):
        labels = np.stack([renderer.segment(q) for q in real_episode.qpos])
        for channel in range(3):
            np.testing.assert_array_equal(segmentation_episode.frames[..., channel], labels)
        assert {FLOOR, SEGMENTATION_CLASSES.index("torso")} <= set(np.unique(labels))


def test_paired_source_draws_the_segmentation_of_the_same_states(datasets: dict[str, Path]) -> None:
    real, segmentation = RolloutDataset(datasets["real"], 2), RolloutDataset(datasets["real_as_sim_segmentation"], 2)
    source = PairedSource(real, RolloutDataset(datasets["real_as_sim"], 2), segmentation)
    batch = source.sample(6, np.random.default_rng(0))
    indices = real.sample_indices(6, np.random.default_rng(0))
    expected = segmentation.get_batch(indices).obs.numpy()[:, [0, 3]]  # channel 0 of each of the 2 frames
    assert batch.paired_labels is not None
    np.testing.assert_array_equal(batch.paired_labels.numpy(), expected)
    with pytest.raises(ValueError, match="holds pictures, not class maps"):
        PairedSource(real, RolloutDataset(datasets["real_as_sim"], 2), RolloutDataset(datasets["real_as_sim"], 2))
    with pytest.raises(ValueError, match="holds class maps, not pictures"):
        PairedSource(real, segmentation)


def oracle_config(datasets: dict[str, Path], run_dir: Path, lambda_paired: float, iterations: int,
                  preset: str = "experiments/oracle.yaml") -> TrainConfig:
    return load_config(TrainConfig, preset, [
        f"run_dir={run_dir}", f"iterations={iterations}", f"data.sim={datasets['sim']}",
        f"data.real={datasets['real']}", f"data.paired_real={datasets['real_as_sim']}", f"data.image_size={SIZE}",
        f"data.paired_real_segmentation={datasets['real_as_sim_segmentation']}",
        f"loss.lambda_paired={lambda_paired}", "model.ngf=8", "model.n_blocks=1", "model.ndf=8", "model.d_layers=1",
        "data.batch_size=4", "log_every=1", "image_every=0", "checkpoint_every=100", "speed.threads=1",
    ])


def test_oracle_training_reduces_the_paired_l1(datasets: dict[str, Path], tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train(oracle_config(datasets, tmp_path / "run", 100.0, 40), progress=False)
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    paired = [e.value for e in events.Scalars("losses/paired_real2sim")]
    assert np.mean(paired[-5:]) < 0.7 * np.mean(paired[:5])


def test_paired_loss_needs_paired_data(datasets: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs rollout data and data.paired_real"):
        load_config(TrainConfig, "experiments/oracle.yaml", [f"data.sim={datasets['sim']}",
                                                               f"data.real={datasets['real']}"])


def test_oracle_leaves_the_true_floor_out_of_its_paired_l1(datasets: dict[str, Path], tmp_path: Path) -> None:
    config = oracle_config(datasets, tmp_path / "run", 100.0, 1, "experiments/oracle_detached.yaml")
    assert config.loss.paired_ignore == ("floor",)
    rng = np.random.default_rng(0)
    sim = RolloutDataset(datasets["sim"]).sample(4, rng)
    real = PairedSource(RolloutDataset(datasets["real"]), RolloutDataset(datasets["real_as_sim"]),
                        RolloutDataset(datasets["real_as_sim_segmentation"])).sample(4, rng)
    assert real.paired_obs is not None and real.paired_labels is not None
    floor = (real.paired_labels == FLOOR).repeat_interleave(3, dim=1)  # (B, 3, H, W)

    def paired_loss(truth: torch.Tensor) -> float:
        torch.manual_seed(0)
        trainer = RLCycleGANTrainer(config, SIZE, 1, 6, torch.device("cpu"))
        return trainer.step(sim, real._replace(paired_obs=truth))["losses/paired_real2sim"]

    inverted = 255 - real.paired_obs
    assert paired_loss(torch.where(floor, inverted, real.paired_obs)) == paired_loss(real.paired_obs)
    assert paired_loss(torch.where(floor, real.paired_obs, inverted)) != paired_loss(real.paired_obs)


def test_ignoring_classes_needs_the_segmentation(datasets: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="paired_ignore needs"):
        load_config(TrainConfig, "experiments/oracle_detached.yaml", [
            f"data.sim={datasets['sim']}", f"data.real={datasets['real']}", f"data.paired_real={datasets['real_as_sim']}"])
    with pytest.raises(ConfigError, match="unknown class 'grass'"):
        load_config(TrainConfig, "experiments/oracle_detached.yaml", ["loss.paired_ignore=[grass]"])


def test_the_pipelines_oracle_job_renders_its_paired_truth_then_trains(datasets: dict[str, Path], tmp_path: Path) -> None:
    from rlcyclegan.pipeline import train_paired

    fresh = {**datasets, "real_as_sim": tmp_path / "real_as_sim", "real_as_sim_segmentation": tmp_path / "segmentation"}
    run = train_paired(oracle_config(fresh, tmp_path / "run", 100.0, 2, "experiments/oracle_detached.yaml"),
                       resume=False, progress=False)
    assert (run / "checkpoints" / "latest").exists()
    real = RolloutDataset(datasets["real"])
    for path, content in ((fresh["real_as_sim"], None), (fresh["real_as_sim_segmentation"], "segmentation")):
        rendered = RolloutDataset(path)
        assert rendered.domain_name == "sim" and rendered.metadata.get("content") == content
        np.testing.assert_array_equal(rendered.episode_lengths, real.episode_lengths)
