"""Conversions between stored uint8 images and model tensors in [-1, 1], shared by classifiers and generators."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.unsqueeze(1).float().div_(127.5).sub_(1.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) float in [-1, 1] -> (N, H, W) uint8, rounding to the nearest grey level."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.squeeze(1).to(torch.uint8).cpu().numpy()
