"""Losses as pure functions of tensors, one per paper equation.

Code names follow roles; the papers' names are in the docstrings:
``G_sim2real`` (paper G), ``G_real2sim`` (F), ``D_real`` (D_Y), ``D_sim`` (D_X), ``Q_sim``, ``Q_real``.
"""

from __future__ import annotations

import torch


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d(a, b) = mean((a - b)^2): the distance used by the TD and RL-scene losses by default."""
    return (a - b).pow(2).mean()


def td_target(
    reward: torch.Tensor, next_value: torch.Tensor, terminated: torch.Tensor, gamma: float
) -> torch.Tensor:
    """r + gamma * (1 - terminated) * V(x'), with no gradient through V(x')."""
    return reward + gamma * (1.0 - terminated) * next_value.detach()


def td_loss(
    q: torch.Tensor,
    reward: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    distance=squared_distance,
) -> torch.Tensor:
    """L_RL(Q) = E d(Q(x, a), r + gamma V(x')) (RL-CycleGAN, Rao et al. 2020, eq. 4).

    Args:
        q: Q(x, a), shape (B,).
        reward: r, shape (B,).
        next_value: V(x') from the target network, shape (B,); detached here.
        terminated: 1.0 where x' is terminal (no bootstrap), shape (B,).
        gamma: discount.
        distance: d, squared difference by default.
    """
    return distance(q, td_target(reward, next_value, terminated, gamma))
