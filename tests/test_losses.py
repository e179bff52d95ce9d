"""Each loss against values computed by hand on 2x2 tensors, and the RL-scene loss's fixed point."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rlcyclegan.agents.q_network import PixelQNetwork
from rlcyclegan.losses import (
    absolute_distance,
    cycle_loss,
    discriminator_loss,
    huber_distance,
    identity_loss,
    lsgan_loss,
    masked_l1,
    rl_scene_loss,
    scene_consistency_loss,
    squared_distance,
    td_loss,
    td_target,
    vanilla_gan_loss,
)

PRED = torch.tensor([[0.5, 1.0], [0.0, 2.0]])


def test_lsgan_loss_by_hand():
    # real: mean((0.5-1)^2, 0, 1, 1) = 2.25 / 4; fake: mean(0.25, 1, 0, 4) = 5.25 / 4
    assert lsgan_loss(PRED, True).item() == pytest.approx(0.5625)
    assert lsgan_loss(PRED, False).item() == pytest.approx(1.3125)


def test_vanilla_gan_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [-math.log(3.0), 0.0]])
    # sigmoid: 1/2, 3/4, 1/4, 1/2 -> real: -log of those; fake: -log(1 - those)
    real = (math.log(2) + math.log(4 / 3) + math.log(4) + math.log(2)) / 4
    fake = (math.log(2) + math.log(4) + math.log(4 / 3) + math.log(2)) / 4
    assert vanilla_gan_loss(logits, True).item() == pytest.approx(real, rel=1e-6)
    assert vanilla_gan_loss(logits, False).item() == pytest.approx(fake, rel=1e-6)


@pytest.mark.parametrize("gan", [lsgan_loss, vanilla_gan_loss])
def test_discriminator_loss_is_half_the_real_plus_fake_terms(gan):
    real, fake = PRED, PRED.flip(0)
    expected = 0.5 * (gan(real, True).item() + gan(fake, False).item())
    assert discriminator_loss(real, fake, gan).item() == pytest.approx(expected)
    assert discriminator_loss(torch.ones(2, 2), torch.zeros(2, 2), lsgan_loss).item() == 0.0  # a perfect D


def test_cycle_and_identity_losses_are_mean_l1():
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    reconstruction = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
    assert cycle_loss(x, reconstruction).item() == pytest.approx(0.75)  # (1 + 0 + 2 + 0) / 4
    assert identity_loss(x, reconstruction).item() == pytest.approx(0.75)
    assert cycle_loss(x, x).item() == 0.0


def test_masked_l1_averages_only_the_selected_pixels_over_all_channels():
    target = torch.zeros(1, 2, 1, 2)  # (B, C, H, W): two channels, two pixels
    output = torch.tensor([[[[1.0, 4.0]], [[3.0, 8.0]]]])
    mask = torch.tensor([[[[True, False]]]])  # (B, 1, H, W): only the first pixel counts
    assert masked_l1(target, output, mask).item() == pytest.approx(2.0)  # (1 + 3) / 2
    assert masked_l1(target, output, torch.ones_like(mask)).item() == pytest.approx(4.0)  # cycle_loss's mean
    assert masked_l1(target, output, torch.zeros_like(mask)).item() == 0.0


def test_distances_by_hand():
    a, b = torch.tensor([0.0, 3.0]), torch.tensor([1.0, 0.0])
    assert squared_distance(a, b).item() == pytest.approx(5.0)  # (1 + 9) / 2
    assert absolute_distance(a, b).item() == pytest.approx(2.0)  # (1 + 3) / 2
    assert huber_distance(a, b).item() == pytest.approx(1.5)  # (0.5 * 1 + (3 - 0.5)) / 2


Q6 = (
    torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]), torch.tensor([3.0, 2.0]),  # q_x, q'_x, q''_x
    torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([0.0, 2.0]),  # q_y, q'_y, q''_y
)


def test_rl_scene_loss_by_hand():
    # x: d(q, q') = mean(0, 4) = 2, d(q, q'') = mean(4, 0) = 2, d(q', q'') = mean(4, 4) = 4  -> 8
    # y: d(q, q') = mean(1, 1) = 1, d(q, q'') = mean(0, 4) = 2, d(q', q'') = mean(1, 1) = 1  -> 4
    assert scene_consistency_loss(*Q6[:3]).item() == pytest.approx(8.0)
    assert rl_scene_loss(*Q6).item() == pytest.approx(12.0)
    # absolute: x: 1 + 1 + 2, y: 1 + 1 + 1
    assert rl_scene_loss(*Q6, distance=absolute_distance).item() == pytest.approx(7.0)


def test_rl_scene_loss_gradient_reaches_every_q():
    qs = [q.clone().requires_grad_(True) for q in Q6]
    rl_scene_loss(*qs).backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in qs)


def test_rl_scene_loss_vanishes_for_identity_translators_and_one_q_network():
    """G = F = identity and Q_sim == Q_real: all six Q-values agree, so the loss is zero (and only then)."""
    torch.manual_seed(0)
    q_sim = PixelQNetwork(frame_stack=2, action_dim=3, image_size=16, features_dim=16, hidden_dim=16, width=4)
    x, y = torch.rand(5, 6, 16, 16) * 2 - 1, torch.rand(5, 6, 16, 16) * 2 - 1
    a_x, a_y = torch.randn(5, 3), torch.randn(5, 3)
    G = F = nn.Identity()

    def six(Q_sim: nn.Module, Q_real: nn.Module) -> tuple[torch.Tensor, ...]:
        return (Q_sim(x, a_x), Q_real(G(x), a_x), Q_sim(F(G(x)), a_x),
                Q_real(y, a_y), Q_sim(F(y), a_y), Q_real(G(F(y)), a_y))

    assert rl_scene_loss(*six(q_sim, q_sim)).item() == 0.0
    q_real = PixelQNetwork(frame_stack=2, action_dim=3, image_size=16, features_dim=16, hidden_dim=16, width=4)
    assert rl_scene_loss(*six(q_sim, q_real)).item() > 0.0


def test_td_loss_by_hand():
    q = torch.tensor([1.0, 2.0])
    reward, next_value, terminated = torch.tensor([0.5, 1.0]), torch.tensor([2.0, 5.0]), torch.tensor([0.0, 1.0])
    # targets: 0.5 + 0.5 * 2 = 1.5 and 1.0 (terminal: no bootstrap) -> mean(0.25, 1) = 0.625
    assert td_target(reward, next_value, terminated, 0.5).tolist() == [1.5, 1.0]
    assert td_loss(q, reward, next_value, terminated, 0.5).item() == pytest.approx(0.625)


def test_td_loss_sends_no_gradient_into_the_target():
    q = torch.tensor([1.0, 2.0], requires_grad=True)
    next_value = torch.tensor([2.0, 5.0], requires_grad=True)
    td_loss(q, torch.zeros(2), next_value, torch.zeros(2), 0.9).backward()
    assert q.grad is not None and next_value.grad is None
