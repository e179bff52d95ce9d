"""Time RL-CycleGAN training iterations of the same networks in three ways, in one run.

1. **plain**: a plain fp32 eager loop written the way the reference CycleGAN code reads: NCHW tensors,
   ``nn.InstanceNorm2d``, six separate generator calls (G(x), F(G(x)), F(y), G(F(y)), G(y), F(x)), separate
   discriminator calls on real and fake, one Q-network call per Q-value, batches sampled on the training
   thread. Same architecture, same initial weights, same batches, same losses and update order as ours.
2. **default**: ``RLCycleGANTrainer`` with the default ``SpeedConfig``: group-norm instance norm, three batched
   generator calls, one call per discriminator and Q-network per update, background batch sampling, the
   thread count chosen by timing (as ``rlcyclegan train`` does), channels-last and bf16 autocast only where
   they pay (CUDA, native-bf16 CPUs). When that thread count differs from torch's default, the plain loop is
   also timed at it (``plain@Nt``), so what the code gains and what the thread choice gains show apart.
3. **all**: every speed option on: the defaults plus ``torch.compile`` and bf16 autocast (emulated, and slow,
   on CPUs without native bf16; reported as measured). Its first iterations, which compile, are timed apart.
   (channels-last is left to its default: on an AVX2 CPU it was measured slower for these networks.)

Prints images/s (frames through the translator per second: 2 domains x batch x frame stack per iteration),
the ratios, and how far the first iterations' losses of each way are from the plain loop's. It also counts the
floating-point operations of one iteration (``torch.utils.flop_counter``) and times a large fp32 matrix product
at the same thread count: each way's GFLOP/s against that product's shows how much room a faster loop could
still find on this machine without changing the arithmetic.

    python experiments/bench_train.py                 # 64x64, the default networks (compiling takes minutes on 2 cores)
    python experiments/bench_train.py --iterations 2 --no-compile
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rlcyclegan.agents.q_network import PixelQNetwork, make_target, polyak_update
from rlcyclegan.config import load_config
from rlcyclegan.data.batches import TransitionBatch, frames_to_float
from rlcyclegan.data.loaders import RolloutDataset
from rlcyclegan.device import cpu_has_native_bf16
from rlcyclegan.image_pool import ImagePool
from rlcyclegan.losses import (
    GAN_LOSSES,
    cycle_loss,
    discriminator_loss,
    identity_loss,
    rl_scene_loss,
    td_loss,
)
from rlcyclegan.networks import PatchDiscriminator, ResnetGenerator, reference_instance_norm
from rlcyclegan.train_config import TrainConfig
from rlcyclegan.train_loop import Prefetcher, batch_rng, choose_threads
from rlcyclegan.trainer import ConstantThenLinear, RLCycleGANTrainer

COMPARED = ("losses/generators", "losses/D_real", "losses/D_sim", "losses/cycle_forward", "losses/rl_scene",
            "losses/td_sim", "losses/critics")


class PlainLoop:
    """The baseline: reference-style eager fp32 RL-CycleGAN, one network call per image set, nothing batched."""

    def __init__(self, config: TrainConfig, image_size: int, frame_stack: int, action_dim: int) -> None:
        torch.manual_seed(config.seed)  # the same construction order as RLCycleGANTrainer: the same weights
        m, q, o = config.model, config.q, config.optim
        self.G = ResnetGenerator(3, 3, m.ngf, m.n_blocks, reference_instance_norm)
        self.F = ResnetGenerator(3, 3, m.ngf, m.n_blocks, reference_instance_norm)
        self.D_Y = PatchDiscriminator(3, m.ndf, m.d_layers, reference_instance_norm)
        self.D_X = PatchDiscriminator(3, m.ndf, m.d_layers, reference_instance_norm)
        self.Q_sim = PixelQNetwork(frame_stack, action_dim, image_size, q.features_dim, q.hidden_dim, q.width)
        self.Q_real = PixelQNetwork(frame_stack, action_dim, image_size, q.features_dim, q.hidden_dim, q.width)
        self.Q_sim_t, self.Q_real_t = make_target(self.Q_sim), make_target(self.Q_real)
        self.k, self.config, self.w = frame_stack, config, config.loss.resolved()
        betas = (o.beta1, o.beta2)
        self.opt_G = torch.optim.Adam([*self.G.parameters(), *self.F.parameters()], lr=o.lr, betas=betas)
        self.opt_D = torch.optim.Adam([*self.D_Y.parameters(), *self.D_X.parameters()], lr=o.lr, betas=betas)
        self.opt_Q = torch.optim.Adam([*self.Q_sim.parameters(), *self.Q_real.parameters()], lr=q.lr)
        schedule = ConstantThenLinear(config.iterations, round(o.constant_fraction * config.iterations))
        self.schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in (self.opt_G, self.opt_D, self.opt_Q)]
        self.pool_Y = ImagePool(o.pool_size, torch.Generator().manual_seed(config.seed * 2 + 1))
        self.pool_X = ImagePool(o.pool_size, torch.Generator().manual_seed(config.seed * 2 + 2))
        self.gan = GAN_LOSSES[self.w.gan]

    def stack(self, frames: torch.Tensor) -> torch.Tensor:
        n, c, h, w = frames.shape
        return frames.reshape(n // self.k, c * self.k, h, w)  # (B, 3k, H, W)

    def scene(self, x_s, y_s, fake_y, rec_x, fake_x, rec_y, a_x, a_y) -> torch.Tensor:
        q = (self.Q_sim(x_s, a_x), self.Q_real(self.stack(fake_y), a_x), self.Q_sim(self.stack(rec_x), a_x),
             self.Q_real(y_s, a_y), self.Q_sim(self.stack(fake_x), a_y), self.Q_real(self.stack(rec_y), a_y))
        return rl_scene_loss(*q)

    def step(self, sim: TransitionBatch, real: TransitionBatch) -> dict[str, float]:
        w, gamma = self.w, self.config.q.gamma
        x_s, y_s = frames_to_float(sim.obs), frames_to_float(real.obs)
        b, c, h, wd = x_s.shape
        x, y = x_s.reshape(b * self.k, 3, h, wd), y_s.reshape(b * self.k, 3, h, wd)
        # generators, D and Q frozen
        for net in (self.D_Y, self.D_X, self.Q_sim, self.Q_real):
            net.requires_grad_(False)
        fake_y = self.G(x)
        rec_x = self.F(fake_y)
        fake_x = self.F(y)
        rec_y = self.G(fake_x)
        idt_y, idt_x = self.G(y), self.F(x)
        loss_G = (w.lambda_gan * (self.gan(self.D_Y(fake_y), True) + self.gan(self.D_X(fake_x), True))
                  + w.lambda_cycle * (cycle_loss(x, rec_x) + cycle_loss(y, rec_y))
                  + w.lambda_identity * w.lambda_cycle * (identity_loss(y, idt_y) + identity_loss(x, idt_x))
                  + w.lambda_rl_scene * self.scene(x_s, y_s, fake_y, rec_x, fake_x, rec_y, sim.action, real.action))
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        # discriminators on pooled fakes
        for net in (self.D_Y, self.D_X):
            net.requires_grad_(True)
        pool_y, pool_x = self.pool_Y.query(fake_y), self.pool_X.query(fake_x)
        loss_D_real = discriminator_loss(self.D_Y(y), self.D_Y(pool_y), self.gan)
        loss_D_sim = discriminator_loss(self.D_X(x), self.D_X(pool_x), self.gan)
        self.opt_D.zero_grad(set_to_none=True)
        (loss_D_real + loss_D_sim).backward()
        self.opt_D.step()
        # Q-networks: TD + RL-scene on detached images
        for net in (self.Q_sim, self.Q_real):
            net.requires_grad_(True)
        with torch.no_grad():
            v_sim = self.Q_sim_t(frames_to_float(sim.next_obs), sim.next_action)
            v_real = self.Q_real_t(frames_to_float(real.next_obs), real.next_action)
        td_sim = td_loss(self.Q_sim(x_s, sim.action), sim.reward, v_sim, sim.terminated, gamma)
        td_real = td_loss(self.Q_real(y_s, real.action), real.reward, v_real, real.terminated, gamma)
        detached = (t.detach() for t in (fake_y, rec_x, fake_x, rec_y))
        loss_Q = w.lambda_rl * (td_sim + td_real) + w.lambda_rl_scene * self.scene(x_s, y_s, *detached, sim.action,
                                                                                  real.action)
        self.opt_Q.zero_grad(set_to_none=True)
        loss_Q.backward()
        self.opt_Q.step()
        polyak_update(self.Q_sim, self.Q_sim_t, self.config.q.tau)
        polyak_update(self.Q_real, self.Q_real_t, self.config.q.tau)
        for s in self.schedulers:
            s.step()
        return {"losses/generators": loss_G.item(), "losses/D_real": loss_D_real.item(),
                "losses/D_sim": loss_D_sim.item(), "losses/cycle_forward": cycle_loss(x, rec_x).item(),
                "losses/td_sim": td_sim.item(), "losses/critics": loss_Q.item()}


@dataclasses.dataclass
class Timing:
    name: str
    step_seconds: list[float]
    losses: list[dict[str, float]]
    warmup: int

    def images_per_s(self, frames: int) -> float:
        return frames / statistics.median(self.step_seconds[self.warmup:])


def time_loop(name: str, step: Callable, batches, iterations: int, warmup: int) -> Timing:
    seconds, losses = [], []
    iterator = iter(batches)
    for _ in range(iterations):
        start = time.perf_counter()
        sim, real = next(iterator)  # sampling is on the clock: where it runs is part of each way
        losses.append(step(sim, real))
        seconds.append(time.perf_counter() - start)
        print(f"  {name}: iteration {len(seconds)} took {seconds[-1]:.2f} s", flush=True)
    return Timing(name, seconds, losses, warmup)


def relative_gaps(reference: list[dict[str, float]], other: list[dict[str, float]], iterations: int) -> list[float]:
    """Per iteration, the largest relative difference between the two ways' losses (keys both report)."""
    return [max(abs(o[k] - r[k]) / max(abs(r[k]), 1e-8) for k in COMPARED if k in r and k in o)
            for r, o in zip(reference[:iterations], other[:iterations], strict=True)]


def iteration_flops(plain: PlainLoop, sim: TransitionBatch, real: TransitionBatch) -> int:
    """Floating-point operations of one plain iteration (forward and backward); ours does the same arithmetic."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        plain.step(sim, real)
    return counter.get_total_flops()


def matmul_gflops(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """What this CPU sustains on a large fp32 matrix product: the practical ceiling for conv-bound training."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        seconds.append(time.perf_counter() - start)
    torch.set_num_threads(previous)
    return 2 * size**3 / min(seconds) / 1e9


def collect_data(root: Path, image_size: int) -> tuple[Path, Path]:
    from rlcyclegan.data.collect import CollectConfig, collect

    for domain in ("sim", "real"):
        collect(CollectConfig(out=root / domain, domain=domain, episodes=2, workers=1, image_size=image_size,
                              max_steps=60, seed=0), progress=False)
    return root / "sim", root / "real"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2, help="stacks per domain per iteration")
    parser.add_argument("--frame-stack", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=4, help="timed iterations per way (after warmup)")
    parser.add_argument("--agree", type=int, default=3, help="first iterations whose losses are compared")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for every way (0: torch's default for 'plain', the trainer's choice for ours)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="leave torch.compile out of 'all'")
    parser.add_argument("--ways", default="plain,default,all", help="comma-separated subset of plain,default,all")
    parser.add_argument("--data", type=Path, help="folder with sim/ and real/ rollout datasets (default: collect)")
    parser.add_argument("overrides", nargs="*", help="TrainConfig overrides for every way, e.g. model.ngf=16")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    plain_threads = torch.get_num_threads()

    with contextlib.ExitStack() as stack:
        root = args.data or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        sim_dir, real_dir = (root / "sim", root / "real") if args.data else collect_data(root, args.image_size)
        base = [f"data.sim={sim_dir}", f"data.real={real_dir}", f"data.image_size={args.image_size}",
                f"data.frame_stack={args.frame_stack}", f"data.batch_size={args.batch_size}", *args.overrides]
        default = load_config(TrainConfig, None, base)
        # What `rlcyclegan train` does with speed.threads=0: time 1 thread against torch's default, keep the faster.
        threads = args.threads or choose_threads(default, candidates=(1, plain_threads))
        torch.set_num_threads(plain_threads)
        default = load_config(TrainConfig, None, [*base, f"speed.threads={threads}"])
        every = load_config(TrainConfig, None, [*base, f"speed.threads={threads}", "speed.precision=bf16",
                                                f"speed.compile={args.compile}"])
        sim, real = RolloutDataset(sim_dir, args.frame_stack), RolloutDataset(real_dir, args.frame_stack)
        action_dim = sim.sample(1, np.random.default_rng(0)).action.shape[1]
        frames = 2 * args.batch_size * args.frame_stack
        n = args.iterations + 1
        print(f"torch {torch.__version__}, threads: plain {plain_threads}, ours {threads} (chosen by timing), "
              f"native bf16: {cpu_has_native_bf16()}, "
              f"{args.image_size}x{args.image_size}, batch {args.batch_size} x {args.frame_stack} frames per domain, "
              f"ngf={default.model.ngf} blocks={default.model.n_blocks} ndf={default.model.ndf}", flush=True)

        def synchronous(start: int = 0):
            for i in range(start, start + 10_000):
                rng = batch_rng(default.seed, 0, i)
                yield sim.sample(args.batch_size, rng), real.sample(args.batch_size, rng)

        def trainer_way(name: str, config: TrainConfig, warmup: int) -> Timing:
            torch.set_num_threads(config.speed.threads)
            torch.manual_seed(config.seed)
            trainer = RLCycleGANTrainer(config, args.image_size, args.frame_stack, action_dim, torch.device("cpu"))
            batches = Prefetcher(sim, real, args.batch_size, config.seed, 0, 0, n + warmup, config.data.prefetch, False)
            try:
                return time_loop(name, trainer.step, batches, n + warmup - 1, warmup)
            finally:
                batches.close()

        ways = args.ways.split(",")
        flops = iteration_flops(PlainLoop(default, args.image_size, args.frame_stack, action_dim), *next(synchronous()))
        ceiling = matmul_gflops(threads)
        plain = PlainLoop(default, args.image_size, args.frame_stack, action_dim)
        results = [time_loop("plain", plain.step, synchronous(), n, 1)]  # always: the reference for ratios
        if threads != plain_threads:  # separates what the thread choice buys from what the code buys
            torch.set_num_threads(threads)
            plain = PlainLoop(default, args.image_size, args.frame_stack, action_dim)
            results.append(time_loop(f"plain@{threads}t", plain.step, synchronous(), n, 1))
        if "default" in ways:
            results.append(trainer_way("default", default, 1))
        if "all" in ways:
            warmup_all = 3 if args.compile else 1  # compiling: the 3 generator batch sizes, then D, in the first steps
            results.append(trainer_way("all", every, warmup_all))

    base_rate = results[0].images_per_s(frames)
    print(f"\none iteration: {flops / 1e9:.1f} GFLOP; a 2048x2048 fp32 matrix product at {threads} thread(s): "
          f"{ceiling:.0f} GFLOP/s")
    print(f"{'way':<11}{'images/s':>10}{'x plain':>9}{'median s/it':>13}{'GFLOP/s':>9}{'of matmul':>11}"
          f"{'first its (s)':>16}   relative loss gap to plain, iterations 1..{args.agree}")
    for r in results:
        rate = r.images_per_s(frames)
        median = statistics.median(r.step_seconds[r.warmup:])
        first = ", ".join(f"{s:.1f}" for s in r.step_seconds[: r.warmup])
        gaps = relative_gaps(results[0].losses, r.losses, args.agree)
        gap = "-" if r is results[0] else ", ".join(f"{g:.1e}" for g in gaps)
        print(f"{r.name:<11}{rate:>10.2f}{rate / base_rate:>9.2f}{median:>13.2f}{flops / median / 1e9:>9.1f}"
              f"{flops / median / 1e9 / ceiling:>11.0%}{first:>16}   {gap}")
    if args.compile and results[-1].name == "all":
        compile_s = sum(results[-1].step_seconds[: results[-1].warmup]) - results[-1].warmup * statistics.median(
            results[-1].step_seconds[results[-1].warmup:])
        print(f"compile time (first {results[2].warmup} iterations of 'all' beyond steady state): {compile_s:.0f} s")


if __name__ == "__main__":
    main()
