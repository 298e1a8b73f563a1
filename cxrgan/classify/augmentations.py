"""On-the-fly augmentations of training batches, each split into drawing its random parameters and applying them, so
a data-parallel run draws them for the global batch and every process applies its rows' share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cxrgan.balance.augment import random_flip_affine_theta, warp


@dataclass(frozen=True)
class Augmentation:
    """An on-the-fly augmentation in two halves: ``draw(n, generator)`` draws the random parameters of n rows, and
    ``apply(x, params)`` warps a float batch with the parameters of its rows. Drawn for the global batch and
    applied by each process to its share, a data-parallel run augments exactly as one process would."""

    draw: Callable[[int, torch.Generator], torch.Tensor | None]
    apply: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def _flip(x: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


AUGMENTATIONS: dict[str, Augmentation] = {
    "none": Augmentation(lambda n, generator: None, lambda x, params: x),
    "flip": Augmentation(lambda n, generator: torch.rand(n, generator=generator) < 0.5, _flip),
    "flip-affine": Augmentation(lambda n, generator: random_flip_affine_theta(n, generator), warp),
}
