"""Losses as pure functions of tensors, one per paper equation.

Code names follow roles; the papers' names are in the docstrings:
``G_sim2real`` (paper G), ``G_real2sim`` (F), ``D_real`` (D_Y), ``D_sim`` (D_X), ``Q_sim``, ``Q_real``;
X is the simulated domain, Y the real one.

Nothing here holds module state or an optimizer: the trainer computes network outputs and passes them in,
so each loss can be checked against hand-computed values on tiny tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GanLoss = Callable[[torch.Tensor, bool], torch.Tensor]


def squared_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d(a, b) = mean((a - b)^2): the distance used by the TD and RL-scene losses by default."""
    return (a - b).pow(2).mean()


def absolute_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d(a, b) = mean|a - b|: less sensitive than the square to a few large Q disagreements."""
    return (a - b).abs().mean()


def huber_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """d(a, b) = mean Huber(a - b) with delta 1: squared near zero, absolute beyond (DQN's TD distance)."""
    return F.huber_loss(a, b, delta=1.0)


DISTANCES: dict[str, Distance] = {
    "squared": squared_distance,
    "absolute": absolute_distance,
    "huber": huber_distance,
}
"""The distances d a config can name (``loss.rl_scene_distance``, ``loss.td_distance``)."""


def lsgan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Least-squares GAN loss (Mao et al. 2017), CycleGAN's default: mean (D(.) - t)^2 with t = 1 (real) or 0 (fake).

    For the discriminator: L = E_y (D_Y(y) - 1)^2 + E_x D_Y(G(x))^2 (built by ``discriminator_loss``).
    For the generator: L_GAN(G, D_Y, X, Y) = E_x (D_Y(G(x)) - 1)^2, i.e. ``lsgan_loss(D_Y(G(x)), True)``.

    Args:
        pred: discriminator outputs (patch logits) of any shape.
        real: whether the target label is "real".
    """
    return (pred - (1.0 if real else 0.0)).pow(2).mean()


def vanilla_gan_loss(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """The original log-loss GAN (Goodfellow et al. 2014) on logits: -mean[t log s(D) + (1 - t) log(1 - s(D))].

    L_GAN(G, D_Y, X, Y) = E_y[log D_Y(y)] + E_x[log(1 - D_Y(G(x)))]; the discriminator maximises it, and the
    generator minimises the non-saturating form -E_x[log D_Y(G(x))] (``vanilla_gan_loss(D_Y(G(x)), True)``),
    as in the reference implementation, because log(1 - D) has vanishing gradients early in training.

    Args:
        pred: discriminator logits (no sigmoid applied) of any shape.
        real: whether the target label is "real".
    """
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    return F.binary_cross_entropy_with_logits(pred, target)


GAN_LOSSES: dict[str, GanLoss] = {"lsgan": lsgan_loss, "vanilla": vanilla_gan_loss}
"""The adversarial losses a config can name (``loss.gan``)."""


def discriminator_loss(pred_real: torch.Tensor, pred_fake: torch.Tensor, gan_loss: GanLoss = lsgan_loss) -> torch.Tensor:
    """A discriminator's loss, halved as in CycleGAN to slow D relative to G: 0.5 (l(D(y), 1) + l(D(fake), 0)).

    ``pred_fake`` must come from detached (and pooled) generated images, so this loss trains D only.
    """
    return 0.5 * (gan_loss(pred_real, True) + gan_loss(pred_fake, False))


def cycle_loss(original: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """One direction of the cycle-consistency loss, mean L1 (CycleGAN eq. 2).

    L_cyc(G, F) = E_x ||F(G(x)) - x||_1 + E_y ||G(F(y)) - y||_1: call once per direction
    (``cycle_loss(x, F(G(x)))`` is the forward cycle, ``cycle_loss(y, G(F(y)))`` the backward one) so each
    direction can be weighted or ablated on its own.
    """
    return (reconstructed - original).abs().mean()


def masked_l1(target: torch.Tensor, output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 over the pixels where ``mask`` (``(B, 1, H, W)`` bool, broadcast over channels) is true.

    The paired oracle's L1 restricted to what its input determines; 0 when no pixel is selected.
    """
    selected = mask.expand_as(output).to(output.dtype)
    return ((output - target).abs() * selected).sum() / selected.sum().clamp(min=1.0)


def identity_loss(target_domain_image: torch.Tensor, mapped: torch.Tensor) -> torch.Tensor:
    """One generator's identity loss, mean L1 (CycleGAN section 5.2).

    L_idt(G, F) = E_y ||G(y) - y||_1 + E_x ||F(x) - x||_1: a generator fed an image already in its target
    domain should leave it alone, which keeps colours from drifting. Call as ``identity_loss(y, G(y))``.
    """
    return (mapped - target_domain_image).abs().mean()


def scene_consistency_loss(
    q: torch.Tensor, q_translated: torch.Tensor, q_cycled: torch.Tensor, distance: Distance = squared_distance
) -> torch.Tensor:
    """The three RL-scene terms of one domain: d(q, q') + d(q, q'') + d(q', q'').

    For a sim transition (x, a): q = Q_sim(x, a), q' = Q_real(G(x), a), q'' = Q_sim(F(G(x)), a);
    for a real one (y, a): q = Q_real(y, a), q' = Q_sim(F(y), a), q'' = Q_real(G(F(y)), a).
    A translation that keeps the Q-values keeps what matters to the task, whatever else it changes.
    """
    return distance(q, q_translated) + distance(q, q_cycled) + distance(q_translated, q_cycled)


def rl_scene_loss(
    q_x: torch.Tensor,
    q_x_translated: torch.Tensor,
    q_x_cycled: torch.Tensor,
    q_y: torch.Tensor,
    q_y_translated: torch.Tensor,
    q_y_cycled: torch.Tensor,
    distance: Distance = squared_distance,
) -> torch.Tensor:
    """The RL-scene consistency loss (RL-CycleGAN, Rao et al. 2020, eq. 3), all six terms.

    L_RL-scene(G, F) = d(q_x, q'_x) + d(q_x, q''_x) + d(q'_x, q''_x) + d(q_y, q'_y) + d(q_y, q''_y) + d(q'_y, q''_y)

    with q_x = Q_sim(x, a), q'_x = Q_real(G(x), a), q''_x = Q_sim(F(G(x)), a), q_y = Q_real(y, a),
    q'_y = Q_sim(F(y), a), q''_y = Q_real(G(F(y)), a), for (x, a) ~ D_sim and (y, a) ~ D_real.

    Args:
        q_x, q_x_translated, q_x_cycled: q_x, q'_x, q''_x, each ``(B,)``.
        q_y, q_y_translated, q_y_cycled: q_y, q'_y, q''_y, each ``(B,)``.
        distance: d, the squared difference by default.
    """
    return scene_consistency_loss(q_x, q_x_translated, q_x_cycled, distance) + scene_consistency_loss(
        q_y, q_y_translated, q_y_cycled, distance
    )


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
    distance: Distance = squared_distance,
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
