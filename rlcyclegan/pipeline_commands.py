"""``rlcyclegan pipeline`` and ``rlcyclegan evaluate``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlcyclegan.config import load_config


def _load(args: argparse.Namespace):
    from rlcyclegan.pipeline import Pipeline, PipelineConfig, preset_path

    config = load_config(PipelineConfig, args.config or preset_path(args.preset), args.overrides)
    return Pipeline(config, Path(args.out), force=args.force, progress=not args.no_progress)


def _print_results(run_dir: Path) -> None:
    from rlcyclegan.pipeline import render_returns_table

    results = run_dir / "results.json"
    if results.exists():
        print(render_returns_table(json.loads(results.read_text())))
        print(f"report: {run_dir / 'report.md'}")


def run_pipeline(args: argparse.Namespace) -> int:
    from rlcyclegan.pipeline import STAGES

    pipeline = _load(args)
    pipeline.run(tuple(args.stage) if args.stage else STAGES)
    _print_results(pipeline.run_dir)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    pipeline = _load(args)
    pipeline.stage_evaluate(even_if_current=True)
    _print_results(pipeline.run_dir)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="quick", help="experiments/pipeline_PRESET.yaml (quick, standard, long)")
    parser.add_argument("--config", help="a pipeline YAML instead of a preset")
    parser.add_argument("--out", required=True, help="run directory, e.g. runs/demo")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. eval_episodes=5")


def register(subparsers: argparse._SubParsersAction) -> None:
    from rlcyclegan.pipeline import STAGES

    pipeline = subparsers.add_parser("pipeline", help="teacher, rollouts, Q-networks, students and translators, evaluation, report")
    _common(pipeline)
    pipeline.add_argument("--stage", nargs="+", choices=STAGES, help="run only these stages (in this order)")
    pipeline.add_argument("--force", action="store_true", help="redo stages whose outputs exist")
    pipeline.set_defaults(func=run_pipeline)

    evaluate = subparsers.add_parser("evaluate", help="evaluate every condition of a pipeline run and write the report")
    _common(evaluate)
    evaluate.add_argument("--force", action="store_true", help="run every job again, not only those whose inputs changed")
    evaluate.set_defaults(func=run_evaluate)
