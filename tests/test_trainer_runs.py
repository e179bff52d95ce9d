"""Whole runs of ``train``/``rlcyclegan train``: checkpoints, resume, bad input, NaN stops, image folders, learning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import rlcyclegan.trainer as trainer_module
from rlcyclegan.checkpoint import STATE_FILE, latest_checkpoint
from rlcyclegan.cli import main
from rlcyclegan.config import ConfigError, load_config
from rlcyclegan.data.collect import CollectConfig, collect
from rlcyclegan.networks import load_generator
from rlcyclegan.train_config import TrainConfig
from rlcyclegan.train_loop import choose_threads, train
from rlcyclegan.trainer import NonFiniteLossError

SIZE = 32
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory):
    """Two domains, 4 episodes x 50 steps each: a few hundred 32x32 frames per domain."""
    root = tmp_path_factory.mktemp("rollouts")
    for domain in ("sim", "real"):
        collect(CollectConfig(out=root / domain, domain=domain, episodes=4, workers=1, image_size=SIZE,
                              max_steps=50, seed=5), progress=False)
    return root


TINY = ["model.ngf=4", "model.n_blocks=1", "model.ndf=4", "q.features_dim=8", "q.hidden_dim=8", "q.width=4",
        "data.batch_size=2", "data.frame_stack=2", f"data.image_size={SIZE}", "image_every=0", "speed.threads=1"]


def config(rollouts, run_dir, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, [f"data.sim={rollouts / 'sim'}", f"data.real={rollouts / 'real'}",
                                           f"run_dir={run_dir}", *TINY, *overrides])


def weights(checkpoint) -> dict[str, torch.Tensor]:
    return {f"{f.stem}.{k}": v for f in sorted(checkpoint.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


@pytest.mark.parametrize("averaged", [[], ["optim.ema_decay=0.5"]], ids=["iterate", "averaged"])
def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(rollouts, tmp_path, averaged):
    full = train(config(rollouts, tmp_path / "full", "iterations=4", "checkpoint_every=2", "keep_checkpoints=0",
                        *averaged), progress=False)
    # An interruption after iteration 2 leaves exactly this: checkpoint 2 complete, `latest` pointing at it.
    shutil.copytree(full, tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_00000004")
    (tmp_path / "cut" / "checkpoints" / "latest").write_text("step_00000002\n")
    resumed = train(load_config(TrainConfig, tmp_path / "cut" / "config.yaml", [f"run_dir={tmp_path / 'cut'}"]),
                    resume=True, progress=False)
    a, b = weights(latest_checkpoint(full)), weights(latest_checkpoint(resumed))
    assert latest_checkpoint(resumed).name == "step_00000004"
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    # ... and not trivially: training moved the weights away from checkpoint 2.
    mid = weights(full / "checkpoints" / "step_00000002")
    assert not all(torch.equal(a[k], mid[k]) for k in a)


def test_resumed_run_follows_its_own_learning_rate_schedule(rollouts, tmp_path):
    """Resumed with more iterations and a lower rate, a run decays over its new length from the new rate."""
    short = train(config(rollouts, tmp_path / "run", "iterations=2", "checkpoint_every=2"), progress=False)
    ended = weights(latest_checkpoint(short))  # the 2-iteration schedule's rate is 0 from here on
    resumed = train(load_config(TrainConfig, short / "config.yaml",
                                [f"run_dir={short}", "iterations=6", "optim.lr=1e-4", "checkpoint_every=2"]),
                    resume=True, progress=False)
    state = torch.load(resumed / "checkpoints" / "step_00000004" / STATE_FILE, weights_only=True)
    for name in ("generators", "discriminators"):
        assert state["schedulers"][name]["base_lrs"] == [1e-4]
        # constant for round(0.5 * 6) = 3 iterations, then linear to 0 at 6: 2/3 of the rate at iteration 4
        assert state["optimizers"][name]["param_groups"][0]["lr"] == pytest.approx(1e-4 * 2 / 3)
    after = weights(latest_checkpoint(resumed))
    assert any(not torch.equal(ended[k], after[k]) for k in ended if k.startswith("G_"))


def test_checkpoint_layout_serves_deployment_without_training_code(rollouts, tmp_path):
    run = train(config(rollouts, tmp_path / "run", "iterations=2", "checkpoint_every=1", "keep_checkpoints=1"),
                progress=False)
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step_00000002"]  # pruned to 1, no temp dirs
    ckpt = latest_checkpoint(run)
    names = {p.name for p in ckpt.iterdir()}
    assert {"G_sim2real.safetensors", "G_real2sim.safetensors", "D_real.safetensors", "D_sim.safetensors",
            "Q_sim.safetensors", "Q_real.safetensors", "translator.json", STATE_FILE, "checkpoint.json"} <= names
    meta = json.loads((ckpt / "translator.json").read_text())
    assert meta["image_size"] == SIZE and meta["frame_format"]["frame_stack"] == 2
    assert meta["generator_kwargs"] == {"in_channels": 3, "out_channels": 3, "ngf": 4, "n_blocks": 1}
    generator = load_generator(run, "real2sim")
    assert generator(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, 3, SIZE, SIZE)
    state = torch.load(ckpt / STATE_FILE, weights_only=True)  # no pickled code
    assert set(state) == {"optimizers", "schedulers", "torch_rng", "pools"}
    assert (run / "config.yaml").is_file() and any((run / "tb").iterdir())


def test_an_averaged_run_deploys_the_averaged_generators(rollouts, tmp_path):
    run = train(config(rollouts, tmp_path / "run", "iterations=2", "optim.ema_decay=0.5"), progress=False)
    ckpt = latest_checkpoint(run)
    assert json.loads((ckpt / "translator.json").read_text())["files"] == {
        "sim2real": "G_sim2real_ema.safetensors", "real2sim": "G_real2sim_ema.safetensors"}
    deployed = load_generator(run, "real2sim").state_dict()
    averaged, trained = (load_file(str(ckpt / f"G_real2sim{s}.safetensors")) for s in ("_ema", ""))
    assert all(torch.equal(deployed[k], averaged[k]) for k in deployed)
    assert not all(torch.equal(averaged[k], trained[k]) for k in averaged)


def test_plain_cyclegan_trains_on_unpaired_image_folders_of_any_size(tmp_path):
    rng = np.random.default_rng(0)
    for folder, shape in (("trainA", (40, 50, 3)), ("trainB", (64, 36, 3))):
        (tmp_path / "faces" / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(tmp_path / "faces" / folder / f"{i}.png")
    run = train(load_config(TrainConfig, EXPERIMENTS / "cyclegan.yaml", [
        "data.format=image_folder", f"data.root={tmp_path / 'faces'}", f"run_dir={tmp_path / 'run'}", *TINY,
        "data.frame_stack=1", "iterations=2"]), progress=False)
    files = {p.name for p in latest_checkpoint(run).iterdir()}
    assert "G_real2sim.safetensors" in files and not any(name.startswith("Q_") for name in files)


def test_rl_weights_on_data_without_transitions_is_a_one_line_error(tmp_path, capsys):
    for folder in ("trainA", "trainB"):
        (tmp_path / "imgs" / folder).mkdir(parents=True)
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "imgs" / folder / "0.png")
    code = main(["train", "--config", str(EXPERIMENTS / "rlcyclegan.yaml"), "data.format=image_folder",
                 f"data.root={tmp_path / 'imgs'}", f"run_dir={tmp_path / 'run'}", *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "no transitions" in err and "lambda_rl" in err


def test_image_size_mismatch_is_a_one_line_error(rollouts, tmp_path, capsys):
    code = main(["train", f"data.sim={rollouts / 'sim'}", f"data.real={rollouts / 'real'}",
                 f"run_dir={tmp_path / 'run'}", *TINY, "data.image_size=64"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "has 32x32 frames but data.image_size is 64" in err


def test_resuming_into_another_architecture_is_a_one_line_error(rollouts, tmp_path, capsys):
    run = train(config(rollouts, tmp_path / "run", "iterations=1"), progress=False)
    code = main(["train", "--resume", str(run), "model.ngf=8", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "different architecture: model.ngf is 4 there but 8 here" in err


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(rollouts, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_cycle_loss = trainer_module.cycle_loss

    def poisoned(original, reconstructed):  # the 5th and later cycle losses (iteration 3 on) are NaN
        calls["n"] += 1
        loss = real_cycle_loss(original, reconstructed)
        return loss * float("nan") if calls["n"] > 4 else loss

    monkeypatch.setattr(trainer_module, "cycle_loss", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"iteration 3: losses/cycle_\w+ is nan.*step_00000002") as err:
        train(config(rollouts, tmp_path / "run", "iterations=5", "checkpoint_every=1", "keep_checkpoints=0"),
              progress=False)
    assert "\n" not in str(err.value)
    assert latest_checkpoint(tmp_path / "run").name == "step_00000002"
    assert not (tmp_path / "run" / "checkpoints" / "step_00000003").exists()


def test_a_fresh_run_refuses_a_directory_with_checkpoints(rollouts, tmp_path):
    cfg = config(rollouts, tmp_path / "run", "iterations=1")
    train(cfg, progress=False)
    with pytest.raises(ValueError, match="already holds checkpoints; pass --resume"):
        train(cfg, progress=False)


def _scalars(run, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    return [e.value for e in events.Scalars(tag)]


def test_tiny_end_to_end_run_reduces_the_cycle_loss(rollouts, tmp_path, capsys):
    """The command end to end on a few hundred 32x32 frames: the cycle loss must go down."""
    code = main(["train", "--config", str(EXPERIMENTS / "rlcyclegan.yaml"), f"data.sim={rollouts / 'sim'}",
                 f"data.real={rollouts / 'real'}", f"run_dir={tmp_path / 'run'}", *TINY, "model.ngf=8",
                 "iterations=30", "log_every=1", "checkpoint_every=30", "optim.lr=0.001", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    cycle = _scalars(tmp_path / "run", "losses/cycle_forward")
    assert len(cycle) == 30
    assert np.mean(cycle[-5:]) < 0.7 * np.mean(cycle[:5])
    for tag in ("losses/rl_scene", "losses/td_real", "q/gap_real2sim", "gan/D_real_on_fake", "charts/images_per_s",
                "charts/lr_discriminators"):
        assert len(_scalars(tmp_path / "run", tag)) == 30


def test_thread_count_is_chosen_once_recorded_and_restored(rollouts, tmp_path):
    before = torch.get_num_threads()
    cfg = config(rollouts, tmp_path / "run", "iterations=1", "speed.threads=0")
    assert choose_threads(cfg, candidates=(1, 1)) == 1
    assert choose_threads(cfg, candidates=(1, 2), rounds=1) in (1, 2)
    run = train(cfg, progress=False)
    chosen = load_config(TrainConfig, run / "config.yaml").speed.threads
    assert chosen in (1, before)  # a resumed run reads this back and computes with the same thread count
    assert torch.get_num_threads() == before


def test_thread_count_is_rechosen_every_n_iterations_when_asked(rollouts, tmp_path, monkeypatch):
    """The pipeline's jobs re-choose, so the one that outlives the others takes the cores they free."""
    import rlcyclegan.train_loop as train_loop

    before = torch.get_num_threads()
    others_busy = iter([0.0, 1.0])  # the neighbour finished, then another one started

    class Load:
        def cores_busy(self) -> float:
            return next(others_busy)

    monkeypatch.setattr(train_loop, "OtherProcessesLoad", Load)
    monkeypatch.setattr(train_loop, "process_cores", lambda: 2)
    cfg = config(rollouts, tmp_path / "run", "iterations=6", "log_every=1", "speed.rechoose_threads_every=2")
    train(cfg, progress=False)  # re-chooses after iterations 2 and 4, not after the last (a third value would raise)
    assert _scalars(tmp_path / "run", "charts/threads") == [1, 1, 2, 2, 1, 1]
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="rechoose_threads_every"):
        config(rollouts, tmp_path / "bad", "speed.rechoose_threads_every=-1")
