"""The paired oracle: re-rendered ground truth, its source, and the trainer's paired L1 term."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlcyclegan.config import ConfigError, load_config
from rlcyclegan.data.collect import CollectConfig, collect
from rlcyclegan.data.loaders import PairedSource, RolloutDataset
from rlcyclegan.data.paired import rerender_dataset
from rlcyclegan.envs import PairedRenderer, load_domain
from rlcyclegan.train_config import TrainConfig
from rlcyclegan.train_loop import train

SIZE = 16


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("oracle")
    paths = {}
    for domain, seed in (("sim", 0), ("real", 1)):
        paths[domain] = collect(CollectConfig(out=root / domain, domain=domain, episodes=2, max_steps=12, seed=seed,
                                              workers=1, image_size=SIZE), progress=False).path
    paths["real_as_sim"] = rerender_dataset(paths["real"], root / "real_as_sim")
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


def oracle_config(datasets: dict[str, Path], run_dir: Path, lambda_paired: float, iterations: int) -> TrainConfig:
    return load_config(TrainConfig, "experiments/oracle.yaml", [
        f"run_dir={run_dir}", f"iterations={iterations}", f"data.sim={datasets['sim']}",
        f"data.real={datasets['real']}", f"data.paired_real={datasets['real_as_sim']}", f"data.image_size={SIZE}",
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
