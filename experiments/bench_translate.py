"""Per-frame latency of the deployment translator (``FrameTranslator``, what ``TranslateObservation`` runs).

Times the real2sim generator on uint8 frames at batch 1 and 8, for the default generator (ngf 32, 6 blocks)
and the smaller one the pipeline presets train (ngf 16, 4 blocks), at 1 and 2 torch threads, in fp32 and
(where asked) under bf16 autocast. Also counts each generator's floating-point operations per frame and
times a large fp32 matrix product, so a latency can be read against what this CPU can do at best.

    python experiments/bench_translate.py
    python experiments/bench_translate.py --checkpoint runs/std/translators/rlcyclegan   # a trained translator
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rlcyclegan.device import cpu_has_native_bf16, resolve_device
from rlcyclegan.networks import ResnetGenerator, load_generator
from rlcyclegan.wrappers import FrameTranslator


def frame_flops(generator: torch.nn.Module, image_size: int) -> int:
    """Floating-point operations of one frame's forward pass."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        generator(torch.zeros(1, 3, image_size, image_size))
    return counter.get_total_flops()


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def ms_per_frame(translator: FrameTranslator, batch: int, image_size: int, repeats: int) -> float:
    frames = np.random.default_rng(0).integers(0, 256, (batch, image_size, image_size, 3), dtype=np.uint8)
    translator(frames)  # warm-up: oneDNN picks its kernels on the first call
    return statistics.median(_seconds(lambda: translator(frames)) for _ in range(repeats)) / batch * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--bf16", action="store_true", help="also time bf16 autocast (slow on CPUs without native bf16)")
    parser.add_argument("--checkpoint", type=Path, help="also time a trained translator's real2sim generator")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    generators = {"default (ngf 32, 6 blocks)": ResnetGenerator(ngf=32, n_blocks=6),
                  "presets (ngf 16, 4 blocks)": ResnetGenerator(ngf=16, n_blocks=4)}
    if args.checkpoint:
        generators[f"trained: {args.checkpoint}"] = load_generator(args.checkpoint, "real2sim", torch.device("cpu"))
    precisions = [False, True] if args.bf16 else [False]
    print(f"torch {torch.__version__}, device {device}, native bf16: {cpu_has_native_bf16()}, "
          f"{args.image_size}x{args.image_size}")
    if device.type == "cpu":
        for threads in args.threads:
            torch.set_num_threads(threads)
            print(f"2048x2048 fp32 matrix product at {threads} thread(s): {matmul_gflops():.0f} GFLOP/s")
    print(f"\n{'generator':<30}{'GFLOP/frame':>12}{'threads':>9}{'precision':>11}"
          + "".join(f"{f'ms/frame @{b}':>14}" for b in args.batches))
    for name, generator in generators.items():
        gflop = frame_flops(generator, args.image_size) / 1e9
        translator_threads = args.threads if device.type == "cpu" else [torch.get_num_threads()]
        for threads in translator_threads:
            torch.set_num_threads(threads)
            for bf16 in precisions:
                translator = FrameTranslator(generator, str(device), bf16=bf16)
                cells = "".join(f"{ms_per_frame(translator, b, args.image_size, args.repeats):>14.2f}"
                                for b in args.batches)
                print(f"{name:<30}{gflop:>12.2f}{threads:>9}{'bf16' if bf16 else 'fp32':>11}{cells}", flush=True)


if __name__ == "__main__":
    main()
