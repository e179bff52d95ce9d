"""The RL-CycleGAN trainer: the six networks, their optimizers, and the one training step.

Code names follow roles, with the papers' names (CycleGAN, Zhu et al. 2017; RL-CycleGAN, Rao et al. 2020)::

    # Code (paper): G_sim2real (G: X -> Y), G_real2sim (F: Y -> X), D_real (D_Y), D_sim (D_X), Q_sim, Q_real
    # X = sim, Y = real; x, y are frames, x_s, y_s frame stacks, a the transition's action.

``RLCycleGANTrainer.step`` runs one iteration in a fixed order:

1. **Generators** G and F minimise lambda_GAN (L_GAN(G, D_Y) + L_GAN(F, D_X)) + lambda_cycle L_cyc
   + lambda_idt L_idt + lambda_RL-scene L_RL-scene, with D and Q frozen (``requires_grad_(False)``), so the
   backward pass leaves no gradient in them (a known GAN pitfall; tested). With ``optim.ema_decay`` > 0,
   their moving averages (what checkpoints deploy) then take a step toward them.
2. **Discriminators** D_Y and D_X on real images and on pooled, detached fakes from step 1.
3. **Q-networks** minimise lambda_RL L_RL (TD on their own domain's transitions) and, when
   ``loss.rl_scene_trains_q`` (default, as in the paper, where G, F and Q jointly minimise the full
   objective), lambda_RL-scene L_RL-scene evaluated on step 1's *detached* translated images: the Q step
   moves only Q, and the generator step's scene gradient moved only G and F. Then Polyak target updates.
4. Learning-rate schedules (constant, then linear decay to zero) advance one iteration.

Each optimizer owns one disjoint parameter set (G+F, D_Y+D_X, Q_sim+Q_real), and ``zero_grad`` runs right
before its backward. With ``lambda_rl_scene = lambda_rl = 0`` no Q-network is built: a plain CycleGAN.

Speed without changing the objective: each generator runs on one concatenated batch per stage
(G on [x; y], F on [y; x; G(x)], G on F(y): three generator calls instead of six), each discriminator on
[real; fake] at once, each Q-network once per update; instance norm is per image, so batching changes nothing.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rlcyclegan.agents.q_network import PixelQNetwork, load_q, make_target, polyak_update
from rlcyclegan.data.batches import TransitionBatch, float_to_frames, frames_to_float
from rlcyclegan.device import autocast, autocast_dtype
from rlcyclegan.envs.model import SEGMENTATION_CLASSES
from rlcyclegan.image_pool import ImagePool
from rlcyclegan.losses import (
    DISTANCES,
    GAN_LOSSES,
    cycle_loss,
    discriminator_loss,
    identity_loss,
    masked_l1,
    rl_scene_loss,
    td_loss,
)
from rlcyclegan.networks import (
    InstanceNorm,
    NormFactory,
    PatchDiscriminator,
    ResnetGenerator,
    check_image_size,
    frames_to_stack,
    reference_instance_norm,
    stack_to_frames,
)
from rlcyclegan.train_config import TrainConfig

Metrics = dict[str, float]
"""Scalars of one step, keyed by their TensorBoard tag (``losses/``, ``gan/``, ``q/``, ``charts/``)."""


class BatchSource(Protocol):
    """What the trainer needs from a domain's data (``RolloutDataset``, ``ImageFolderDataset``, ...)."""

    image_size: int
    frame_stack: int
    has_transitions: bool
    domain_name: str

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch: ...


@runtime_checkable
class ShardableSource(Protocol):
    """A source that can hand each DDP process its own share (``RolloutDataset.shard``)."""

    def shard(self, rank: int, world_size: int) -> BatchSource: ...


class NonFiniteLossError(ValueError):
    """A loss became NaN or infinite; training must stop (the last good checkpoint stays on disk)."""


class Translations(NamedTuple):
    """The images of one generator step, as single frames ``(N, 3, H, W)``; ``None`` where not needed."""

    fake_y: torch.Tensor  # G(x)
    fake_x: torch.Tensor  # F(y)
    rec_x: torch.Tensor | None  # F(G(x)), from G(x).detach() in detached mode
    rec_y: torch.Tensor | None  # G(F(y)), from F(y).detach() in detached mode
    idt_y: torch.Tensor | None  # G(y)
    idt_x: torch.Tensor | None  # F(x)


class SceneQ(NamedTuple):
    """The six Q-values of the RL-scene loss, each ``(B,)``."""

    q_x: torch.Tensor  # Q_sim(x, a)
    q_x_translated: torch.Tensor  # Q_real(G(x), a)
    q_x_cycled: torch.Tensor  # Q_sim(F(G(x)), a)
    q_y: torch.Tensor  # Q_real(y, a)
    q_y_translated: torch.Tensor  # Q_sim(F(y), a)
    q_y_cycled: torch.Tensor  # Q_real(G(F(y)), a)


class CycleTranslator(nn.Module):
    """G and F together: one call computes every image the generator step needs (one DDP unit).

    Args:
        G_sim2real: paper G, X -> Y.
        G_real2sim: paper F, Y -> X.
        identity: also compute G(y) and F(x).
        reconstruct: also compute F(G(x)) and G(F(y)).
        detach_cycle: reconstruct from detached translations, so a reconstruction's gradient reaches only
            the second generator (the "detached" cycle mode).
    """

    def __init__(self, G_sim2real: nn.Module, G_real2sim: nn.Module, identity: bool, reconstruct: bool,
                 detach_cycle: bool) -> None:
        super().__init__()
        self.G_sim2real, self.G_real2sim = G_sim2real, G_real2sim
        self.identity, self.reconstruct, self.detach_cycle = identity, reconstruct, detach_cycle

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> Translations:
        n = len(x)
        # G on [x; y]: G(x) and, for the identity loss, G(y).
        g_out = self.G_sim2real(torch.cat([x, y]) if self.identity else x)
        fake_y = g_out[:n]
        # F on [y; x; G(x)]: F(y), F(x) and the forward reconstruction F(G(x)) in one call.
        f_in = [y] + ([x] if self.identity else [])
        if self.reconstruct:
            f_in.append(fake_y.detach() if self.detach_cycle else fake_y)
        f_out = self.G_real2sim(torch.cat(f_in))
        fake_x = f_out[: len(y)]
        rec_y = None
        if self.reconstruct:  # G on F(y): the backward reconstruction G(F(y)).
            rec_y = self.G_sim2real(fake_x.detach() if self.detach_cycle else fake_x)
        return Translations(
            fake_y=fake_y,
            fake_x=fake_x,
            rec_x=f_out[-n:] if self.reconstruct else None,
            rec_y=rec_y,
            idt_y=g_out[n:] if self.identity else None,
            idt_x=f_out[len(y): len(y) + n] if self.identity else None,
        )


class DiscriminatorPair(nn.Module):
    """D_Y and D_X; one call scores real and fake images of both domains (one DDP unit)."""

    def __init__(self, D_real: nn.Module, D_sim: nn.Module) -> None:
        super().__init__()
        self.D_real, self.D_sim = D_real, D_sim

    def forward(
        self, y: torch.Tensor, fake_y: torch.Tensor, x: torch.Tensor, fake_x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patch logits for y, G(x) (by D_Y) and x, F(y) (by D_X); real and fake in one batch per network."""
        pred_y = self.D_real(torch.cat([y, fake_y]))
        pred_x = self.D_sim(torch.cat([x, fake_x]))
        return pred_y[: len(y)], pred_y[len(y):], pred_x[: len(x)], pred_x[len(x):]


class CriticPair(nn.Module):
    """Q_sim and Q_real; one call evaluates each once (one DDP unit)."""

    def __init__(self, Q_sim: nn.Module, Q_real: nn.Module) -> None:
        super().__init__()
        self.Q_sim, self.Q_real = Q_sim, Q_real

    def forward(self, sim_stacks: torch.Tensor, sim_actions: torch.Tensor, real_stacks: torch.Tensor,
                real_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.Q_sim(sim_stacks, sim_actions), self.Q_real(real_stacks, real_actions)


@dataclass
class ConstantThenLinear:
    """Learning-rate factor: 1 for the first ``constant`` iterations, then linear to 0 at ``total`` (CycleGAN)."""

    total: int
    constant: int

    def __call__(self, iteration: int) -> float:
        if iteration < self.constant:
            return 1.0
        return max(0.0, 1.0 - (iteration - self.constant) / max(1, self.total - self.constant))


def set_requires_grad(modules: nn.Module | None, flag: bool) -> None:
    """Freeze (``False``) or unfreeze a network, so a backward pass leaves no ``.grad`` in it."""
    if modules is not None:
        modules.requires_grad_(flag)


class RLCycleGANTrainer:
    """The networks, optimizers, schedules and image pools of one run, and the training step.

    Args:
        config: the run's configuration.
        image_size: frame side of both domains' data.
        frame_stack: frames per observation k (1 for image folders).
        action_dim: action size of the transitions; ``None`` when the data has none (then the RL weights must be 0).
        device: where to train.
        distributed: wrap each trained network group in ``DistributedDataParallel`` (needs an initialised
            process group); gradients are averaged across processes before every optimizer step.

    Raises:
        ValueError: when the networks cannot work at ``image_size``, RL terms are on without transitions, or
            a warm-start Q-network does not fit the data.
    """

    def __init__(self, config: TrainConfig, image_size: int, frame_stack: int, action_dim: int | None,
                 device: torch.device, distributed: bool = False) -> None:
        self.config = config
        self.loss = config.loss.resolved()
        self.device = device
        self.frame_stack = frame_stack
        self.amp_dtype = autocast_dtype(device, config.speed.precision)
        channels_last = config.speed.channels_last if config.speed.channels_last is not None else device.type == "cuda"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.gan_loss = GAN_LOSSES[self.loss.gan]
        self.scene_distance = DISTANCES[self.loss.rl_scene_distance]
        self.td_distance = DISTANCES[self.loss.td_distance]
        model = config.model
        check_image_size(image_size, model.generator_spec(), model.discriminator_spec())
        if self.loss.uses_q and action_dim is None:
            raise ValueError(
                f"the data has no transitions but loss.lambda_rl={self.loss.lambda_rl:g} and "
                f"loss.lambda_rl_scene={self.loss.lambda_rl_scene:g} need actions and rewards; set both to 0 "
                "(a plain CycleGAN, experiments/cyclegan.yaml) or train on rollout datasets"
            )

        # Networks, built in a fixed order after seeding so every process starts from the same weights.
        norm: NormFactory = InstanceNorm if config.speed.fast_norm else reference_instance_norm
        g, d = model.generator_spec(), model.discriminator_spec()
        self.G_sim2real = ResnetGenerator(g.in_channels, g.out_channels, g.ngf, g.n_blocks, norm)  # paper G
        self.G_real2sim = ResnetGenerator(g.in_channels, g.out_channels, g.ngf, g.n_blocks, norm)  # paper F
        self.D_real = PatchDiscriminator(d.in_channels, d.ndf, d.n_layers, norm)  # paper D_Y
        self.D_sim = PatchDiscriminator(d.in_channels, d.ndf, d.n_layers, norm)  # paper D_X
        for net in (self.G_sim2real, self.G_real2sim, self.D_real, self.D_sim):
            net.to(device=device, memory_format=self.memory_format)
        self.translator = CycleTranslator(
            self.G_sim2real, self.G_real2sim,
            identity=self.loss.identity_on,
            reconstruct=self.loss.cycle_on or self.loss.lambda_rl_scene > 0,
            detach_cycle=self.loss.cycle_mode == "detached",
        )
        self.discriminators = DiscriminatorPair(self.D_real, self.D_sim)
        # The deployed weights when ``optim.ema_decay`` > 0: frozen copies that only ``_update_averages`` moves.
        self.averaged_generators: dict[str, nn.Module] = {
            f"{name}_ema": copy.deepcopy(net).requires_grad_(False)
            for name, net in (("G_sim2real", self.G_sim2real), ("G_real2sim", self.G_real2sim))
        } if config.optim.ema_decay > 0 else {}
        self.critics: CriticPair | None = None
        self.Q_sim_target: nn.Module | None = None
        self.Q_real_target: nn.Module | None = None
        if self.loss.uses_q:
            assert action_dim is not None
            self.critics = CriticPair(
                self._q_network(config.q.init_sim, frame_stack, action_dim, image_size, "sim"),
                self._q_network(config.q.init_real, frame_stack, action_dim, image_size, "real"),
            ).to(device)
            if self.loss.lambda_rl > 0:
                self.Q_sim_target = make_target(self.critics.Q_sim)
                self.Q_real_target = make_target(self.critics.Q_real)
        self.scene_q_scale = self.loss.rl_scene_q_scale or (
            (self.critics.Q_sim.value_scale + self.critics.Q_real.value_scale) / 2 if self.critics is not None else 1.0
        )
        self.trains_q = self.critics is not None and (
            self.loss.lambda_rl > 0 or (self.loss.lambda_rl_scene > 0 and self.loss.rl_scene_trains_q)
        )
        if config.speed.compile:
            for net in (self.G_sim2real, self.G_real2sim, self.D_real, self.D_sim):
                net.compile()

        # Optimizers over disjoint parameter sets, with the same schedule.
        optim = config.optim
        betas = (optim.beta1, optim.beta2)
        self.opt_G = torch.optim.Adam(self.translator.parameters(), lr=optim.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.discriminators.parameters(), lr=optim.lr, betas=betas)
        # The critics keep Adam's usual betas: beta1 = 0.5 is a GAN choice, not an RL one.
        self.opt_Q = torch.optim.Adam(self.critics.parameters(), lr=config.q.lr) if self.trains_q else None
        self.schedule = ConstantThenLinear(config.iterations, round(optim.constant_fraction * config.iterations))
        self.schedulers = {
            name: torch.optim.lr_scheduler.LambdaLR(opt, self.schedule)
            for name, opt in self.optimizers().items()
        }

        # History buffers: fakes for D_Y come from G, fakes for D_X from F; each with its own seeded RNG.
        self.pool_real = ImagePool(optim.pool_size, torch.Generator().manual_seed(config.seed * 2 + 1))
        self.pool_sim = ImagePool(optim.pool_size, torch.Generator().manual_seed(config.seed * 2 + 2))

        # What each step calls: the DDP wrappers when distributed, otherwise the networks themselves.
        self._translator_step: nn.Module = self.translator
        self._discriminators_step: nn.Module = self.discriminators
        self._critics_step: nn.Module | None = self.critics if self.trains_q else None
        if distributed:
            ddp = dict(device_ids=[device.index] if device.type == "cuda" else None)
            self._translator_step = DistributedDataParallel(self.translator, **ddp)
            self._discriminators_step = DistributedDataParallel(self.discriminators, **ddp)
            if self.trains_q:
                self._critics_step = DistributedDataParallel(self.critics, **ddp)

    def _q_network(self, init: Path | None, frame_stack: int, action_dim: int, image_size: int, domain: str) -> nn.Module:
        if init is None:
            q = self.config.q
            return PixelQNetwork(frame_stack, action_dim, image_size, q.features_dim, q.hidden_dim, q.width)
        network = load_q(init)
        expected = {"frame_stack": frame_stack, "action_dim": action_dim, "image_size": image_size}
        found = {k: network.config[k] for k in expected}
        if found != expected:
            raise ValueError(f"q.init_{domain}={init} was trained for {found}, but the data has {expected}")
        return network

    # -- the training step -------------------------------------------------------------------------------

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by the parameter group they own: generators, discriminators, critics."""
        out = {"generators": self.opt_G, "discriminators": self.opt_D}
        if self.opt_Q is not None:
            out["critics"] = self.opt_Q
        return out

    def _frames(self, stacks: torch.Tensor) -> torch.Tensor:
        """Float frame stacks ``(B, 3k, H, W)`` -> frames ``(B*k, 3, H, W)`` in the networks' memory format."""
        return stack_to_frames(stacks).contiguous(memory_format=self.memory_format)

    def _paired_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """Class maps ``(B, k, H, W)`` -> ``(B*k, 1, H, W)``, true where the class counts in the paired L1."""
        ignored = torch.tensor([SEGMENTATION_CLASSES.index(c) for c in self.loss.paired_ignore], device=labels.device)
        b, k, h, w = labels.shape
        return ~torch.isin(labels, ignored).reshape(b * k, 1, h, w)

    def _stacks(self, frames: torch.Tensor) -> torch.Tensor:
        """Translated frames ``(B*k, 3, H, W)`` -> float32 stacks ``(B, 3k, H, W)`` for the Q-networks."""
        return frames_to_stack(frames.float().contiguous(), self.frame_stack)

    def _scene_q(self, critics: nn.Module, x_s: torch.Tensor, y_s: torch.Tensor, t: Translations,
                 a_x: torch.Tensor, a_y: torch.Tensor, detach: bool) -> SceneQ:
        """The six RL-scene Q-values, each Q-network called once on all its inputs."""
        assert t.rec_x is not None and t.rec_y is not None
        n = len(x_s) * self.frame_stack  # the stacks' frames; extra frames (``data.extra_frames``) have no action
        fake_y, fake_x, rec_x, rec_y = (
            self._stacks((i.detach() if detach else i)[:n]) for i in (t.fake_y, t.fake_x, t.rec_x, t.rec_y)
        )
        q_sim, q_real = critics(
            torch.cat([x_s, rec_x, fake_x]), torch.cat([a_x, a_x, a_y]),  # Q_sim: x, F(G(x)), F(y)
            torch.cat([fake_y, y_s, rec_y]), torch.cat([a_x, a_y, a_y]),  # Q_real: G(x), y, G(F(y))
        )
        q_x, q_x_cycled, q_y_translated = q_sim.float().chunk(3)
        q_x_translated, q_y, q_y_cycled = q_real.float().chunk(3)
        return SceneQ(q_x, q_x_translated, q_x_cycled, q_y, q_y_translated, q_y_cycled)

    def _scene_loss(self, q: SceneQ) -> torch.Tensor:
        """L_RL-scene on Q-values in units of ``scene_q_scale`` (see ``LossConfig.rl_scene_q_scale``)."""
        return rl_scene_loss(*(v / self.scene_q_scale for v in q), distance=self.scene_distance)

    def step(self, sim: TransitionBatch, real: TransitionBatch) -> Metrics:
        """One training iteration on a sim batch (X) and a real batch (Y); returns the step's scalars.

        Raises:
            NonFiniteLossError: when any loss is NaN or infinite (in any process, under DDP).
        """
        w = self.loss
        sim, real = sim.to(self.device, non_blocking=True), real.to(self.device, non_blocking=True)
        x_s, y_s = frames_to_float(sim.obs), frames_to_float(real.obs)  # (B, 3k, H, W) in [-1, 1]
        x, y = self._frames(x_s), self._frames(y_s)  # (B*k, 3, H, W)
        if sim.extra_frames is not None and real.extra_frames is not None:  # (B*k + E, 3, H, W), stacks first
            x = torch.cat([x, self._frames(frames_to_float(sim.extra_frames))])
            y = torch.cat([y, self._frames(frames_to_float(real.extra_frames))])
        values: dict[str, torch.Tensor] = {}

        # 1. Generators G and F, with D and Q frozen: no gradient may reach them from this backward pass.
        set_requires_grad(self.discriminators, False)
        set_requires_grad(self.critics, False)
        with autocast(self.device, self.amp_dtype):
            t: Translations = self._translator_step(x, y)
            loss_G = torch.zeros((), device=self.device)
            if w.lambda_gan > 0:
                gan_g = self.gan_loss(self.D_real(t.fake_y).float(), True)  # L_GAN(G, D_Y)
                gan_f = self.gan_loss(self.D_sim(t.fake_x).float(), True)  # L_GAN(F, D_X)
                loss_G = loss_G + w.lambda_gan * (gan_g + gan_f)
                values |= {"losses/gan_sim2real": gan_g, "losses/gan_real2sim": gan_f}
            if t.rec_x is not None and t.rec_y is not None:
                cyc_fwd = cycle_loss(x, t.rec_x.float())  # ||F(G(x)) - x||_1
                cyc_bwd = cycle_loss(y, t.rec_y.float())  # ||G(F(y)) - y||_1
                if w.cycle_on:  # (the reconstructions may exist for the RL-scene loss alone)
                    directions = [c for c, on in ((cyc_fwd, w.forward_cycle), (cyc_bwd, w.backward_cycle)) if on]
                    loss_G = loss_G + w.lambda_cycle * sum(directions)
                values |= {"losses/cycle_forward": cyc_fwd, "losses/cycle_backward": cyc_bwd}
            if t.idt_y is not None and t.idt_x is not None:
                idt_g = identity_loss(y, t.idt_y.float())  # ||G(y) - y||_1
                idt_f = identity_loss(x, t.idt_x.float())  # ||F(x) - x||_1
                loss_G = loss_G + w.lambda_identity * w.lambda_cycle * (idt_g + idt_f)
                values |= {"losses/identity_sim2real": idt_g, "losses/identity_real2sim": idt_f}
            if w.lambda_paired > 0:  # the paired oracle: ||F(y) - x_true(y)||_1, pix2pix's L1 term
                assert real.paired_obs is not None, "lambda_paired needs real batches with paired_obs"
                truth = self._frames(frames_to_float(real.paired_obs))
                fake_x = t.fake_x[:len(truth)].float()  # extra frames have no paired truth
                if w.paired_ignore:
                    assert real.paired_labels is not None, "loss.paired_ignore needs real batches with paired_labels"
                    paired = masked_l1(truth, fake_x, self._paired_mask(real.paired_labels))
                else:
                    paired = cycle_loss(truth, fake_x)
                loss_G = loss_G + w.lambda_paired * paired
                values["losses/paired_real2sim"] = paired
            if w.lambda_rl_scene > 0:
                assert self.critics is not None and sim.action is not None and real.action is not None
                q = self._scene_q(self.critics, x_s, y_s, t, sim.action, real.action, detach=False)
                scene = self._scene_loss(q)
                loss_G = loss_G + w.lambda_rl_scene * scene
                values |= {
                    "losses/rl_scene": scene, "q/sim": q.q_x.mean(), "q/real": q.q_y.mean(),
                    "q/sim2real": q.q_x_translated.mean(), "q/sim_cycled": q.q_x_cycled.mean(),
                    "q/real2sim": q.q_y_translated.mean(), "q/real_cycled": q.q_y_cycled.mean(),
                    "q/gap_sim2real": (q.q_x_translated - q.q_x).mean(),
                    "q/gap_real2sim": (q.q_y_translated - q.q_y).mean(),
                }
        values["losses/generators"] = loss_G
        self.opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        self.opt_G.step()
        self._update_averages()

        # 2. Discriminators D_Y and D_X on real images and pooled, detached fakes (skipped without a GAN term).
        set_requires_grad(self.discriminators, True)
        if w.lambda_gan > 0:
            fake_y = self.pool_real.query(t.fake_y.float())  # G's outputs, for D_Y
            fake_x = self.pool_sim.query(t.fake_x.float())  # F's outputs, for D_X
            with autocast(self.device, self.amp_dtype):
                pred_y, pred_fake_y, pred_x, pred_fake_x = (
                    p.float() for p in self._discriminators_step(y, fake_y, x, fake_x)
                )
            loss_D_real = discriminator_loss(pred_y, pred_fake_y, self.gan_loss)
            loss_D_sim = discriminator_loss(pred_x, pred_fake_x, self.gan_loss)
            self.opt_D.zero_grad(set_to_none=True)
            (loss_D_real + loss_D_sim).backward()
            self.opt_D.step()
            values |= {
                "losses/D_real": loss_D_real, "losses/D_sim": loss_D_sim,
                "gan/D_real_on_real": pred_y.mean(), "gan/D_real_on_fake": pred_fake_y.mean(),
                "gan/D_sim_on_real": pred_x.mean(), "gan/D_sim_on_fake": pred_fake_x.mean(),
            }

        # 3. Q-networks: TD on their own domain (+ RL-scene on step 1's detached images), then the targets.
        set_requires_grad(self.critics, True)
        if self.trains_q:
            values |= self._q_step(x_s, y_s, t, sim, real)

        # 4. Learning-rate schedules advance one iteration.
        for scheduler in self.schedulers.values():
            scheduler.step()
        return self._metrics(values)

    @torch.no_grad()
    def _update_averages(self) -> None:
        """Move each averaged generator toward its trained one by the bias-corrected weight
        ``(1 - decay) / (1 - decay ** n)`` at the n-th update (Adam's correction, Kingma & Ba 2015): the average is
        then the exponentially weighted mean of the iterates alone (the first update copies the iterate), where
        a plain ``1 - decay`` would keep ``decay ** n`` of the random initial weights (14% after 2000 iterations
        at 0.999). Weights only: the generators have no buffers."""
        decay = self.config.optim.ema_decay
        updates = self.schedulers["generators"].last_epoch + 1  # the schedulers step after this, and resume with the run
        weight = (1.0 - decay) / (1.0 - decay**updates)
        for name, average in self.averaged_generators.items():
            trained = getattr(self, name.removesuffix("_ema"))
            for p_average, p in zip(average.parameters(), trained.parameters(), strict=True):
                p_average.lerp_(p, weight)

    def _q_step(self, x_s: torch.Tensor, y_s: torch.Tensor, t: Translations, sim: TransitionBatch,
                real: TransitionBatch) -> dict[str, torch.Tensor]:
        w = self.loss
        assert self.critics is not None and self._critics_step is not None and self.opt_Q is not None
        assert sim.action is not None and real.action is not None
        values: dict[str, torch.Tensor] = {}
        with autocast(self.device, self.amp_dtype):
            if w.lambda_rl_scene > 0 and w.rl_scene_trains_q:
                q = self._scene_q(self._critics_step, x_s, y_s, t, sim.action, real.action, detach=True)
                q_x, q_y = q.q_x, q.q_y
                loss_Q = w.lambda_rl_scene * self._scene_loss(q)
            else:
                q_x, q_y = (v.float() for v in self._critics_step(x_s, sim.action, y_s, real.action))
                loss_Q = torch.zeros((), device=self.device)
            if w.lambda_rl > 0:
                assert self.Q_sim_target is not None and self.Q_real_target is not None
                gamma = self.config.q.gamma
                with torch.no_grad():
                    v_sim = self.Q_sim_target(frames_to_float(sim.next_obs), sim.next_action).float()
                    v_real = self.Q_real_target(frames_to_float(real.next_obs), real.next_action).float()
                td_sim = td_loss(q_x, sim.reward, v_sim, sim.terminated, gamma, self.td_distance)
                td_real = td_loss(q_y, real.reward, v_real, real.terminated, gamma, self.td_distance)
                loss_Q = loss_Q + w.lambda_rl * (td_sim + td_real)
                values |= {"losses/td_sim": td_sim, "losses/td_real": td_real}
        self.opt_Q.zero_grad(set_to_none=True)
        loss_Q.backward()
        self.opt_Q.step()
        if self.Q_sim_target is not None and self.Q_real_target is not None:
            polyak_update(self.critics.Q_sim, self.Q_sim_target, self.config.q.tau)
            polyak_update(self.critics.Q_real, self.Q_real_target, self.config.q.tau)
        return values | {"losses/critics": loss_Q, "q/sim": q_x.mean(), "q/real": q_y.mean()}

    def _metrics(self, values: dict[str, torch.Tensor]) -> Metrics:
        """All scalars in one device-to-host copy (averaged over processes under DDP), checked for NaN/inf."""
        names = list(values)
        stacked = torch.stack([values[n].detach().float() for n in names])
        if torch.distributed.is_initialized():
            torch.distributed.all_reduce(stacked)  # a NaN in any process reaches all, so all stop together
            stacked /= torch.distributed.get_world_size()
        numbers = stacked.tolist()
        bad = [n for n, v in zip(names, numbers, strict=True) if n.startswith("losses/") and not np.isfinite(v)]
        if bad:
            raise NonFiniteLossError(f"{bad[0]} is {numbers[names.index(bad[0])]}" +
                                     (f" (also {', '.join(bad[1:])})" if len(bad) > 1 else ""))
        metrics = dict(zip(names, numbers, strict=True))
        for name, scheduler in self.schedulers.items():
            metrics[f"charts/lr_{name}"] = scheduler.get_last_lr()[0]
        return metrics

    # -- images and state ---------------------------------------------------------------------------------

    @torch.no_grad()
    def translation_grid(self, sim_obs: torch.Tensor, real_obs: torch.Tensor, rows: int = 4) -> torch.Tensor:
        """A uint8 picture ``(3, H', W')``, one row per sample: x | G(x) | F(G(x)) | y | F(y) | G(F(y)).

        Uses each stack's newest frame. Instance norm has no running statistics, so no mode switch is needed.
        """
        x = frames_to_float(sim_obs[:rows, -3:].to(self.device)).contiguous(memory_format=self.memory_format)
        y = frames_to_float(real_obs[:rows, -3:].to(self.device)).contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.amp_dtype):
            fake_y = self.G_sim2real(x)
            rec_x = self.G_real2sim(fake_y)
            fake_x = self.G_real2sim(y)
            rec_y = self.G_sim2real(fake_x)
        tiles = torch.stack([i.float() for i in (x, fake_y, rec_x, y, fake_x, rec_y)], dim=1)  # (n, 6, 3, H, W)
        tiles = nn.functional.pad(tiles, (1, 1, 1, 1), value=1.0)  # white borders
        n, cols, c, h, w = tiles.shape
        grid = tiles.permute(2, 0, 3, 1, 4).reshape(c, n * h, cols * w)  # (3, n*H, 6*W)
        return float_to_frames(grid).cpu()

    def networks(self) -> dict[str, nn.Module]:
        """Every network with weights, by the name its checkpoint file takes."""
        nets: dict[str, nn.Module] = {
            "G_sim2real": self.G_sim2real, "G_real2sim": self.G_real2sim, "D_real": self.D_real, "D_sim": self.D_sim,
        } | self.averaged_generators
        if self.critics is not None:
            nets |= {"Q_sim": self.critics.Q_sim, "Q_real": self.critics.Q_real}
        if self.Q_sim_target is not None and self.Q_real_target is not None:
            nets |= {"Q_sim_target": self.Q_sim_target, "Q_real_target": self.Q_real_target}
        return nets

    def training_state(self) -> dict[str, Any]:
        """Optimizer, schedule and torch RNG state (tensors and plain values only: ``weights_only`` loads).

        The step draws no numbers from torch's global RNG; its state is kept so that adding, say, dropout
        later cannot silently break exact resumption.
        """
        return {
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers().items()},
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
            "torch_rng": torch.get_rng_state(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore what ``training_state`` returned (weights and pools are loaded separately).

        The learning rates follow this run's config, not the checkpoint's. The saved state also holds the
        schedule's length and the base rates it was written under; restoring those would keep a run resumed
        with more iterations at the old schedule's final rate of zero, and a run resumed with a lower
        ``optim.lr`` (the advice after a NaN) at the old rate.
        """
        config_lrs = {name: list(scheduler.base_lrs) for name, scheduler in self.schedulers.items()}
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            scheduler.load_state_dict(state["schedulers"][name] | {"lr_lambdas": [None] * len(scheduler.lr_lambdas)})
            scheduler.base_lrs = config_lrs[name]
            factor = self.schedule(scheduler.last_epoch)
            for group, base_lr in zip(scheduler.optimizer.param_groups, config_lrs[name], strict=True):
                group["initial_lr"], group["lr"] = base_lr, base_lr * factor
        torch.set_rng_state(state["torch_rng"])

    def pool_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """This process's image pools (contents and RNG); under DDP each process has its own."""
        return {"real": self.pool_real.state_dict(), "sim": self.pool_sim.state_dict()}

    def load_pool_state(self, state: dict[str, dict[str, torch.Tensor]]) -> None:
        self.pool_real.load_state_dict(state["real"], self.device)
        self.pool_sim.load_state_dict(state["sim"], self.device)
