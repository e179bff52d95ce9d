"""``rlcyclegan render`` and ``rlcyclegan domains``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import yaml

from rlcyclegan.config import ConfigError, to_dict


def image_grid(images: list[np.ndarray], columns: int, scale: int = 1, pad: int = 2) -> np.ndarray:
    """Tile ``(H, W, 3)`` uint8 images into one picture, row by row, with white padding."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = image
    return np.kron(grid, np.ones((scale, scale, 1), dtype=np.uint8)) if scale > 1 else grid


def sample_frames(domain: str, samples: int, steps: int, image_size: int, seed: int) -> list[np.ndarray]:
    """Frames after ``steps`` random actions from ``samples`` seeded resets (one sampled look each)."""
    from rlcyclegan.envs import make_env

    env = make_env(domain, image_size=image_size, frame_stack=1)
    env.action_space.seed(seed)
    frames = []
    for i in range(samples):
        obs, _ = env.reset(seed=seed + i)
        for _ in range(steps):
            obs, *_ = env.step(env.action_space.sample())
        frames.append(obs[..., -3:])
    env.close()
    return frames


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def run_render(args: argparse.Namespace) -> int:
    import imageio.v3 as iio

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"--out must end in .png or .jpg, got {out}")
    rows = []
    for domain in args.domain:
        rows.extend(sample_frames(domain, args.samples, args.steps, args.image_size, args.seed))
    out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(out, image_grid(rows, columns=args.samples, scale=args.scale))
    print(f"wrote {out} ({len(args.domain)} domain(s) x {args.samples} samples at {args.image_size}x{args.image_size})")
    return 0


def run_domains(args: argparse.Namespace) -> int:
    from rlcyclegan.envs import NAMED_ENV_IDS, RandomizedDomain, load_domain, named_domains

    if args.show:
        domain = load_domain(args.show)
        print(yaml.safe_dump(to_dict(domain), sort_keys=False), end="")
        return 0
    for name in named_domains():
        domain = load_domain(name)
        if isinstance(domain, RandomizedDomain):
            summary = f"randomized: {len(domain.ranges)} ranges" + (", random colours" if domain.randomize_colors else "")
        else:
            v, p = domain.visual, domain.physical
            summary = (f"checker {v.checker_size:.2f} m, thickness x{p.thickness_scale:g}, "
                       f"torso x{p.torso_length_scale:g}, legs x{p.leg_length_scale:g}, mass x{p.mass_scale:g}")
        print(f"{name:<12} {NAMED_ENV_IDS.get(name, '-'):<38} {summary}")
    print("\nany spec file works too: --domain path/to/spec.yaml (see `rlcyclegan domains --show real`)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    render = subparsers.add_parser("render", help="write a grid of sample observations of one or more domains")
    render.add_argument("--domain", nargs="+", default=["sim", "real"], help="domain names or spec files (one row each)")
    render.add_argument("--out", default="frames.png", help="output picture (.png)")
    render.add_argument("--samples", type=_positive, default=6, help="frames per domain (one seeded episode each)")
    render.add_argument("--steps", type=int, default=25, help="random actions before each frame")
    render.add_argument("--image-size", type=_positive, default=64)
    render.add_argument("--scale", type=_positive, default=2, help="nearest-neighbour upscaling of the picture")
    render.add_argument("--seed", type=int, default=0)
    render.set_defaults(func=run_render)

    domains = subparsers.add_parser("domains", help="list the shipped domains, or print one spec")
    domains.add_argument("--show", metavar="DOMAIN", help="print this domain's full spec as YAML")
    domains.set_defaults(func=run_domains)
