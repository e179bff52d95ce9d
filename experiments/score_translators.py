"""Score translators with several students: how `runs/std9`'s rows and the *Students* tables were measured.

A transferred return measures the student as much as the translator (README, *Students*), so one
translator is scored with several sim-trained students. Each (translator, student) pair runs the
pipeline's `real + translator` condition: the same episodes, reset seeds and episode length as the
run's own evaluation (``eval_episodes``, ``eval_seeds``, ``eval_max_steps`` of the pipeline config).
``--quality`` adds the pipeline's translation-quality job for these translators: the same held-out real
states, segmenter and Q-networks as ``RUN``'s own evaluation (its seed and settings), and a picture grid.

A translator is a run directory (its latest checkpoint) or one checkpoint of it (``RUN/checkpoints/step_N``,
named ``RUN@N`` in the results), so the iterates of one training can be scored side by side.

Every pair is written to ``--out`` as soon as it is measured; pairs already in the file are skipped, so an
interrupted run resumes. The file records the episodes, reset seeds and episode length its returns were
measured with, and a run with other settings is refused rather than mixed into it. With ``--quality`` and
no ``--students`` only the image scores are measured.

    python experiments/score_translators.py --run runs/std9 --preset standard --out runs/std9/scores.json \\
        --translators runs/std9/translators/detached_stack3_extra6 \\
        --students runs/std3/policy/student.safetensors runs/std6s1/policy/student.safetensors --quality
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlcyclegan.checkpoint import checkpoint_iteration
from rlcyclegan.config import ConfigError, load_config
from rlcyclegan.pipeline import Condition, Pipeline, PipelineConfig, condition_returns_of, preset_path


def translator_name(path: Path) -> str:
    """``RUN`` for a run directory, ``RUN@N`` for its checkpoint after N iterations (``RUN/checkpoints/step_N``)."""
    iteration = checkpoint_iteration(path)
    return path.name if iteration is None else f"{path.parent.parent.name}@{iteration}"


def evaluation_settings(config: PipelineConfig) -> dict:
    """What a return depends on besides the translator and the student; returns measured otherwise do not compare."""
    return {"eval_episodes": config.eval_episodes, "eval_seeds": list(config.eval_seeds),
            "eval_max_steps": config.eval_max_steps}


def score(pipeline: Pipeline, translators: list[Path], students: list[Path], out: Path, quality: bool) -> dict:
    """Fills ``out`` with ``returns`` per ``"translator | student"`` and, with ``quality``, ``translation``."""
    c = pipeline.config
    try:
        results = json.loads(out.read_text()) if out.exists() else {}
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {out} is not valid JSON ({error}); move it away to start afresh") from None
    returns = results.setdefault("returns", {})
    if students:
        settings = evaluation_settings(c)
        if returns and results.get("evaluation") != settings:
            raise SystemExit(f"error: {out} holds returns measured with "
                             f"{results.get('evaluation', 'unrecorded settings')}, not {settings}; give another --out")
        results["evaluation"] = settings
    for translator in translators:
        for student in students:
            key = f"{translator_name(translator)} | {student}"
            if key in returns:
                continue
            r = returns[key] = condition_returns_of(Condition(student, "real", translator=translator),
                                                    c.eval_episodes, c.eval_seeds, c.eval_max_steps, c.device)
            out.write_text(json.dumps(results, indent=2))
            print(f"{key}: {r['mean']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]", flush=True)
    if quality:
        dirs = {translator_name(t): t for t in translators}
        results["translation"] = pipeline.translation_quality(dirs, grid_path=out.with_suffix(".png"))
        out.write_text(json.dumps(results, indent=2))
        for name in dirs:
            scores = results["translation"][name]
            print(f"{name}: FCN class IoU {scores['fcn_class_iou']:.3f}, Q-consistency {scores['q_consistency']:.1f}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a pipeline run: its data/ and q/ are used")
    parser.add_argument("--preset", default="standard", help="the run's preset (quick, standard)")
    parser.add_argument("--config", help="the run's pipeline YAML, instead of a preset")
    parser.add_argument("--translators", type=Path, nargs="+", required=True,
                        help="translator run directories or checkpoints (RUN/checkpoints/step_N)")
    parser.add_argument("--students", type=Path, nargs="+", default=[],
                        help="sim-trained student files (none: image scores only, with --quality)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (the grid goes beside it as .png)")
    parser.add_argument("--quality", action="store_true", help="also the translation-quality scores")
    parser.add_argument("overrides", nargs="*", help="pipeline key=value overrides, e.g. eval_episodes=2")
    args = parser.parse_args(argv)
    if not args.students and not args.quality:
        parser.error("nothing to measure: give --students, --quality or both")
    for path in [args.run, *args.translators, *args.students]:
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist")
    try:
        config = load_config(PipelineConfig, args.config or preset_path(args.preset), args.overrides)
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    score(Pipeline(config, args.run, progress=False), args.translators, args.students, args.out, args.quality)


if __name__ == "__main__":
    main()
