"""Configuration of ``rlcyclegan train``: one dataclass per concern, composed into ``TrainConfig``.

Load with ``rlcyclegan.config.load_config(TrainConfig, "experiments/rlcyclegan.yaml", ["loss.lambda_rl=0"])``.
A plain CycleGAN is this same config with ``loss.lambda_rl_scene=0`` and ``loss.lambda_rl=0``: no
Q-networks are built then and no transitions are needed (``experiments/cyclegan.yaml``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rlcyclegan.config import ConfigError

if TYPE_CHECKING:  # networks imports torch; the CLI builds its help from this module without it
    from rlcyclegan.networks import DiscriminatorSpec, GeneratorSpec

Ablation = Literal[
    "gan_only", "cycle_only", "forward_cycle_only", "backward_cycle_only", "no_identity", "no_rl_scene", "no_rl",
]

ABLATIONS: dict[str, dict[str, Any]] = {
    "gan_only": {"cycle_mode": "none", "lambda_identity": 0.0},
    "cycle_only": {"lambda_gan": 0.0},
    "forward_cycle_only": {"backward_cycle": False},
    "backward_cycle_only": {"forward_cycle": False},
    "no_identity": {"lambda_identity": 0.0},
    "no_rl_scene": {"lambda_rl_scene": 0.0},
    "no_rl": {"lambda_rl": 0.0},
}
"""What each ablation switch changes in ``LossConfig`` (CycleGAN table 4 and RL-CycleGAN's RL terms)."""


@dataclass
class ModelConfig:
    """Generator and discriminator sizes (defaults sized for 64x64 frames on a CPU)."""

    ngf: int = 32
    """Generator width after the stem (reference: 64)."""
    n_blocks: int = 6
    """Generator residual blocks (reference: 9 at 256x256, 6 at 128x128)."""
    ndf: int = 32
    """Discriminator width of the first layer (reference: 64)."""
    d_layers: int = 3
    """PatchGAN stride-2 layers: 3 is the 70x70 PatchGAN (images >= 32x32); use 2 for 16x16."""

    def __post_init__(self) -> None:
        if min(self.ngf, self.ndf, self.d_layers) < 1 or self.n_blocks < 0:
            raise ConfigError("model.ngf, model.ndf and model.d_layers must be >= 1 and model.n_blocks >= 0")

    def generator_spec(self) -> GeneratorSpec:
        from rlcyclegan.networks import GeneratorSpec

        return GeneratorSpec(ngf=self.ngf, n_blocks=self.n_blocks)

    def discriminator_spec(self) -> DiscriminatorSpec:
        from rlcyclegan.networks import DiscriminatorSpec

        return DiscriminatorSpec(ndf=self.ndf, n_layers=self.d_layers)


@dataclass
class QConfig:
    """The Q-networks Q_sim and Q_real (only built when an RL weight is non-zero)."""

    features_dim: int = 256
    hidden_dim: int = 256
    width: int = 32
    """Encoder width of ``PixelQNetwork`` (ignored for a network loaded from ``init_sim``/``init_real``)."""
    gamma: float = 0.99
    tau: float = 0.005
    """Polyak rate of the target networks."""
    lr: float = 3e-4
    init_sim: Path | None = None
    """Warm start Q_sim from a ``save_q`` file (``rlcyclegan train-q`` on sim data); its architecture wins."""
    init_real: Path | None = None
    """Warm start Q_real likewise."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.gamma < 1.0:
            raise ConfigError(f"q.gamma must lie in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ConfigError(f"q.tau must lie in (0, 1], got {self.tau}")
        if self.lr <= 0:
            raise ConfigError(f"q.lr must be positive, got {self.lr}")


@dataclass
class LossConfig:
    """Which terms of the RL-CycleGAN objective are on, and their weights.

    L = lambda_gan (L_GAN(G, D_Y) + L_GAN(F, D_X)) + lambda_cycle L_cyc + lambda_identity lambda_cycle L_idt
        + lambda_rl_scene L_RL-scene + lambda_rl L_RL
    """

    gan: Literal["lsgan", "vanilla"] = "lsgan"
    """Least-squares GAN (CycleGAN's default) or the original log-loss."""
    lambda_gan: float = 1.0
    lambda_cycle: float = 10.0
    lambda_identity: float = 0.5
    """Identity weight as a fraction of ``lambda_cycle`` (CycleGAN: 0.5); 0 turns it off."""
    lambda_rl_scene: float = 1.0
    """RL-scene consistency weight; 0 (with ``lambda_rl=0``) gives a plain CycleGAN."""
    lambda_rl: float = 1.0
    """TD-loss weight for Q_sim (sim transitions) and Q_real (real transitions)."""
    lambda_paired: float = 0.0
    """Weight of ||F(y) - x_true(y)||_1 against the true sim rendering of y's state (pix2pix's L1 term, with
    pix2pix's weight 100): the paired oracle, which sees ground truth no unpaired method has. Needs
    ``data.paired_real``."""
    paired_ignore: tuple[str, ...] = ()
    """Classes of the true sim segmentation (``SEGMENTATION_CLASSES``) left out of the paired L1, e.g.
    ``[floor]``: a real frame shows the real floor's 0.25 m squares, which do not say where the sim floor's
    larger squares lie, so L1 there only teaches a blur. Needs ``data.paired_real_segmentation``."""
    cycle_mode: Literal["full", "detached", "none"] = "full"
    """``detached``: F(G(x).detach()) and G(F(y).detach()), so a reconstruction never trains the first
    generator (helps simulated domains whose textures and link thickness must change); the RL-scene loss then
    uses these same reconstructions. ``none``: no cycle loss."""
    forward_cycle: bool = True
    """Use ||F(G(x)) - x||_1."""
    backward_cycle: bool = True
    """Use ||G(F(y)) - y||_1."""
    rl_scene_distance: Literal["squared", "absolute", "huber"] = "squared"
    rl_scene_q_scale: float | None = None
    """Q-values are divided by this before the RL-scene distance. Our Q-values are discounted returns
    (hundreds), so squared raw differences swamp the image losses (measured: the quick preset's translator
    collapsed to noise); the paper's Q-values are success probabilities in [0, 1]. ``null``: the mean
    ``value_scale`` of the two Q-networks (about the spread of returns; 1 for untrained ones)."""
    td_distance: Literal["squared", "absolute", "huber"] = "squared"
    rl_scene_trains_q: bool = True
    """Whether the Q step also descends lambda_rl_scene L_RL-scene (on the generator step's detached images),
    as in the paper, where G, F and Q jointly minimise the full objective; off, only the generators see it."""
    ablations: tuple[Ablation, ...] = ()
    """Switches applied on top of the weights above (see ``ABLATIONS``), e.g. ``[gan_only]``."""

    def __post_init__(self) -> None:
        weights = {"lambda_gan": self.lambda_gan, "lambda_cycle": self.lambda_cycle,
                   "lambda_identity": self.lambda_identity, "lambda_rl_scene": self.lambda_rl_scene,
                   "lambda_rl": self.lambda_rl, "lambda_paired": self.lambda_paired}
        for name, value in weights.items():
            if value < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {value}")
        if self.rl_scene_q_scale is not None and not self.rl_scene_q_scale > 0:
            raise ConfigError(f"loss.rl_scene_q_scale must be positive or null, got {self.rl_scene_q_scale}")
        if self.paired_ignore:
            from rlcyclegan.envs.model import SEGMENTATION_CLASSES

            unknown_classes = [c for c in self.paired_ignore if c not in SEGMENTATION_CLASSES]
            if unknown_classes:
                raise ConfigError(f"loss.paired_ignore: unknown class {unknown_classes[0]!r}; choose from "
                                  f"{', '.join(SEGMENTATION_CLASSES)}")
        unknown = [a for a in self.ablations if a not in ABLATIONS]
        if unknown:
            raise ConfigError(f"unknown ablation {unknown[0]!r}; choose from {', '.join(ABLATIONS)}")

    def resolved(self) -> LossConfig:
        """These weights with the ablation switches applied (what the trainer uses)."""
        changes: dict[str, Any] = {}
        for ablation in self.ablations:
            changes.update(ABLATIONS[ablation])
        return dataclasses.replace(self, **changes, ablations=())

    @property
    def cycle_on(self) -> bool:
        return self.cycle_mode != "none" and self.lambda_cycle > 0 and (self.forward_cycle or self.backward_cycle)

    @property
    def identity_on(self) -> bool:
        return self.lambda_identity > 0 and self.lambda_cycle > 0

    @property
    def uses_q(self) -> bool:
        """Whether any RL term is on, so Q-networks and transitions are needed."""
        return self.lambda_rl_scene > 0 or self.lambda_rl > 0

    def check_generators_trained(self) -> None:
        """Raise ``ConfigError`` when a generator would receive no gradient (a no-op run, and a DDP hang)."""
        w = self.resolved()
        full = w.cycle_mode == "full" and w.lambda_cycle > 0
        signal = w.lambda_gan > 0 or w.identity_on or w.lambda_rl_scene > 0 or w.lambda_paired > 0
        g_trained = signal or (w.cycle_on and (w.backward_cycle or (full and w.forward_cycle)))
        f_trained = signal or (w.cycle_on and (w.forward_cycle or (full and w.backward_cycle)))
        if not (g_trained and f_trained):
            which = "G_sim2real" if not g_trained else "G_real2sim"
            raise ConfigError(f"with these loss weights and ablations {which} receives no gradient; "
                              "turn on loss.lambda_gan, the identity loss or a cycle direction that reaches it")


@dataclass
class OptimConfig:
    """Adam and the learning-rate schedule for the generators and discriminators (CycleGAN's values)."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    constant_fraction: float = 0.5
    """Fraction of the iterations at constant learning rate before the linear decay to zero (all optimizers)."""
    pool_size: int = 50
    """Generated images kept per domain for the discriminators (0: no history)."""
    ema_decay: float = 0.0
    """Decay of an exponential moving average of the generators' weights, which checkpoints then deploy in
    place of the last iterate (Yazici et al., ICLR 2019); 0: off. A GAN's iterates keep circling the
    equilibrium, so the average sits nearer it than any one of them; 0.999 averages about 1000 iterations.
    Bias-corrected like Adam's moments, so it holds none of the initial weights, however short the run."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"optim.ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.lr <= 0 or not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("optim.lr must be positive and optim.beta1/beta2 in [0, 1)")
        if not 0.0 <= self.constant_fraction <= 1.0:
            raise ConfigError(f"optim.constant_fraction must lie in [0, 1], got {self.constant_fraction}")
        if self.pool_size < 0:
            raise ConfigError(f"optim.pool_size must be >= 0, got {self.pool_size}")


@dataclass
class DataConfig:
    """Where the two domains come from: rollout datasets (with transitions) or a plain image-folder pair.

    Image folders use the CycleGAN layout ``root/trainA`` (sim, X) and ``root/trainB`` (real, Y); they have
    no transitions, so they train the GAN part alone (set the RL weights to 0).
    """

    format: Literal["rollouts", "image_folder"] = "rollouts"
    sim: Path | None = None
    """Rollout dataset of the simulated domain X (``rlcyclegan collect --domain sim``)."""
    real: Path | None = None
    """Rollout dataset of the real domain Y."""
    root: Path | None = None
    """Image-folder root holding ``trainA/`` (X) and ``trainB/`` (Y)."""
    image_size: int = 64
    """Frame side; rollout datasets must have been collected at this size, image folders are resized to it."""
    frame_stack: int = 3
    """Frames per observation for rollouts (image folders: always 1)."""
    batch_size: int = 4
    """Stacks per domain per iteration (per process under DDP); the translator sees batch_size * frame_stack frames."""
    extra_frames: int = 0
    """Single frames of other states, per domain and iteration, that only the image losses (GAN, cycle,
    identity) see, on top of the ``batch_size`` stacks. A stack's frames are consecutive and nearly the same,
    so RL-CycleGAN at batch 1 gives its discriminators one state per iteration where CycleGAN at batch 3
    gives three; extra frames restore that variety without translating whole stacks for the Q-networks."""
    prefetch: int = 2
    """Batches sampled ahead in a background thread (0: sample on the training thread)."""
    paired_real: Path | None = None
    """The ``real`` dataset re-rendered in the ``sim`` look (same episodes and steps), for the paired oracle
    only (``loss.lambda_paired``); ``rlcyclegan pipeline`` writes it from the hidden true states."""
    paired_real_segmentation: Path | None = None
    """The same states' true segmentation in the ``sim`` look (``rerender_dataset(..., segmentation=True)``),
    for ``loss.paired_ignore`` only."""

    def __post_init__(self) -> None:
        if self.format == "rollouts" and (self.sim is None or self.real is None):
            raise ConfigError("data.format=rollouts needs data.sim and data.real (dataset directories)")
        if self.format == "image_folder" and self.root is None:
            raise ConfigError("data.format=image_folder needs data.root (a folder with trainA/ and trainB/)")
        if self.image_size < 4 or self.frame_stack < 1 or self.batch_size < 1 or self.prefetch < 0 or self.extra_frames < 0:
            raise ConfigError("data.image_size must be >= 4, frame_stack and batch_size >= 1, prefetch and "
                              "extra_frames >= 0")


@dataclass
class SpeedConfig:
    """How fast, not what: none of these change the objective."""

    device: str = "auto"
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """``auto``: bfloat16 autocast on CUDA and on CPUs with native bf16, fp32 elsewhere."""
    channels_last: bool | None = None
    """NHWC tensors for the generators and discriminators; ``null``: on CUDA only (cuDNN's fast layout; on an
    AVX2 CPU, measured, it gains nothing for these networks)."""
    fast_norm: bool = True
    """Instance norm through the group-norm kernel (the same function, a little faster, no channels-last copies)."""
    compile: bool = False
    """``torch.compile`` the generators and discriminators (minutes of compile time on a small CPU)."""
    threads: int = 0
    """torch intra-op threads on CPU; 0: choose at start between 1 and torch's default by timing a generator step
    (OpenMP threads spin-wait, so on cores shared with other jobs one thread can be several times faster). The
    choice is written to the run's config.yaml, so a resumed run computes with the same thread count."""
    rechoose_threads_every: int = 0
    """Iterations between re-choosing the thread count on CPU: one per core the other processes left free over
    those iterations (``rlcyclegan.cpu_cores``; Linux only); 0: never. For jobs that share the cores with others
    that come and go (the pipeline's train stage): the job that outlives the others takes the cores they free.
    Thread counts change the order of floating-point sums, so such a run is not bitwise reproducible."""
    deterministic: bool = False
    """Ask cuDNN/torch for reproducible kernels (slower on CUDA; CPU runs are reproducible either way)."""

    def __post_init__(self) -> None:
        if self.threads < 0 or self.rechoose_threads_every < 0:
            raise ConfigError("speed.threads and speed.rechoose_threads_every must be >= 0")


@dataclass
class TrainConfig:
    """``rlcyclegan train``: RL-CycleGAN (or CycleGAN, with the RL weights at zero) on two domains."""

    exp_name: str = "rlcyclegan"
    seed: int = 0
    iterations: int = 20_000
    """Training iterations (each: one generator, one discriminator and one Q update)."""
    run_dir: Path | None = None
    """Output directory; default ``runs/{exp_name}__{seed}__{time}``."""
    log_every: int = 50
    """Iterations between TensorBoard scalars."""
    image_every: int = 1000
    """Iterations between TensorBoard image grids (0: never)."""
    checkpoint_every: int = 1000
    """Iterations between checkpoints (a final one is always written)."""
    keep_checkpoints: int = 3
    """Newest checkpoints kept on disk (0: keep all)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    q: QConfig = field(default_factory=QConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(sim=Path("data/sim"), real=Path("data/real")))
    speed: SpeedConfig = field(default_factory=SpeedConfig)

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ConfigError(f"iterations must be >= 1, got {self.iterations}")
        if self.log_every < 1 or self.checkpoint_every < 1 or self.image_every < 0 or self.keep_checkpoints < 0:
            raise ConfigError("log_every and checkpoint_every must be >= 1, image_every and keep_checkpoints >= 0")
        self.loss.check_generators_trained()
        if self.loss.lambda_paired > 0 and (self.data.paired_real is None or self.data.format != "rollouts"):
            raise ConfigError("loss.lambda_paired > 0 (the paired oracle) needs rollout data and data.paired_real")
        if self.loss.paired_ignore and (self.loss.lambda_paired == 0 or self.data.paired_real_segmentation is None):
            raise ConfigError("loss.paired_ignore needs loss.lambda_paired > 0 and data.paired_real_segmentation")


def architecture(config: TrainConfig) -> dict[str, Any]:
    """The config fields that shape the weights; a checkpoint only resumes into an equal architecture."""
    return {
        "model": dataclasses.asdict(config.model),
        "q": {k: v for k, v in dataclasses.asdict(config.q).items() if k in ("features_dim", "hidden_dim", "width")},
        "uses_q": config.loss.resolved().uses_q,
        "image_size": config.data.image_size,
        "frame_stack": config.data.frame_stack if config.data.format == "rollouts" else 1,
        # Only when on, so that checkpoints written before the option existed still resume.
        **({"averaged_generators": True} if config.optim.ema_decay > 0 else {}),
    }
