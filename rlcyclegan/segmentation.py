"""A small segmentation network trained on ``sim`` renders, for the FCN-score of translators.

The CycleGAN paper scores generated Cityscapes photos with an FCN trained on real photos: if the
translation keeps the scene, the FCN recovers the labels it was generated from. Here the segmenter is
trained on true ``sim`` renders of many states (the labels come from MuJoCo's segmentation rendering),
then labels F(y) for real frames y; the score compares that with the true segmentation of the same state
rendered in ``sim``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from rlcyclegan.envs.model import SEGMENTATION_CLASSES
from rlcyclegan.envs.rendering import PairedRenderer, RenderSettings
from rlcyclegan.envs.spec import DomainSpec
from rlcyclegan.fileio import fsync_path
from rlcyclegan.metrics import confusion_matrix, segmentation_scores
from rlcyclegan.networks import load_state_dict_checked

SEGMENTER_KIND = "rlcyclegan-segmenter"
"""The ``kind`` in a saved segmenter's header."""


def _block(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
    )


class SegmentationNet(nn.Module):
    """A two-level U-Net: thin links are a pixel or two wide at 64x64, so full resolution is kept in a skip."""

    def __init__(self, num_classes: int = len(SEGMENTATION_CLASSES), width: int = 16) -> None:
        super().__init__()
        self.width = width
        self.enc1 = _block(3, width)
        self.enc2 = _block(width, 2 * width)
        self.enc3 = _block(2 * width, 4 * width)
        self.dec2 = _block(4 * width + 2 * width, 2 * width)
        self.dec1 = _block(2 * width + width, width)
        self.classify = nn.Conv2d(width, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K, H, W)`` for float images ``(B, 3, H, W)`` in [-1, 1]."""
        e1 = self.enc1(images)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:]), e2], dim=1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:]), e1], dim=1))
        return self.classify(d1)


def render_segmentation_set(
    spec: DomainSpec, qpos: np.ndarray, image_size: int, settings: RenderSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """RGB frames ``(N, H, W, 3)`` uint8 and class maps ``(N, H, W)`` uint8 of states ``qpos (N, nq)`` in ``spec``."""
    renderer = PairedRenderer(spec, image_size, settings)
    try:
        images = np.stack([renderer.render(q) for q in qpos])
        labels = np.stack([renderer.segment(q) for q in qpos])
    finally:
        renderer.close()
    return images, labels


def _to_input(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [-1, 1]."""
    tensor = torch.as_tensor(images, device=device)
    return tensor.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)  # (N, 3, H, W)


def train_segmenter(
    images: np.ndarray,
    labels: np.ndarray,
    steps: int = 1500,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    width: int = 16,
) -> SegmentationNet:
    """Fit a ``SegmentationNet`` to frames and class maps with class-balanced cross-entropy.

    Classes are weighted by inverse square-root frequency: the links are a few percent of the pixels,
    and an unweighted loss would settle for sky and floor.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"need as many images as label maps (got {len(images)} and {len(labels)}), at least one")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = SegmentationNet(width=width).to(device)
    counts = np.bincount(labels.reshape(-1), minlength=len(SEGMENTATION_CLASSES)).astype(np.float64)
    weights = torch.tensor(1.0 / np.sqrt(np.maximum(counts, 1.0)), dtype=torch.float32, device=device)
    weights = weights / weights.mean()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    inputs = _to_input(images, torch.device("cpu"))
    targets = torch.as_tensor(labels).long()
    net.train()
    for _ in range(steps):
        index = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        logits = net(inputs[index].to(device))
        loss = F.cross_entropy(logits, targets[index].to(device), weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return net.eval()


def save_segmenter(net: SegmentationNet, path: Path, tag: str) -> None:
    """Write ``net``'s weights atomically, with ``tag`` (what it was trained from) in the file's header."""
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(tmp), metadata={"kind": SEGMENTER_KIND, "width": str(net.width), "tag": tag})
    fsync_path(tmp)
    os.replace(tmp, path)


def _segmenter_header(path: Path) -> dict[str, str] | None:
    """``path``'s safetensors header if it is a file ``save_segmenter`` wrote, else ``None``."""
    from rlcyclegan.agents.student import read_safetensors_header

    try:
        header = read_safetensors_header(path)
    except ValueError:
        return None
    return header if header.get("kind") == SEGMENTER_KIND else None


def read_segmenter_tag(path: Path) -> str | None:
    """The tag ``save_segmenter`` wrote into ``path`` (``None``: not a segmenter file), without loading weights."""
    header = _segmenter_header(path)
    return None if header is None else header.get("tag")


def load_segmenter(path: Path, device: torch.device | str = "cpu") -> tuple[SegmentationNet, str]:
    """A segmenter written by ``save_segmenter``, in eval mode on ``device``, and its tag.

    Raises:
        ValueError: if ``path`` is not such a file (not safetensors, another kind, or other weights).
    """
    header = _segmenter_header(path)
    if header is None:
        raise ValueError(f"{path} is not a segmenter file (expected kind {SEGMENTER_KIND!r})")
    net = SegmentationNet(width=int(header["width"]))
    load_state_dict_checked(net, load_file(str(path)), path)
    return net.to(device).eval(), header["tag"]


@torch.no_grad()
def predict_segmentation(net: SegmentationNet, images: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Class maps ``(N, H, W)`` uint8 for uint8 frames ``(N, H, W, 3)``."""
    device = next(net.parameters()).device
    net.eval()
    outputs = [
        net(_to_input(images[i: i + batch_size], device)).argmax(dim=1).to(torch.uint8).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(outputs).numpy()


def fcn_score(net: SegmentationNet, images: np.ndarray, true_labels: np.ndarray) -> dict[str, float]:
    """Per-pixel accuracy, per-class accuracy and class IoU of ``net``'s labels for ``images``."""
    predicted = torch.as_tensor(predict_segmentation(net, images))
    confusion = confusion_matrix(predicted, torch.as_tensor(true_labels), len(SEGMENTATION_CLASSES))
    return segmentation_scores(confusion)
