"""Differentiable augmentation for data-efficient GAN training (DiffAugment), grayscale-safe.

Zhao, Liu, Lin, Zhu & Han (2020), "Differentiable Augmentation for Data-Efficient GAN Training": the same random
transforms are applied to real and generated images before the discriminator, in both the D and the G step, so
D cannot memorise a small training set and G still receives gradients through the transforms. The colour op of
the paper (saturation) is left out: radiographs have one channel. All randomness comes from a ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from cxrgan.errors import CxrganError

AugmentOp = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(batch: int, rng: torch.Generator, x: torch.Tensor) -> torch.Tensor:
    return torch.rand(batch, 1, 1, 1, generator=rng).to(device=x.device, dtype=x.dtype, non_blocking=True)


def brightness(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Add U(-0.5, 0.5) to every pixel of an image (the paper's brightness op)."""
    return x + (_uniform(len(x), rng, x) - 0.5)


def contrast(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Scale deviations from the image mean by U(0.5, 1.5)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(len(x), rng, x) + 0.5) + mean


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ``ratio`` of the side in each direction; uncovered pixels become black (-1), as a film edge."""
    batch, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (batch, 1, 1), generator=rng).to(x.device, non_blocking=True)
    dx = torch.randint(-max_dx, max_dx + 1, (batch, 1, 1), generator=rng).to(x.device, non_blocking=True)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(batch, device=x.device), torch.arange(height, device=x.device), torch.arange(width, device=x.device), indexing="ij"
    )
    grid_y = torch.clamp(grid_y + dy + 1, 0, height + 1)
    grid_x = torch.clamp(grid_x + dx + 1, 0, width + 1)
    padded = F.pad(x, [1, 1, 1, 1], value=-1.0)
    return padded.permute(0, 2, 3, 1)[grid_b, grid_y, grid_x].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero (mid-grey) one random square of side ``ratio`` x image side per image."""
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    off_y = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), generator=rng).to(x.device, non_blocking=True)
    off_x = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), generator=rng).to(x.device, non_blocking=True)
    ys = torch.arange(height, device=x.device)[None, :, None]
    xs = torch.arange(width, device=x.device)[None, None, :]
    top, left = off_y - size_y // 2, off_x - size_x // 2
    inside = (ys >= top) & (ys < top + size_y) & (xs >= left) & (xs < left + size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


AUGMENT_OPS: dict[str, AugmentOp] = {
    "translation": translation,
    "cutout": cutout,
    "brightness": brightness,
    "contrast": contrast,
}
DEFAULT_POLICY = "translation,cutout,brightness,contrast"


def parse_policy(policy: str) -> tuple[str, ...]:
    """"translation,cutout" -> ("translation", "cutout"); "" -> no augmentation."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [n for n in names if n not in AUGMENT_OPS]
    if unknown:
        raise CxrganError(f"unknown DiffAugment op(s) {unknown}; available: {', '.join(AUGMENT_OPS)} (no colour ops on grayscale)")
    return names


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], rng: torch.Generator) -> torch.Tensor:
    """Apply the ops of ``policy`` in order, each with fresh per-image randomness from ``rng``."""
    for name in policy:
        x = AUGMENT_OPS[name](x, rng)
    return x
