"""The pipeline end to end at a tiny scale (32x32, a few iterations of everything), and stage skipping."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

from rlcyclegan import pipeline as pipeline_module
from rlcyclegan import segmentation
from rlcyclegan.checkpoint import checkpoint_iteration, checkpoint_name, latest_checkpoint
from rlcyclegan.cli import main
from rlcyclegan.config import ConfigError, load_config
from rlcyclegan.data.storage import list_shards, read_episode
from rlcyclegan.envs import load_domain, make_env
from rlcyclegan.envs.rendering import PairedRenderer
from rlcyclegan.networks import load_generator
from rlcyclegan.pipeline import (
    PERFECT,
    RECHOOSE_THREADS_EVERY,
    Condition,
    Job,
    Pipeline,
    PipelineConfig,
    condition_returns_of,
    preset_path,
    render_returns_table,
)
from rlcyclegan.wrappers import FrameTranslator

TINY_POLICY = {
    "teacher": {"algo": "ppo", "total_timesteps": 1024, "eval_every": 1024, "eval_episodes": 1,
                "algo_kwargs": {"n_steps": 512, "batch_size": 64, "n_epochs": 1}},
    "dagger": {"iterations": 1, "steps_per_iteration": 60, "gradient_steps": 10, "batch_size": 16},
    "student": {"features_dim": 32, "hidden_dim": 32, "width": 8},
    "eval_episodes": 1,
    "max_episode_steps": 40,
}
TINY_Q = {"steps": 10, "batch_size": 8, "holdout_episodes": 1, "q": {"features_dim": 32, "hidden_dim": 32, "width": 8}}
TRANSLATOR_OVERRIDES = ["iterations=4", "model.ngf=8", "model.n_blocks=1", "model.ndf=8", "model.d_layers=2",
                        "log_every=2", "image_every=2", "checkpoint_every=2", "data.batch_size=2",
                        "q.features_dim=32", "q.hidden_dim=32", "q.width=8", "speed.compile=false"]


def experiment_script(name: str) -> ModuleType:
    """``experiments/NAME.py`` as a module: the scripts are not part of the package."""
    spec = importlib.util.spec_from_file_location(name, f"experiments/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_config(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(TINY_POLICY))
    (tmp_path / "q.yaml").write_text(yaml.safe_dump(TINY_Q))
    config = {
        "preset": "tiny", "image_size": 32, "frame_stack": 3, "workers": 1, "student_domain": "sim_floor_jitter",
        "policy_config": str(tmp_path / "policy.yaml"), "q_config": str(tmp_path / "q.yaml"),
        "collect_episodes": 3, "collect_test_episodes": 2, "collect_max_steps": 30, "collect_noise": 0.3,
        "check_episodes": 1, "check_max_steps": 35,
        "translators": {"cyclegan": {"config": "experiments/cyclegan.yaml"},
                        "rlcyclegan": {"config": "experiments/rlcyclegan.yaml", "select_on": [5, 6]},
                        "oracle": {"config": "experiments/oracle.yaml", "paired": True}},
        "translator_overrides": TRANSLATOR_OVERRIDES,
        "eval_episodes": 1, "eval_seeds": [0], "eval_max_steps": 20,
        "held_out_frames": 16, "segmenter_frames": 32, "segmenter_steps": 5, "grid_rows": 2, "video_steps": 5,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_tiny_pipeline_runs_end_to_end_and_skips_finished_stages(tmp_path: Path, capsys, monkeypatch) -> None:
    config_path = tiny_config(tmp_path)
    run = tmp_path / "run"
    assert main(["pipeline", "--config", str(config_path), "--out", str(run), "--no-progress"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert set(results["returns"]) == {"sim", "real, no adaptation", "real + cyclegan", "real + rlcyclegan",
                                       "real + oracle", PERFECT}
    for condition in results["returns"].values():
        assert condition["n"] == 1 and len(condition["returns"]) == 1
    assert {"true sim rendering", "no translation", "cyclegan", "rlcyclegan", "oracle"} <= set(results["translation"])
    assert "q_consistency" in results["translation"]["rlcyclegan"]
    # RL-CycleGAN (select_on) deploys its checkpoint with the best return on validation episodes of its own
    selection = results["selection"]["rlcyclegan"]
    assert selection["seeds"] == [5, 6] and set(selection["validation"]) == {checkpoint_name(2), checkpoint_name(4)}
    assert all(r["n"] == 2 and len(r["seed_means"]) == 2 for r in selection["validation"].values())
    assert selection["deployed"] == max(sorted(selection["validation"]), key=lambda c: selection["validation"][c]["mean"])
    deployed = run / "translators" / "rlcyclegan" / "checkpoints" / selection["deployed"]
    assert results["returns"]["real + rlcyclegan"] == condition_returns_of(
        Condition(run / "policy" / "student.safetensors", "real", translator=deployed), 1, [0], 20, "auto")
    assert "Checkpoints chosen on validation episodes" in (run / "report.md").read_text()
    stages = results["stage_wall_s"]
    assert set(stages) >= {"teacher", "data", "q", "student:sim", "translator:cyclegan", "translator:rlcyclegan",
                           "translator:oracle", "segmenter:sim", "evaluate"}  # recorded before the evaluation writes the results
    report = (run / "report.md").read_text()
    assert f"| evaluate | {stages['evaluate']:.0f} |" in report
    assert f"| **total** | **{sum(stages[k] for k in ('teacher', 'data', 'q', 'train', 'select', 'evaluate')):.0f}** |" in report
    # the teacher stage trains the teacher only; the student is a job of `train`, in the config's student_domain
    assert yaml.safe_load((run / "policy" / "config.yaml").read_text())["domain"] == "sim_floor_jitter"
    assert results["policy"]["student_domain"] == "sim_floor_jitter"
    assert (run / "teacher" / "teacher.zip").is_file() and not (run / "teacher" / "student.safetensors").exists()
    assert results["versions"]["rlcyclegan"]
    assert report.startswith("# rlcyclegan pipeline report")
    assert (run / "translations.png").stat().st_size > 0
    assert len(list((run / "videos").glob("*.gif"))) == 4
    # the Q check's own rollouts, from seeds no other collection uses
    for domain in ("sim", "real"):
        check = results["q_networks"][domain]["check_data"]
        assert check["data"] == str(run / "data" / f"{domain}_check") and check["episodes"] == 1
    def reset_seeds(split: str) -> set[int]:
        return {read_episode(path, i).seed for i, path in list_shards(run / "data" / split).items()}

    assert reset_seeds("real_check").isdisjoint(reset_seeds("real") | reset_seeds("real_test") | reset_seeds("sim"))
    assert reset_seeds("real_test").isdisjoint(reset_seeds("real"))  # held-out states start elsewhere too
    # the oracle's paired data: the real episodes' states, rendered in sim
    assert sorted(p.name for p in (run / "data" / "real_as_sim").glob("*.h5")) == sorted(
        p.name for p in (run / "data" / "real").glob("*.h5"))

    capsys.readouterr()
    assert main(["pipeline", "--config", str(config_path), "--out", str(run), "--no-progress",
                 "--stage", "teacher", "data", "q", "train"]) == 0
    assert capsys.readouterr().out.count("skipped") == 7

    # A translator that stopped short of its iterations (here: more are asked for) resumes, not skips.
    longer = [o if not o.startswith("iterations=") else "iterations=6" for o in TRANSLATOR_OVERRIDES]
    assert main(["pipeline", "--config", str(config_path), "--out", str(run), "--no-progress",
                 f"translator_overrides=[{','.join(longer)}]", "--stage", "train"]) == 0
    pipeline = Pipeline(load_config(PipelineConfig, config_path), run, progress=False)
    assert [pipeline.translator_iterations(n) for n in ("cyclegan", "rlcyclegan", "oracle")] == [6, 6, 6]

    # Evaluation re-runs only the jobs whose inputs changed: here the translators, not the policy.
    capsys.readouterr()
    assert main(["pipeline", "--config", str(config_path), "--out", str(run), "--no-progress",
                 "--stage", "evaluate"]) == 0
    out = capsys.readouterr().out
    reused = {line.split("]")[0].removeprefix("[evaluate:") for line in out.splitlines() if "result reused" in line}
    assert "[select:rlcyclegan@6] done" in out and "[select:rlcyclegan@4]" not in out  # only the new checkpoint
    rerun = json.loads((run / "results.json").read_text())
    same_rl_checkpoint = rerun["selection"]["rlcyclegan"]["deployed"] == selection["deployed"]
    assert reused == {"sim", "real, no adaptation", PERFECT} | ({"real + rlcyclegan"} if same_rl_checkpoint else set())
    assert "[evaluate:translation quality] done" in out and "[evaluate:real + oracle] done" in out
    assert rerun["returns"]["sim"] == results["returns"]["sim"]
    assert main(["pipeline", "--config", str(config_path), "--out", str(run), "--no-progress",
                 "--stage", "evaluate"]) == 0
    assert "[evaluate] outputs exist, skipped" in capsys.readouterr().out
    (run / "report.md").unlink()  # `rlcyclegan evaluate` rewrites the report, here from cached results only
    assert main(["evaluate", "--config", str(config_path), "--out", str(run), "--no-progress"]) == 0
    assert (run / "report.md").is_file() and "done in" not in capsys.readouterr().out
    assert main(["pipeline", "--config", str(config_path), "--out", str(run), "--no-progress",
                 "eval_max_steps=10", "--stage", "evaluate"]) == 0
    out = capsys.readouterr().out
    shorter = json.loads((run / "results.json").read_text())
    assert all(len(r["returns"]) == 1 for r in shorter["returns"].values())
    # every condition and every validation runs again; translation quality and videos only if the validation on
    # shorter episodes deploys another RL-CycleGAN checkpoint
    assert "[select:rlcyclegan@2] done" in out
    same_rl_checkpoint = shorter["selection"]["rlcyclegan"]["deployed"] == rerun["selection"]["rlcyclegan"]["deployed"]
    assert out.count("result reused") == (2 if same_rl_checkpoint else 0)

    # experiments/score_translators.py scores a translator with a student, on the run's own held-out states and
    # with the run's segmenter, which is not trained again
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the run's saved segmenter should have been reused")

    monkeypatch.setattr(segmentation, "train_segmenter", no_training)
    score_translators = experiment_script("score_translators")
    student, out = run / "policy" / "student.safetensors", tmp_path / "scores.json"
    checkpoint, iterate = latest_checkpoint(run / "translators" / "cyclegan"), "cyclegan@6"  # resumed to 6 above
    score_translators.main(["--run", str(run), "--config", str(config_path), "--out", str(out), "--quality",
                            "--translators", str(run / "translators" / "cyclegan"), str(checkpoint),
                            "--students", str(student)])
    scores = json.loads(out.read_text())
    assert scores["returns"][f"cyclegan | {student}"]["n"] == 1
    assert scores["returns"][f"{iterate} | {student}"]["mean"] == scores["returns"][f"cyclegan | {student}"]["mean"]
    assert set(scores["translation"]) == {"true sim rendering", "no translation", "cyclegan", iterate}
    assert scores["translation"]["cyclegan"]["l1"] == pytest.approx(
        json.loads((run / "results.json").read_text())["translation"]["cyclegan"]["l1"], rel=1e-4)
    assert "q_consistency" in scores["translation"]["cyclegan"] and out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit, match="holds returns measured with .*'eval_episodes': 1.*give another --out"):
        score_translators.main(["--run", str(run), "--config", str(config_path), "--out", str(out), "eval_episodes=2",
                                "--translators", str(checkpoint), "--students", str(student)])
    assert json.loads(out.read_text()) == scores  # refused, not mixed in
    images_only = tmp_path / "images.json"
    score_translators.main(["--run", str(run), "--config", str(config_path), "--out", str(images_only), "--quality",
                            "--translators", str(checkpoint)])
    assert json.loads(images_only.read_text())["returns"] == {}
    assert json.loads(images_only.read_text())["translation"][iterate]["l1"] == scores["translation"][iterate]["l1"]

    # --select-on: every checkpoint on validation episodes, then only each run's best on the evaluation episodes
    selected_out = tmp_path / "selected.json"
    iterates = sorted((run / "translators" / "cyclegan" / "checkpoints").glob("step_*"))
    score_translators.main(["--run", str(run), "--config", str(config_path), "--out", str(selected_out),
                            "--translators", *map(str, iterates), "--students", str(student), "--select-on", "5", "6"])
    selected = json.loads(selected_out.read_text())
    names = [score_translators.translator_name(path) for path in iterates]
    validation = [selected["validation_returns"][f"{name} | {student}"] for name in names]
    assert selected["validation"]["eval_seeds"] == [5, 6] and all(v["n"] == 2 for v in validation)
    best = names[max(range(len(names)), key=lambda i: validation[i]["mean"])]  # the first of equal ones
    assert selected["selected"] == {f"{run / 'translators' / 'cyclegan'} | {student}": best}
    assert set(selected["returns"]) == {f"{best} | {student}"} and selected["returns"][f"{best} | {student}"]["n"] == 1
    with pytest.raises(SystemExit, match=r"seeds \[0\] are also evaluation seeds"):
        score_translators.main(["--run", str(run), "--config", str(config_path), "--out", str(tmp_path / "x.json"),
                                "--translators", str(checkpoint), "--students", str(student), "--select-on", "0", "7"])

    # experiments/average_checkpoints.py: the generators' mean over checkpoints, scored like any translator
    average_checkpoints = experiment_script("average_checkpoints")
    steps, averaged = sorted((run / "translators" / "cyclegan" / "checkpoints").glob("step_*"))[-2:], tmp_path / "avg"
    average_checkpoints.main([*map(str, steps), "--out", str(averaged)])
    for direction in ("sim2real", "real2sim"):
        first, last, mean = (load_generator(path, direction).state_dict() for path in (*steps, averaged))
        assert any(not torch.equal(first[k], last[k]) for k in first)  # steps 4 and 6: resumed training moved it
        assert all(torch.allclose(mean[k], (first[k] + last[k]) / 2) for k in first)
    with pytest.raises(SystemExit, match="is not empty"):
        average_checkpoints.main([*map(str, steps), "--out", str(averaged)])
    score_translators.main(["--run", str(run), "--config", str(config_path), "--out", str(out),
                            "--translators", str(averaged), "--students", str(student)])
    assert json.loads(out.read_text())["returns"][f"avg | {student}"]["n"] == 1

    # experiments/q_drift.py: the run's own Q check again, and how far RL-CycleGAN's training moved its Q-networks
    q_drift = experiment_script("q_drift")
    rl_checkpoint = latest_checkpoint(run / "translators" / "rlcyclegan")
    drift = q_drift.drift(run, [rl_checkpoint])
    for domain in ("sim", "real"):
        pipeline_check = results["q_networks"][domain]["check_data"]
        for key in ("spearman", "spearman_all_steps", "steps"):  # spearman is NaN at this size: no step is kept
            assert drift[domain]["run"][key] == pytest.approx(pipeline_check[key], nan_ok=True)
        assert drift[domain][str(rl_checkpoint)]["mean_abs_change"] > 0  # its Q-networks trained
    with pytest.raises(SystemExit, match="no Q_sim.safetensors or Q_real.safetensors"):
        q_drift.main(["--run", str(run), "--checkpoints", str(checkpoint)])  # plain CycleGAN: no Q-networks

    # experiments/composite_frames.py: F's cheetah on the true sim background and the other way round
    composite_frames = experiment_script("composite_frames")
    translator = FrameTranslator.from_checkpoint(checkpoint, device="cpu")
    env = make_env("real", image_size=32, frame_stack=3)
    wrappers = {part: composite_frames.composite_translation(translator, part, 32)(env)
                for part in ("everything", "cheetah", "background")}
    frames = {part: wrapper.reset(seed=3)[0][..., -3:] for part, wrapper in wrappers.items()}
    renderer = PairedRenderer(load_domain("sim"), 32)
    observation, info = env.reset(seed=3)
    true_sim = renderer.render(info["qpos"])
    for closable in (renderer, *wrappers.values()):  # the wrappers share one env, which closes more than once
        closable.close()
    assert (frames["everything"] == translator(observation[None, ..., -3:])[0]).all()  # F of the env's own frame
    body = (frames["cheetah"] != true_sim).any(-1)
    assert 0 < body.mean() < 0.5  # F's pixels only on the cheetah, true sim pixels on most of the frame
    assert (frames["cheetah"][body] == frames["everything"][body]).all()
    assert (frames["background"][~body] == frames["everything"][~body]).all()
    assert (frames["background"][body] == true_sim[body]).all()
    scores = composite_frames.main(["--student", str(student), "--translators", str(checkpoint), "--episodes", "1",
                                    "--seeds", "0", "--max-steps", "5"])
    assert [r["n"] for r in scores[str(checkpoint)].values()] == [1, 1, 1]


def test_pipeline_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(PipelineConfig, None, ["policy_config=nowhere.yaml"])
    with pytest.raises(ConfigError, match="eval_episodes must be at least 1"):
        load_config(PipelineConfig, None, ["eval_episodes=0"])
    assert main(["pipeline", "--preset", "nope", "--out", str(tmp_path)]) == 2


def test_presets_load(tmp_path: Path) -> None:
    for preset in ("quick", "standard", "long"):
        config = load_config(PipelineConfig, preset_path(preset))
        assert config.preset == preset and "rlcyclegan" in config.translators
        assert Pipeline(config, tmp_path / preset, progress=False).run_dir.is_dir()
    # the long preset is the standard one with plain CycleGAN trained on RL-CycleGAN's schedule, RL weights 0
    standard, long = (load_config(PipelineConfig, preset_path(p)) for p in ("standard", "long"))
    assert dataclasses.replace(long, preset="standard", translators=standard.translators) == standard
    assert {n: r for n, r in long.translators.items() if n != "cyclegan"} == {
        n: r for n, r in standard.translators.items() if n != "cyclegan"}
    rl_run, control = standard.translators["rlcyclegan"], long.translators["cyclegan"]
    assert "iterations=24000" in rl_run.overrides and rl_run.select_on == control.select_on
    schedule = set(rl_run.overrides) - {"loss.rl_scene_trains_q=false"}
    assert set(control.overrides) == schedule | {"loss.lambda_rl_scene=0"}
    # the quick preset trains RL-CycleGAN with the standard preset's recipe, for fewer iterations
    quick_run = load_config(PipelineConfig, preset_path("quick")).translators["rlcyclegan"]
    assert {"loss.lambda_rl=0", "loss.rl_scene_trains_q=false"} <= set(quick_run.overrides) and quick_run.select_on


def test_a_translator_with_validation_seeds_deploys_its_best_checkpoint(tmp_path: Path, monkeypatch) -> None:
    config = load_config(PipelineConfig, tiny_config(tmp_path), ["jobs=1", "translators.rlcyclegan.select_on=[5, 6]"])
    pipeline = Pipeline(config, tmp_path / "run", progress=False)
    pipeline.policy_path.parent.mkdir(parents=True)
    pipeline.policy_path.write_bytes(b"a policy")
    checkpoints = pipeline.translator_dir("rlcyclegan") / "checkpoints"
    validation_mean = {2: 10.0, 4: 30.0, 6: 20.0, 8: 50.0}
    scored: list[tuple[int, list[int]]] = []

    def add_checkpoint(iteration: int) -> None:  # what the selection reads of a checkpoint: its iteration
        (checkpoints / checkpoint_name(iteration)).mkdir(parents=True)
        (checkpoints / checkpoint_name(iteration) / "checkpoint.json").write_text(json.dumps({"iteration": iteration}))
        (checkpoints / "latest").write_text(checkpoint_name(iteration))

    def validation_returns(condition: Condition, episodes: int, seeds: list[int], *_) -> dict:
        iteration = checkpoint_iteration(condition.translator)
        scored.append((iteration, seeds))
        return {"mean": validation_mean[iteration]}

    monkeypatch.setattr(pipeline_module, "condition_returns_of", validation_returns)
    for iteration in (2, 4, 6):
        add_checkpoint(iteration)
    with pytest.raises(ValueError, match="no checkpoint chosen on its validation seeds"):
        pipeline.deployed_checkpoint("rlcyclegan")
    pipeline.select_checkpoints()
    assert sorted(scored) == [(2, [5, 6]), (4, [5, 6]), (6, [5, 6])]
    assert pipeline.deployed_checkpoint("rlcyclegan") == checkpoints / checkpoint_name(4)  # the best, not the last
    assert pipeline._conditions()["real + rlcyclegan"].translator == checkpoints / checkpoint_name(4)

    # trained further, with the oldest checkpoint pruned: only the new one is scored, and it is better
    scored.clear()
    add_checkpoint(8)
    (checkpoints / checkpoint_name(2) / "checkpoint.json").unlink()
    (checkpoints / checkpoint_name(2)).rmdir()
    pipeline.select_checkpoints()
    assert scored == [(8, [5, 6])]
    assert pipeline.deployed_checkpoint("rlcyclegan") == checkpoints / checkpoint_name(8)
    selection = json.loads((pipeline.translator_dir("rlcyclegan") / "selection.json").read_text())
    assert list(selection["validation"]) == [checkpoint_name(i) for i in (4, 6, 8)]

    # another policy: every checkpoint is scored again
    scored.clear()
    pipeline.policy_path.write_bytes(b"another policy")
    pipeline.select_checkpoints()
    assert sorted(i for i, _ in scored) == [4, 6, 8]

    with pytest.raises(ConfigError, match="select_on shares the seeds \\[0\\] with eval_seeds"):
        load_config(PipelineConfig, tiny_config(tmp_path), ["translators.rlcyclegan.select_on=[0, 9]"])


@pytest.mark.parametrize("jobs", [1, 2])
def test_jobs_return_results_by_name_and_a_failure_does_not_stop_the_others(tmp_path: Path, jobs: int) -> None:
    pipeline = Pipeline(load_config(PipelineConfig, None, [f"jobs={jobs}"]), tmp_path, progress=False)
    assert pipeline._run_jobs([Job("root:four", math.sqrt, (16.0,)), Job("root:nine", math.sqrt, (81.0,))]) == {
        "root:four": 4.0, "root:nine": 9.0}
    failing = [Job("root:bad", math.sqrt, (-1.0,)), Job("root:two", math.sqrt, (4.0,))]
    with pytest.raises(ValueError, match="math domain error"):
        pipeline._run_jobs(failing)
    assert set(json.loads((tmp_path / "stages.json").read_text())) == {"root:four", "root:nine", "root:two"}


def test_a_reused_student_s_teacher_is_used_until_the_run_trains_its_own(tmp_path: Path) -> None:
    pipeline = Pipeline(load_config(PipelineConfig), tmp_path / "run", progress=False)
    assert pipeline.teacher_path == tmp_path / "run" / "teacher" / "teacher.zip"  # nothing yet: train it here
    elsewhere = tmp_path / "elsewhere" / "teacher.zip"
    pipeline.policy_path.parent.mkdir(parents=True)
    (pipeline.policy_path.parent / "summary.json").write_text(json.dumps({"teacher_path": str(elsewhere)}))
    assert pipeline.teacher_path == elsewhere
    # `--force` retrains the teacher into the run, never over the reused one; from then on the run uses its own
    (tmp_path / "run" / "teacher").mkdir()
    (tmp_path / "run" / "teacher" / "teacher.zip").write_bytes(b"")
    assert pipeline.teacher_path == tmp_path / "run" / "teacher" / "teacher.zip"


def test_the_student_learns_in_student_domain_and_one_from_another_domain_is_neither_reused_nor_overwritten(
        tmp_path: Path, monkeypatch) -> None:
    started: list[Job] = []
    monkeypatch.setattr(Pipeline, "_run_jobs", lambda self, jobs: started.extend(jobs) or {})
    config_path = tiny_config(tmp_path)
    jittered = load_config(PipelineConfig, config_path)  # the tiny config's student_domain: sim_floor_jitter
    Pipeline(jittered, tmp_path / "run", progress=False).stage_train()
    students = {job.name: job.args[0].domain for job in started if job.name.startswith("student:")}
    assert students == {"student:sim": "sim_floor_jitter"}
    # a student already trained in plain `sim`
    policy = tmp_path / "run" / "policy"
    policy.mkdir(parents=True)
    (policy / "student.safetensors").write_bytes(b"weights")
    (policy / "config.yaml").write_text(yaml.safe_dump({"domain": "sim"}))
    started.clear()
    with pytest.raises(ConfigError, match="trained in domain 'sim', not 'sim_floor_jitter'"):
        Pipeline(jittered, tmp_path / "run", progress=False).stage_train()
    assert (policy / "student.safetensors").read_bytes() == b"weights" and not started
    plain = load_config(PipelineConfig, config_path, ["student_domain=envs/domains/sim.yaml"])  # the same domain by path
    Pipeline(plain, tmp_path / "run", progress=False).stage_train()
    assert not [job for job in started if job.name.startswith("student:")]
    with pytest.raises(ConfigError, match="unknown domain 'simm'"):
        load_config(PipelineConfig, config_path, ["student_domain=simm"])


def test_returns_table_gives_no_percentage_of_a_reference_indistinguishable_from_zero() -> None:
    def condition(mean: float, low: float, high: float) -> dict:
        return {"mean": mean, "std": 1.0, "ci95": [low, high], "n": 6}

    table = render_returns_table({"returns": {"sim": condition(900.0, 890.0, 910.0),
                                              "real, no adaptation": condition(-6.0, -8.0, -4.0),
                                              PERFECT: condition(3.0, -12.8, 18.9)}})
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table.splitlines()[2:]}
    assert rows["sim"].endswith("| 100% | - |")
    assert rows["real, no adaptation"].endswith("| -1% | - |")


def test_train_starts_the_paired_translator_after_the_students_and_the_segmenter_last(tmp_path: Path, monkeypatch) -> None:
    started: list[Job] = []
    monkeypatch.setattr(Pipeline, "_run_jobs", lambda self, jobs: started.extend(jobs) or {})
    config = load_config(PipelineConfig, tiny_config(tmp_path), ["jobs=2", "dr_policy=true"])
    Pipeline(config, tmp_path / "run", progress=False).stage_train()
    assert [job.name for job in started] == ["translator:cyclegan", "translator:rlcyclegan", "student:sim",
                                             "student:randomized", "translator:oracle", "segmenter:sim"]
    assert [job.args[0].domain for job in started if job.name.startswith("student:")] == ["sim_floor_jitter", "randomized"]
    # each translator starts on one thread and re-chooses, so the last one running takes the freed core
    speeds = [job.args[0].speed for job in started if job.name.startswith("translator:")]
    assert [(s.threads, s.rechoose_threads_every) for s in speeds] == [(1, RECHOOSE_THREADS_EVERY)] * 3
