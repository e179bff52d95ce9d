"""The ``rlcyclegan`` console script.

Each feature module registers its own subcommands through a ``register(subparsers)`` function that sets
``func`` on its parser; this file only lists those modules and turns user errors into one line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Modules that add subcommands, in the order they appear in `--help`.
COMMAND_MODULES = (
    "rlcyclegan.envs.commands",
    "rlcyclegan.data.commands",
    "rlcyclegan.agents.commands",
    "rlcyclegan.train_command",
    "rlcyclegan.pipeline_commands",
)

# Errors that mean "the input is wrong", reported as one line; anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlcyclegan",
        description="Sim-to-real transfer of pixel-based RL policies with RL-CycleGAN.",
    )
    parser.add_argument("--traceback", action="store_true", help="show the full traceback on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from rlcyclegan.gl import HeadlessGLError

    try:
        return int(args.func(args) or 0)
    except (*USER_ERRORS, HeadlessGLError) as err:
        if args.traceback or os.environ.get("RLCYCLEGAN_TRACEBACK"):
            raise
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"rlcyclegan {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlcyclegan {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
