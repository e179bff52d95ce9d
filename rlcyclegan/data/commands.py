"""``rlcyclegan collect`` and ``rlcyclegan dataset {info,grid}``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from rlcyclegan.config import ConfigError, from_dict, load_yaml, merge, parse_overrides

# CLI flag -> (CollectConfig field, type, help). Defaults come from the dataclass, so they are stated once.
_COLLECT_FLAGS: dict[str, tuple[str, type, str]] = {
    "--out": ("out", str, "dataset directory (created, or resumed when it already holds a dataset)"),
    "--domain": ("domain", str, "sim, real, randomized, or a domain spec file"),
    "--policy": ("policy", str, "'random', a saved pixel policy, or a state teacher zip (privileged: reads the true state)"),
    "--episodes": ("episodes", int, "total episodes the dataset should hold"),
    "--noise": ("noise", float, "std of Gaussian noise added to actions (then clipped to [-1, 1])"),
    "--noise-max": ("noise_max", float, "draw each episode's noise std uniformly from [--noise, --noise-max]"),
    "--seed": ("seed", int, "episode i uses env seed SEED+i"),
    "--workers": ("workers", int, "worker processes, one renderer each"),
    "--image-size": ("image_size", int, "side of the square frames in pixels"),
    "--frame-stack": ("frame_stack", int, "frames per observation the policy sees (default: the policy's own, else 3)"),
    "--max-steps": ("max_steps", int, "steps after which an episode is truncated"),
    "--compression": ("compression", str, "frame compression: gzip (level 1), lzf or none"),
}


def collect_config(args: argparse.Namespace) -> Any:
    """The ``CollectConfig`` from ``--config`` YAML, then ``key=value`` overrides, then explicit flags."""
    from rlcyclegan.data.collect import CollectConfig

    data = load_yaml(args.config) if args.config else {}
    data = merge(data, parse_overrides(args.overrides))
    flags = {field: getattr(args, field) for field, _, _ in _COLLECT_FLAGS.values() if hasattr(args, field)}
    data = merge(data, flags)
    if "out" not in data:
        raise ConfigError("collect needs --out DIR, the dataset directory to write or resume")
    return from_dict(CollectConfig, data)


def run_collect(args: argparse.Namespace) -> int:
    from rlcyclegan.data.collect import collect

    config = collect_config(args)
    result = collect(config)
    if result.collected == 0:
        print(f"{result.path} already holds all {config.episodes} episodes; nothing to collect")
    else:
        rate = result.transitions / max(result.seconds, 1e-9)
        print(f"wrote {result.collected} episode(s) ({result.transitions} transitions) to {result.path} in "
              f"{result.seconds:.1f} s ({rate:.0f} transitions/s); it now holds {result.total} episodes")
    return 0


def describe(path: str | Path) -> list[str]:
    """Lines for ``rlcyclegan dataset info``: size, episodes, return statistics, domain, provenance."""
    from rlcyclegan.data.loaders import RolloutDataset
    from rlcyclegan.data.storage import dataset_bytes

    dataset = RolloutDataset(path, frame_stack=1, cache=False)
    meta = dataset.metadata
    collection = meta["collection"]
    policy = collection["policy"]
    returns = dataset.episode_returns()
    lengths = dataset.episode_lengths
    ids = dataset.episode_ids
    size = dataset_bytes(dataset.path)
    size_per_10k = size / dataset.num_frames * 1e4 / 1e6
    return [
        f"dataset      {dataset.path}",
        f"domain       {dataset.domain_name} ({collection['domain']['kind']})",
        f"policy       {' '.join(str(policy[k]) for k in ('kind', 'path', 'name') if k in policy)}, "
        f"action noise {policy['noise']:g}" + (f" to {policy['noise_max']:g} per episode" if "noise_max" in policy else ""),
        f"episodes     {dataset.num_episodes} (ids {ids.min()}..{ids.max()}), {lengths.sum()} steps, "
        f"{dataset.num_transitions} usable transitions",
        f"frames       {dataset.num_frames} at {dataset.image_size}x{dataset.image_size}, stored one per step",
        f"returns      mean {returns.mean():.2f} +- {returns.std():.2f} (min {returns.min():.2f}, "
        f"max {returns.max():.2f})",
        f"length       mean {lengths.mean():.1f} (min {lengths.min()}, max {lengths.max()}; limit "
        f"{collection['max_steps']})",
        f"size         {size / 1e6:.2f} MB on disk ({size_per_10k:.1f} MB per 10k frames, {meta['compression']})",
        f"collection   seed {collection['seed']}, policy frame stack {collection['frame_stack']}",
        f"written by   rlcyclegan {meta['library_version']}, format version {meta['format_version']}",
    ]


def run_info(args: argparse.Namespace) -> int:
    print("\n".join(describe(args.dir)))
    return 0


def run_grid(args: argparse.Namespace) -> int:
    import imageio.v3 as iio

    from rlcyclegan.data.loaders import RolloutDataset
    from rlcyclegan.envs.commands import image_grid

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"--out must end in .png or .jpg, got {out}")
    dataset = RolloutDataset(args.dir, frame_stack=1, cache=False)
    rng = np.random.default_rng(args.seed)
    indices = np.sort(rng.choice(len(dataset), size=min(args.samples, len(dataset)), replace=False))
    frames = dataset.get_batch(indices).obs.numpy().transpose(0, 2, 3, 1)  # (N, H, W, 3)
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, image_grid(list(frames), columns=args.columns, scale=args.scale))
    print(f"wrote {out} ({len(frames)} frames of {dataset.domain_name} from {dataset.path})")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from rlcyclegan.data.collect import CollectConfig

    defaults = {f.name: f.default for f in dataclasses.fields(CollectConfig)}
    collect = subparsers.add_parser(
        "collect", help="roll out a behaviour policy in one domain and write (or resume) a dataset",
        description="Roll out episodes and write them as a dataset; re-running the same command resumes it.",
    )
    for flag, (field, kind, text) in _COLLECT_FLAGS.items():
        default = defaults[field]
        shown = f" (default: {default})" if default is not None and field != "out" else ""
        collect.add_argument(flag, dest=field, type=kind, default=argparse.SUPPRESS, help=text + shown)
    collect.add_argument("--config", help="YAML file with collect settings (flags override it)")
    collect.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more settings, e.g. max_steps=200")
    collect.set_defaults(func=run_collect)

    dataset = subparsers.add_parser("dataset", help="inspect a collected dataset")
    actions = dataset.add_subparsers(dest="dataset_command", metavar="ACTION", required=True)
    info = actions.add_parser("info", help="print size, episodes, return statistics and domain")
    info.add_argument("dir", help="dataset directory")
    info.set_defaults(func=run_info)
    grid = actions.add_parser("grid", help="write a picture grid of sample frames")
    grid.add_argument("dir", help="dataset directory")
    grid.add_argument("--out", default="grid.png", help="output picture (.png)")
    grid.add_argument("--samples", type=_positive, default=32, help="frames to show (random, without repeats)")
    grid.add_argument("--columns", type=_positive, default=8)
    grid.add_argument("--scale", type=_positive, default=2, help="nearest-neighbour upscaling")
    grid.add_argument("--seed", type=int, default=0)
    grid.set_defaults(func=run_grid)
