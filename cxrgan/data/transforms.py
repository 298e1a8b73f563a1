"""Conversions between stored uint8 images and model tensors in [-1, 1], shared by classifiers and generators."""

from __future__ import annotations

import numpy as np
import torch


def uint8_tensor(images: np.ndarray) -> torch.Tensor:
    """A CPU tensor of uint8 images, sharing memory when it can; rows of a read-only memory map are copied (torch
    tensors must be writable)."""
    return torch.from_numpy(np.ascontiguousarray(images) if images.flags.writeable else np.array(images))


def images_to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu",
                     non_blocking: bool = False) -> torch.Tensor:
    """(N, H, W) uint8 (an array, or a CPU tensor such as a pinned batch) -> (N, 1, H, W) float32 in [-1, 1] on
    ``device``; the uint8 rows are copied, a quarter of the float bytes (``non_blocking``: without waiting for the
    device, from pinned memory)."""
    x = images if isinstance(images, torch.Tensor) else uint8_tensor(images)
    return x.to(device, non_blocking=non_blocking).unsqueeze(1).float().div_(127.5).sub_(1.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) float in [-1, 1] -> (N, H, W) uint8, rounding to the nearest grey level."""
    if x.is_meta:  # a traced run (cxrgan.memory): shapes without values, so blank images of the right shape
        return np.zeros((x.shape[0], *x.shape[2:]), np.uint8)
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.squeeze(1).to(torch.uint8).cpu().numpy()
