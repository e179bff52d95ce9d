"""Score translators with several students: how `runs/std9`'s rows and the *Students* tables were measured.

A transferred return measures the student as much as the translator (README, *Students*), so one
translator is scored with several sim-trained students. Each (translator, student) pair runs the
pipeline's `real + translator` condition: the same episodes, reset seeds and episode length as the
run's own evaluation (``eval_episodes``, ``eval_seeds``, ``eval_max_steps`` of the pipeline config).
``--quality`` adds the pipeline's translation-quality job for these translators: the same held-out real
states, segmenter and Q-networks as ``RUN``'s own evaluation (its seed and settings), and a picture grid.

A translator is a run directory (its latest checkpoint) or one checkpoint of it (``RUN/checkpoints/step_N``,
named ``RUN@N`` in the results), so the iterates of one training can be scored side by side.

``--select-on SEED ...`` picks the iterate to deploy without looking at the evaluation episodes: every
translator is first scored on validation episodes reset from these seeds (``validation_returns``), and
only the best checkpoint of each training run (per student) goes on to the evaluation seeds
(``selected``, ``returns``). Picking the best iterate on the evaluation episodes themselves flatters it.

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


def training_run(translator: Path) -> Path:
    """The training run a translator comes from: ``RUN`` for ``RUN`` and for ``RUN/checkpoints/step_N``."""
    return translator if checkpoint_iteration(translator) is None else translator.parent.parent


def measure(results: dict, field: str, pairs: list[tuple[Path, Path]], seeds: list[int], config: PipelineConfig,
            out: Path) -> dict:
    """``results[field]["translator | student"]``: each pair's returns on episodes reset from ``seeds``, written to
    ``out`` as soon as measured (pairs already there are skipped)."""
    returns = results.setdefault(field, {})
    for translator, student in pairs:
        key = f"{translator_name(translator)} | {student}"
        if key in returns:
            continue
        r = returns[key] = condition_returns_of(Condition(student, "real", translator=translator),
                                                config.eval_episodes, seeds, config.eval_max_steps, config.device)
        out.write_text(json.dumps(results, indent=2))
        print(f"{field}: {key}: {r['mean']:.1f} [{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]", flush=True)
    return returns


def score(pipeline: Pipeline, translators: list[Path], students: list[Path], out: Path, quality: bool,
          select_on: list[int] | None = None) -> dict:
    """Fills ``out`` with ``returns`` per ``"translator | student"`` and, with ``quality``, ``translation``; with
    ``select_on`` also ``validation_returns`` and ``selected``, and ``returns`` for the selected pairs only."""
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
    pairs = [(translator, student) for translator in translators for student in students]
    if select_on and students:
        pairs = select(results, pairs, select_on, c, out)
    measure(results, "returns", pairs, c.eval_seeds, c, out)
    if quality:
        dirs = {translator_name(t): t for t in translators}
        results["translation"] = pipeline.translation_quality(dirs, grid_path=out.with_suffix(".png"))
        out.write_text(json.dumps(results, indent=2))
        for name in dirs:
            scores = results["translation"][name]
            print(f"{name}: FCN class IoU {scores['fcn_class_iou']:.3f}, Q-consistency {scores['q_consistency']:.1f}")
    return results


def select(results: dict, pairs: list[tuple[Path, Path]], seeds: list[int], config: PipelineConfig,
           out: Path) -> list[tuple[Path, Path]]:
    """The pair with the best validation return (episodes reset from ``seeds``) per training run and student."""
    if overlap := sorted(set(seeds) & set(config.eval_seeds)):
        raise SystemExit(f"error: --select-on seeds {overlap} are also evaluation seeds; validation needs others")
    settings = {**evaluation_settings(config), "eval_seeds": list(seeds)}
    if results.get("validation_returns") and results.get("validation") != settings:
        raise SystemExit(f"error: {out} holds validation returns measured with {results.get('validation')}, "
                         f"not {settings}; give another --out")
    results["validation"] = settings
    validation = measure(results, "validation_returns", pairs, seeds, config, out)
    groups: dict[tuple[Path, Path], list[Path]] = {}
    for translator, student in pairs:
        groups.setdefault((training_run(translator), student), []).append(translator)
    best = {(run, student): max(members, key=lambda t: validation[f"{translator_name(t)} | {student}"]["mean"])
            for (run, student), members in groups.items()}  # max: the first of equal returns, in the order given
    results["selected"] = {f"{run} | {student}": translator_name(t) for (run, student), t in best.items()}
    out.write_text(json.dumps(results, indent=2))
    return [(t, student) for (_, student), t in best.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a pipeline run: its data/ and q/ are used")
    parser.add_argument("--preset", default="standard", help="the run's preset (quick, standard, long)")
    parser.add_argument("--config", help="the run's pipeline YAML, instead of a preset")
    parser.add_argument("--translators", type=Path, nargs="+", required=True,
                        help="translator run directories or checkpoints (RUN/checkpoints/step_N)")
    parser.add_argument("--students", type=Path, nargs="+", default=[],
                        help="sim-trained student files (none: image scores only, with --quality)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON (the grid goes beside it as .png)")
    parser.add_argument("--quality", action="store_true", help="also the translation-quality scores")
    parser.add_argument("--select-on", type=int, nargs="+", metavar="SEED",
                        help="validation reset seeds: only each training run's best checkpoint on them is scored "
                             "on the evaluation seeds")
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
    score(Pipeline(config, args.run, progress=False), args.translators, args.students, args.out, args.quality,
          args.select_on)


if __name__ == "__main__":
    main()
