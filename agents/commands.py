"""``rlcyclegan train-policy``, ``eval-policy``, ``train-q`` and ``eval-q``.

``train-policy`` and ``train-q`` take a config (``--config experiments/policy_quick.yaml``, or a budget
name) plus ``key=value`` overrides, as every command here does; ``eval-*`` take plain flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


def _budget_config(budget: str | None, config: str | None, prefix: str) -> Path | None:
    """``--config`` wins; otherwise ``experiments/{prefix}_{budget}.yaml``."""
    if config is not None:
        return Path(config)
    if budget is None:
        return None
    path = EXPERIMENTS / f"{prefix}_{budget}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"budget file {path} is missing; pass --config FILE.yaml instead")
    return path


def run_train_policy(args: argparse.Namespace) -> int:
    from rlcyclegan.agents.train_policy import PolicyTrainConfig, train_policy
    from rlcyclegan.config import load_config

    overrides = list(args.overrides)
    for key, value in (("domain", args.domain), ("device", args.device), ("out", args.out),
                       ("teacher_path", args.teacher), ("seed", args.seed)):
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(PolicyTrainConfig, _budget_config(args.budget, args.config, "policy"), overrides)
    summary = train_policy(config, progress=not args.no_progress)
    teacher, student = summary["teacher_return"], summary["student_return"]
    print(f"run: {summary['run_dir']}")
    print(f"teacher: {teacher['mean']:.1f} +- {teacher['std']:.1f}   student: {student['mean']:.1f} +- "
          f"{student['std']:.1f} ({100 * summary['student_over_teacher']:.0f}% of the teacher)")
    print(f"wall time {summary['total_wall_s'] / 60:.1f} min, peak memory {summary['peak_memory_mb']:.0f} MiB")
    return 0


def run_eval_policy(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rlcyclegan.agents.evaluation import evaluate_policy, summarize
    from rlcyclegan.agents.policies import load_policy

    policy = load_policy(args.policy, device=args.device)
    with tqdm(total=args.episodes, desc=f"eval {args.domain}", unit="ep", disable=args.no_progress) as bar:
        returns = evaluate_policy(policy, args.domain, args.episodes, args.seed, args.max_steps,
                                  on_episode=lambda *_: bar.update())
    summary = summarize(returns)
    low, high = summary.ci95
    print(f"{args.domain}: mean {summary.mean:.1f}  std {summary.std:.1f}  95% CI [{low:.1f}, {high:.1f}]  "
          f"({summary.episodes} episodes)")
    if args.json:
        Path(args.json).write_text(json.dumps({**summary._asdict(), "returns": returns.tolist()}, indent=2))
    return 0


def run_train_q(args: argparse.Namespace) -> int:
    from rlcyclegan.agents.q_training import QTrainConfig, run_train_q
    from rlcyclegan.config import load_config

    overrides = list(args.overrides)
    for key, value in (("data", args.data), ("out", args.out), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    config = load_config(QTrainConfig, _budget_config(args.budget, args.config, "q"), overrides)
    summary = run_train_q(config, progress=not args.no_progress)
    print(f"Q ({summary['domain']}): {summary['q_path']}")
    if "spearman" in summary:
        print(_describe_check(summary, "held out", summary["min_remaining"]))
    if "check_data" in summary:
        print(_describe_check(summary["check_data"], summary["check_data"]["data"], config.horizon()))
    return 0


def _describe_check(check: dict, source: str, min_remaining: int) -> str:
    """One line for a ``QCheck`` (as a dict)."""
    low, high = check["spearman_ci95"]
    return (f"Spearman(Q, MC return), {check['episodes']} episodes ({source}): {check['spearman']:.3f} on "
            f"{check['steps']} steps >= {min_remaining} from the end (95% CI over episodes {low:.3f} to {high:.3f}); "
            f"{check['spearman_all_steps']:.3f} on all steps; {check['spearman_within_episodes']:.3f} within "
            "episodes, averaged")


def run_eval_q(args: argparse.Namespace) -> int:
    from rlcyclegan.agents.q_network import load_q
    from rlcyclegan.agents.q_training import last_episodes, q_return_check, truncation_horizon
    from rlcyclegan.data.loaders import RolloutDataset
    from rlcyclegan.device import resolve_device

    q = load_q(args.q, resolve_device(args.device))
    gamma = args.gamma if args.gamma is not None else float(q.metadata.get("gamma", 0.99))
    dataset = RolloutDataset(args.data, frame_stack=q.frame_stack)
    if dataset.image_size != q.image_size:
        raise ValueError(f"Q expects {q.image_size}x{q.image_size} frames but {args.data} has "
                         f"{dataset.image_size}x{dataset.image_size}")
    min_remaining = args.min_remaining if args.min_remaining is not None else truncation_horizon(gamma)
    check = q_return_check(q, last_episodes(dataset, args.episodes), gamma, min_remaining, q.frame_stack)
    print(f"gamma {gamma}. " + _describe_check(dataclasses.asdict(check), str(args.data), min_remaining))
    return 0


def _config_args(parser: argparse.ArgumentParser, prefix: str) -> None:
    parser.add_argument("--budget", choices=("quick", "standard"),
                        help=f"load experiments/{prefix}_BUDGET.yaml")
    parser.add_argument("--config", help="a YAML config file (instead of --budget)")
    parser.add_argument("--device", help="auto, cpu or cuda[:N]")
    parser.add_argument("--out", help="run directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. dagger.lr=1e-4")


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train-policy", help="train the state teacher (SB3) and the pixel student (DAgger)")
    _config_args(train, "policy")
    train.add_argument("--domain", help="training domain (default sim)")
    train.add_argument("--teacher", help="reuse this teacher zip instead of training one")
    train.add_argument("--seed", type=int)
    train.set_defaults(func=run_train_policy)

    evaluate = subparsers.add_parser("eval-policy", help="returns of a pixel policy: mean, std, 95%% CI")
    evaluate.add_argument("--policy", required=True, help="student .safetensors or SB3 pixel model .zip")
    evaluate.add_argument("--domain", default="sim", help="domain name or spec file")
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int, default=10_000, help="reset seed of the first episode")
    evaluate.add_argument("--max-steps", type=int, default=1000, help="episode length")
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--json", help="also write the returns and summary to this file")
    evaluate.add_argument("--no-progress", action="store_true")
    evaluate.set_defaults(func=run_eval_policy)

    train_q = subparsers.add_parser("train-q", help="TD-train a pixel Q-network on one domain's dataset")
    _config_args(train_q, "q")
    train_q.add_argument("--data", help="dataset directory from `rlcyclegan collect`")
    train_q.set_defaults(func=run_train_q)

    eval_q = subparsers.add_parser("eval-q", help="Spearman correlation of a Q-network with Monte-Carlo returns")
    eval_q.add_argument("--q", required=True, help="q.safetensors from train-q")
    eval_q.add_argument("--data", required=True, help="dataset of held-out episodes")
    eval_q.add_argument("--episodes", type=int, help="use the last N episodes (default all)")
    eval_q.add_argument("--gamma", type=float, help="discount (default: the one stored with Q)")
    eval_q.add_argument("--min-remaining", type=int,
                        help="skip steps closer than this to a truncated episode's end (default: where gamma^n < 0.05)")
    eval_q.add_argument("--device", default="auto")
    eval_q.set_defaults(func=run_eval_q)
