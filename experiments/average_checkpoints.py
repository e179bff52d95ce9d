"""Average the generators of several checkpoints of one training into one translator (post-hoc weight averaging).

The iterates of GAN training oscillate around a solution, and their average is often a better generator
than any one of them (Yazici et al., "The unusual effectiveness of averaging in GAN training", ICLR 2019).
Our translators' returns differ by hundreds from one checkpoint to the next (README, *frozen Q-networks*),
so this tests whether averaging the late checkpoints of a run beats its best single one. The generators use
instance norm without running statistics, so their weights are all there is to average.

``OUT`` gets both generators and ``translator.json``: it reads like a checkpoint everywhere a translator is
taken (``load_generator``, the deployment wrapper, ``score_translators.py``).

    python experiments/average_checkpoints.py --out runs/std16s1/translators/frozenq_18k_avg \\
        runs/std16s1/translators/frozenq_18k/checkpoints/step_000{12,15,18}000
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from rlcyclegan.networks import TRANSLATOR_FILE


def average_checkpoints(checkpoints: list[Path], out: Path) -> None:
    """Writes to ``out`` the element-wise mean of each generator's weights over ``checkpoints``."""
    if len(checkpoints) < 2:
        raise SystemExit("error: give at least two checkpoints to average")
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"error: {out} is not empty; give a new --out")
    metas = []
    for checkpoint in checkpoints:
        if not (checkpoint / TRANSLATOR_FILE).is_file():
            raise SystemExit(f"error: {checkpoint} is not a checkpoint (no {TRANSLATOR_FILE})")
        metas.append(json.loads((checkpoint / TRANSLATOR_FILE).read_text()))
        if metas[-1] != metas[0]:
            raise SystemExit(f"error: {checkpoint} holds another translator than {checkpoints[0]}; "
                             f"only checkpoints of one architecture average")
    averaged = {}
    for file in metas[0]["files"].values():
        states = [load_file(str(checkpoint / file)) for checkpoint in checkpoints]
        averaged[file] = {name: torch.stack([state[name].float() for state in states]).mean(0).to(weight.dtype)
                          for name, weight in states[0].items()}
    out.mkdir(parents=True, exist_ok=True)
    for file, state in averaged.items():
        save_file(state, str(out / file))
    shutil.copyfile(checkpoints[0] / TRANSLATOR_FILE, out / TRANSLATOR_FILE)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint directories (RUN/checkpoints/step_N)")
    parser.add_argument("--out", type=Path, required=True, help="directory for the averaged translator (new)")
    args = parser.parse_args(argv)
    average_checkpoints(args.checkpoints, args.out)
    print(f"{args.out}: generators averaged over {len(args.checkpoints)} checkpoints")


if __name__ == "__main__":
    main()
