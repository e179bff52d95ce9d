"""The translator's networks: a ResNet generator, a PatchGAN discriminator, and loading a trained translator.

Code names follow roles, with the papers' names (CycleGAN, Zhu et al. 2017; RL-CycleGAN, Rao et al. 2020)::

    # Code (paper): G_sim2real (G: X -> Y), G_real2sim (F: Y -> X), D_real (D_Y), D_sim (D_X)

Both architectures follow the reference CycleGAN implementation (``networks.py`` of
pytorch-CycleGAN-and-pix2pix): instance normalisation *without* running statistics, so a network gives the
same output in ``train()`` and ``eval()`` mode (with running statistics on, eval mode silently switches to
stale averages: junyanz #395), reflection padding in the generator, and weights drawn from N(0, 0.02).

Generators work on single RGB frames ``(N, 3, H, W)`` in [-1, 1]; a frame stack ``(B, 3k, H, W)`` is
translated frame by frame with ``stack_to_frames`` / ``frames_to_stack`` around one batched call.

Deployment needs only this module and safetensors: ``load_generator(checkpoint_dir, "real2sim", device)``
rebuilds a generator from the ``translator.json`` and ``G_*.safetensors`` files every training checkpoint
holds, with no training code involved.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

Direction = Literal["sim2real", "real2sim"]
TRANSLATOR_FILE = "translator.json"
TRANSLATOR_FORMAT_VERSION = 1
GENERATOR_FILES: dict[str, str] = {"sim2real": "G_sim2real.safetensors", "real2sim": "G_real2sim.safetensors"}
"""Where each direction's generator weights live inside a checkpoint directory."""
LATEST_FILE = "latest"
"""A text file in ``RUN_DIR/checkpoints/`` naming the newest complete checkpoint directory."""


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """Constructor arguments of ``ResnetGenerator``; written to ``translator.json`` so deployment can rebuild it.

    The defaults are sized for 64x64 frames on a CPU; the reference CycleGAN uses ngf=64 and 9 blocks at 256x256.
    """

    in_channels: int = 3
    out_channels: int = 3
    ngf: int = 32
    """Channels after the 7x7 stem; the bottleneck has 4 * ngf channels."""
    n_blocks: int = 6
    """Residual blocks at 1/4 resolution."""


@dataclasses.dataclass(frozen=True)
class DiscriminatorSpec:
    """Constructor arguments of ``PatchDiscriminator``."""

    in_channels: int = 3
    ndf: int = 32
    """Channels of the first convolution; doubled per layer up to 8 * ndf."""
    n_layers: int = 3
    """Stride-2 layers; 3 gives the reference 70x70 receptive field (needs images of at least 32x32)."""


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Draw convolution and linear weights from N(0, std) and zero their biases (the reference 'normal' init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class InstanceNorm(nn.Module):
    """Instance normalisation without affine parameters or running statistics, through the group-norm kernel.

    Normalising each of C channels over (H, W) is group norm with C groups: the same function as
    ``nn.InstanceNorm2d(C)`` (tested), but ``F.group_norm`` has a native channels-last CPU kernel, whereas
    ``F.instance_norm`` reshapes to ``(1, N*C, H, W)`` for batch norm and copies channels-last inputs twice.
    Having no running statistics, it behaves the same in ``train()`` and ``eval()``.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.channels, self.eps = channels, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.channels, eps=self.eps)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


def reference_instance_norm(channels: int) -> nn.Module:
    """``nn.InstanceNorm2d`` as the reference CycleGAN configures it (the baseline in ``experiments/bench_train.py``)."""
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


NormFactory = Callable[[int], nn.Module]


class ResnetBlock(nn.Module):
    """x + conv-norm-relu-conv-norm(x), with reflection padding so borders do not darken."""

    def __init__(self, channels: int, norm: NormFactory = InstanceNorm) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), norm(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN ResNet generator: 7x7 stem, two stride-2 downsamplings, residual blocks, two upsamplings, tanh.

    Fully convolutional and shallow in resolution (4x down), so it re-styles an image rather than re-drawing it.
    Input and output are ``(N, 3, H, W)`` in [-1, 1], with H and W multiples of 4. ``norm`` builds the
    normalisation layers; every choice here is parameter-free, so it does not change the saved weights.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, ngf: int = 32, n_blocks: int = 6,
        norm: NormFactory = InstanceNorm,
    ) -> None:
        super().__init__()
        if ngf < 1 or n_blocks < 0:
            raise ValueError(f"ResnetGenerator needs ngf >= 1 and n_blocks >= 0; got ngf={ngf}, n_blocks={n_blocks}")
        self.spec = GeneratorSpec(in_channels, out_channels, ngf, n_blocks)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), norm(ngf), nn.ReLU(True),
        ]
        for mult in (1, 2):  # downsample: ngf -> 2 ngf -> 4 ngf channels, H -> H/2 -> H/4
            layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1), norm(ngf * mult * 2), nn.ReLU(True)]
        layers += [ResnetBlock(ngf * 4, norm) for _ in range(n_blocks)]
        for mult in (4, 2):  # upsample: 4 ngf -> 2 ngf -> ngf channels, H/4 -> H/2 -> H
            layers += [
                nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1),
                norm(ngf * mult // 2), nn.ReLU(True),
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Translate frames ``(N, C_in, H, W)`` -> ``(N, C_out, H, W)``."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"ResnetGenerator needs image sides that are multiples of 4; got {tuple(x.shape[-2:])}")
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """The PatchGAN discriminator: one real/fake logit per overlapping patch (70x70 with 3 layers).

    Judging patches rather than whole images keeps the network small and focused on texture and local
    style, which is what the translator changes. Output: ``(N, 1, h, w)`` logits.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 32, n_layers: int = 3, norm: NormFactory = InstanceNorm) -> None:
        super().__init__()
        if ndf < 1 or n_layers < 1:
            raise ValueError(f"PatchDiscriminator needs ndf >= 1 and n_layers >= 1; got ndf={ndf}, n_layers={n_layers}")
        self.spec = DiscriminatorSpec(in_channels, ndf, n_layers)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        channels = ndf
        for n in range(1, n_layers):
            out = ndf * min(2**n, 8)
            layers += [nn.Conv2d(channels, out, 4, stride=2, padding=1), norm(out), nn.LeakyReLU(0.2, True)]
            channels = out
        out = ndf * min(2**n_layers, 8)
        layers += [nn.Conv2d(channels, out, 4, stride=1, padding=1), norm(out), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(out, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def patch_output_size(image_size: int, n_layers: int) -> int:
    """Side of a ``PatchDiscriminator``'s logit map for a square input of ``image_size``.

    Each stride-2 convolution (kernel 4, padding 1) halves the side; the two stride-1 convolutions each take
    one pixel. The last normalised map is one pixel larger than the output, so an output side of at least 1
    also keeps instance normalisation away from single-pixel maps (which it rejects in training).
    """
    side = image_size
    for _ in range(n_layers):
        side = (side + 2 - 4) // 2 + 1
    return side - 2


def check_image_size(image_size: int, generator: GeneratorSpec, discriminator: DiscriminatorSpec) -> None:
    """Raise ``ValueError`` when the networks cannot work on square images of ``image_size``."""
    if image_size % 4:
        raise ValueError(f"image_size must be a multiple of 4 for the generator's two downsamplings; got {image_size}")
    if patch_output_size(image_size, discriminator.n_layers) < 1:
        smallest = next(s for s in range(4, 4097, 4) if patch_output_size(s, discriminator.n_layers) >= 1)
        raise ValueError(
            f"image_size {image_size} is too small for a PatchGAN with n_layers={discriminator.n_layers} "
            f"(needs >= {smallest}); lower model.d_layers or use larger images"
        )


def stack_to_frames(stack: torch.Tensor) -> torch.Tensor:
    """``(B, 3k, H, W)`` frame stacks -> ``(B*k, 3, H, W)`` single frames, stack by stack, oldest first."""
    b, c, h, w = stack.shape
    return stack.reshape(b * (c // 3), 3, h, w)  # (B*k, 3, H, W)


def frames_to_stack(frames: torch.Tensor, frame_stack: int) -> torch.Tensor:
    """The inverse of ``stack_to_frames``: ``(B*k, 3, H, W)`` -> ``(B, 3k, H, W)``."""
    n, c, h, w = frames.shape
    return frames.reshape(n // frame_stack, c * frame_stack, h, w)  # (B, 3k, H, W)


def translator_metadata(generator: GeneratorSpec, image_size: int, frame_stack: int, averaged: bool = False
                        ) -> dict[str, Any]:
    """The ``translator.json`` content: how to rebuild the generators and what frames they expect.

    ``averaged``: deploy the generators' moving averages (``G_*_ema``, see ``OptimConfig.ema_decay``).
    """
    return {
        "format_version": TRANSLATOR_FORMAT_VERSION,
        "generator_class": "ResnetGenerator",
        "generator_kwargs": dataclasses.asdict(generator),
        "image_size": image_size,
        "frame_format": {
            "layout": "NCHW",
            "channels": "RGB",
            "dtype": "float32",
            "range": [-1.0, 1.0],
            "conversion": "x / 127.5 - 1 from uint8; (y + 1) * 127.5 rounded back",
            "frames_per_image": 1,
            "frame_stack": frame_stack,
            "stack_order": "oldest first; translate each frame, then stack",
        },
        "files": {d: f.replace(".safetensors", "_ema.safetensors") if averaged else f for d, f in GENERATOR_FILES.items()},
    }


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A checkpoint directory from itself, a ``RUN_DIR/checkpoints`` folder or a ``RUN_DIR`` (via ``latest``).

    Raises:
        FileNotFoundError: when no complete checkpoint is found there.
    """
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / TRANSLATOR_FILE).is_file():
            return candidate
        latest = candidate / LATEST_FILE
        if latest.is_file():
            target = candidate / latest.read_text().strip()
            if (target / TRANSLATOR_FILE).is_file():
                return target
    raise FileNotFoundError(f"no translator checkpoint in {path} (expected {TRANSLATOR_FILE} or checkpoints/{LATEST_FILE})")


def load_generator(
    checkpoint_dir: str | Path, direction: Direction, device: torch.device | str = "cpu"
) -> ResnetGenerator:
    """Rebuild one trained generator from a checkpoint, in ``eval()`` mode, without any training code.

    Args:
        checkpoint_dir: a checkpoint directory (``RUN_DIR/checkpoints/step_*``) or a run directory, whose
            ``checkpoints/latest`` is followed.
        direction: ``"real2sim"`` (paper F, what a sim-trained policy needs at deployment) or ``"sim2real"`` (G).
        device: where to put the generator.

    Raises:
        FileNotFoundError: when the checkpoint is missing a file.
        ValueError: for an unknown direction or a ``translator.json`` of another format.
    """
    if direction not in GENERATOR_FILES:
        raise ValueError(f"direction must be one of {', '.join(GENERATOR_FILES)}; got {direction!r}")
    directory = resolve_checkpoint_dir(checkpoint_dir)
    meta = json.loads((directory / TRANSLATOR_FILE).read_text())
    if meta.get("format_version") != TRANSLATOR_FORMAT_VERSION or meta.get("generator_class") != "ResnetGenerator":
        raise ValueError(f"{directory / TRANSLATOR_FILE} is not a translator this version can read: {meta.get('format_version')!r}")
    generator = ResnetGenerator(**meta["generator_kwargs"])
    weights = directory / meta["files"][direction]
    if not weights.is_file():
        raise FileNotFoundError(f"missing generator weights {weights}")
    load_state_dict_checked(generator, load_file(str(weights)), weights)
    return generator.to(device).eval()


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict`` that turns a key or shape mismatch into a one-line ``ValueError`` naming the file."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} differently shaped tensors"
            + (f" (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} vs {tuple(own[wrong[0]].shape)})" if wrong else "")
            + (f" (e.g. missing {missing[0]})" if missing and not wrong else "")
        )
        raise ValueError(f"{source} was written for a different {type(module).__name__} architecture: {detail}")
    module.load_state_dict(state)
