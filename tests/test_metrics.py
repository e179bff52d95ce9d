"""Translation metrics against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rlcyclegan.metrics import confusion_matrix, mean_absolute_error, psnr, segmentation_scores, ssim


def test_l1_and_psnr_by_hand() -> None:
    a = torch.tensor([[[[0.0, 0.5], [1.0, 0.25]]]])  # (1, 1, 2, 2)
    b = torch.tensor([[[[0.0, 0.25], [0.5, 0.25]]]])
    assert mean_absolute_error(a, b).item() == pytest.approx((0 + 0.25 + 0.5 + 0) / 4)
    mse = (0.25**2 + 0.5**2) / 4
    assert psnr(a, b).item() == pytest.approx(10 * math.log10(1 / mse), rel=1e-5)
    assert psnr(a, a).item() == math.inf


def test_ssim_is_one_for_identical_and_lower_for_different_images() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=generator)
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-5)
    assert ssim(x, torch.rand(2, 3, 16, 16, generator=generator)).item() < 0.2


def test_ssim_of_constant_images_by_hand() -> None:
    # Constant images: variances and covariance vanish, SSIM = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1).
    x, y = torch.full((1, 1, 11, 11), 0.2), torch.full((1, 1, 11, 11), 0.6)
    c1 = 0.01**2
    assert ssim(x, y).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2**2 + 0.6**2 + c1), rel=1e-4)


def test_segmentation_scores_by_hand() -> None:
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]])
    predicted = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 2]])
    confusion = confusion_matrix(predicted, target, num_classes=4)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 3, 0], [0, 0, 0, 0]]
    scores = segmentation_scores(confusion)
    assert scores["per_pixel_accuracy"] == pytest.approx(6 / 8)
    # class 3 never occurs in the ground truth and is left out of the class means
    assert scores["per_class_accuracy"] == pytest.approx((1 / 2 + 2 / 2 + 3 / 4) / 3)
    # IoU: class 0: 1 / (2 + 2 - 1); class 1: 2 / (2 + 3 - 2); class 2: 3 / (4 + 3 - 3)
    assert scores["class_iou"] == pytest.approx((1 / 3 + 2 / 3 + 3 / 4) / 3)
