"""Translation-quality metrics against paired ground truth, as pure functions of tensors.

Our domains can render any state in both looks, so a translator trained on unpaired data gets a
paired score: F(y) against the true ``sim`` rendering of the same state (L1, PSNR, SSIM), and the
CycleGAN paper's FCN-score (a segmentation network trained on ``sim`` renders labels F(y); its output is
scored against the true segmentation as per-pixel accuracy, per-class accuracy and class IoU).

Images are float tensors ``(B, C, H, W)`` in ``[0, 1]`` unless stated otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mean_absolute_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 = mean |prediction - target| over all pixels and channels."""
    return (prediction - target).abs().mean()


def psnr(prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, per image, averaged: 10 log10(max^2 / MSE).

    Identical images give ``inf``; the mean over a batch is then ``inf`` as well, which is honest.
    """
    mse = (prediction - target).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(max_value**2 / mse)).mean()


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = (g / g.sum()).float()
    window = torch.outer(g, g)  # (size, size)
    return window.expand(channels, 1, size, size).contiguous()  # (C, 1, size, size), one per channel


def ssim(
    prediction: torch.Tensor, target: torch.Tensor, max_value: float = 1.0, window_size: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) with an 11x11 Gaussian window, valid region, mean over all.

    SSIM = ((2 mu_x mu_y + C1)(2 sigma_xy + C2)) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    C1 = (0.01 max)^2, C2 = (0.03 max)^2. The window shrinks to the image side for tiny images.
    """
    channels = prediction.shape[1]
    window_size = min(window_size, prediction.shape[-1], prediction.shape[-2])
    window = _gaussian_window(window_size, sigma, channels, prediction.device)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, window, groups=channels)

    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mu_x, mu_y = blur(prediction), blur(target)
    var_x = blur(prediction * prediction) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(prediction * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean()


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts ``(num_classes, num_classes)``: row = true class, column = predicted class."""
    index = target.flatten().long() * num_classes + prediction.flatten().long()
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(confusion: torch.Tensor) -> dict[str, float]:
    """The FCN-score triple of the CycleGAN paper (Table 2), from a confusion matrix.

    Per-pixel accuracy = trace / total; per-class accuracy = mean over classes present in the ground
    truth of (correct / true pixels of the class); class IoU = mean over those classes of
    TP / (TP + FP + FN).
    """
    confusion = confusion.double()
    true_per_class = confusion.sum(dim=1)
    predicted_per_class = confusion.sum(dim=0)
    correct = confusion.diag()
    present = true_per_class > 0
    union = true_per_class + predicted_per_class - correct
    return {
        "per_pixel_accuracy": float(correct.sum() / confusion.sum()),
        "per_class_accuracy": float((correct[present] / true_per_class[present]).mean()),
        "class_iou": float((correct[present] / union[present]).mean()),
    }
