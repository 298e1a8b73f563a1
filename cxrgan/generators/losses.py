"""Adversarial losses on discriminator logits, registered by name: non-saturating BCE and hinge.

Each loss is a pair ``(d_loss(real_logits, fake_logits), g_loss(fake_logits))`` computed from logits in float32,
so no sigmoid is ever taken explicitly (``softplus`` / ``binary_cross_entropy_with_logits`` are stable where
``log(sigmoid(x))`` underflows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from cxrgan.errors import CxrganError


@dataclass(frozen=True)
class AdversarialLoss:
    """A discriminator loss and the matching generator loss."""

    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (real_logits, fake_logits) -> scalar
    g_loss: Callable[[torch.Tensor], torch.Tensor]  # fake_logits -> scalar


def _bce_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # Goodfellow et al. 2014, eq. 1: -log D(x) - log(1 - D(G(z))), with D = sigmoid(logit).
    return F.softplus(-real.float()).mean() + F.softplus(fake.float()).mean()


def _bce_g(fake: torch.Tensor) -> torch.Tensor:
    # Non-saturating generator loss (Goodfellow et al. 2014, sec. 3): -log D(G(z)).
    return F.softplus(-fake.float()).mean()


def _hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    # Lim & Ye 2017, "Geometric GAN"; Miyato et al. 2018: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))].
    return F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()


def _hinge_g(fake: torch.Tensor) -> torch.Tensor:
    return -fake.float().mean()


LOSSES: dict[str, AdversarialLoss] = {
    "bce": AdversarialLoss(_bce_d, _bce_g),
    "hinge": AdversarialLoss(_hinge_d, _hinge_g),
}


def get_loss(name: str) -> AdversarialLoss:
    if name not in LOSSES:
        raise CxrganError(f"unknown GAN loss {name!r}; available: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]
