"""Did RL-CycleGAN's training change its Q-networks? The pipeline's Q check again, at translator checkpoints.

With ``loss.rl_scene_trains_q`` (the paper's setting, the default) the RL-scene loss trains Q_sim and Q_real
on translated images along with the generators. Were the Q-networks to drift until they no longer ranked
returns, the RL-scene loss would stop tying the translation to the task. For each checkpoint this scores
its Q-networks with the run's Q check (Spearman of ``Q(x_t, a_t)`` with the discounted return, on the
held-out ``data/{sim,real}_check`` rollouts), beside the run's own Q-networks that the training started
from, and measures how far the values moved on those steps: mean ``|Q_checkpoint - Q_run|``.

    python experiments/q_drift.py --run runs/std16s1 --out runs/std16s1/q_drift.json \\
        --checkpoints runs/std16s1/translators/rlcg_9k/checkpoints/step_00009000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from rlcyclegan.agents.q_network import load_q
from rlcyclegan.agents.q_training import QTrainConfig, q_predictions, return_check
from rlcyclegan.config import load_config
from rlcyclegan.data.loaders import RolloutDataset

DOMAINS = ("sim", "real")


def drift(run: Path, checkpoints: list[Path]) -> dict[str, dict[str, dict]]:
    """Per domain, ``{"run": check, str(checkpoint): check + mean_abs_change}`` on the domain's check rollouts."""
    results: dict[str, dict[str, dict]] = {}
    for domain in DOMAINS:
        config = load_config(QTrainConfig, run / "q" / domain / "config.yaml")  # the settings of its Q check
        if config.check_data is None:
            raise SystemExit(f"error: {run}/q/{domain} was trained without check rollouts (check_data)")
        episodes = list(RolloutDataset(config.check_data, frame_stack=config.frame_stack, cache=False).episodes())
        reference = q_predictions(load_q(run / "q" / domain / "q.safetensors"), episodes, config.frame_stack)
        rows = {"run": dataclasses.asdict(return_check(reference, episodes, config.gamma, config.horizon()))}
        for checkpoint in checkpoints:
            predicted = q_predictions(load_q(checkpoint / f"Q_{domain}.safetensors"), episodes, config.frame_stack)
            change = np.abs(np.concatenate(predicted) - np.concatenate(reference)).mean()
            check = return_check(predicted, episodes, config.gamma, config.horizon())
            rows[str(checkpoint)] = {**dataclasses.asdict(check), "mean_abs_change": float(change)}
        results[domain] = rows
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a pipeline run: its q/ and data/*_check are used")
    parser.add_argument("--checkpoints", type=Path, nargs="+", required=True,
                        help="translator checkpoints with Q-networks (RUN/checkpoints/step_N)")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    for checkpoint in args.checkpoints:
        missing = [f"Q_{d}.safetensors" for d in DOMAINS if not (checkpoint / f"Q_{d}.safetensors").is_file()]
        if missing:
            raise SystemExit(f"error: {checkpoint} has no {' or '.join(missing)}: not a checkpoint of a run with Q")
    torch.set_num_threads(args.threads)
    results = drift(args.run, args.checkpoints)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    for domain, rows in results.items():
        for name, check in rows.items():
            low, high = check["spearman_ci95"]
            moved = f", mean |change of Q| {check['mean_abs_change']:.2f}" if "mean_abs_change" in check else ""
            print(f"Q_{domain} {name}: Spearman {check['spearman']:.3f} [{low:.2f}, {high:.2f}], "
                  f"within episodes {check['spearman_within_episodes']:.3f}{moved}")


if __name__ == "__main__":
    main()
