"""``rlcyclegan train``: RL-CycleGAN (or CycleGAN) from a YAML config plus ``key=value`` overrides.

Examples::

    rlcyclegan train --config experiments/rlcyclegan.yaml data.sim=data/sim data.real=data/real
    rlcyclegan train --config experiments/cyclegan_detached.yaml iterations=5000 speed.compile=true
    rlcyclegan train --resume runs/rlcyclegan__0__1732377600          # continue from checkpoints/latest
    torchrun --nproc_per_node 2 $(which rlcyclegan) train --config experiments/rlcyclegan.yaml
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import os
import textwrap
from pathlib import Path

from rlcyclegan.config import load_config


def field_docs(cls: type) -> dict[str, str]:
    """``{"key": "docstring"}`` for a dataclass's fields documented with a string right after them."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, after in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def config_keys(config: object, prefix: str = "") -> list[str]:
    """One help line per key of a config instance, nested dataclasses expanded (``loss.lambda_cycle = 10.0 # ...``)."""
    lines = []
    docs = field_docs(type(config))
    for f in dataclasses.fields(config):  # type: ignore[arg-type]
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            lines += config_keys(value, f"{prefix}{f.name}.")
        else:
            shown = str(value) if isinstance(value, Path) else repr(value)
            lines.append(f"  {prefix}{f.name} = {shown}" + (f"  # {docs[f.name]}" if f.name in docs else ""))
    return lines


def run_train(args: argparse.Namespace) -> int:
    from rlcyclegan.train_config import TrainConfig
    from rlcyclegan.train_loop import train

    if args.resume is not None:
        if args.config is not None:
            raise ValueError("--resume continues a run with its own config.yaml; drop --config (overrides still apply)")
        config_path = Path(args.resume) / "config.yaml"
        if not config_path.is_file():
            raise FileNotFoundError(f"{args.resume} is not a run directory (no config.yaml)")
        config = load_config(TrainConfig, config_path, [*args.overrides, f"run_dir={args.resume}"])
    else:
        config = load_config(TrainConfig, args.config, args.overrides)
    run_dir = train(config, resume=args.resume is not None, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run directory: {run_dir} (tensorboard --logdir {run_dir / 'tb'})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from rlcyclegan.train_config import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train the RL-CycleGAN translator (CycleGAN with the RL weights at 0)",
        description="Train RL-CycleGAN on a sim and a real domain. Settings come from the dataclass defaults, "
                    "then --config, then KEY=VALUE overrides. Under torchrun the same command trains with DDP.",
        epilog="config keys (KEY=VALUE) and defaults:\n" + "\n".join(config_keys(TrainConfig())),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="YAML file, e.g. experiments/rlcyclegan.yaml")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue RUN_DIR from checkpoints/latest with its config.yaml")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. loss.lambda_rl=0")
    parser.set_defaults(func=run_train)
