"""Conversions between stored uint8 images and model tensors in [-1, 1], shared by classifiers and generators."""

from __future__ import annotations

import numpy as np
import torch


def uint8_tensor(images: np.ndarray) -> torch.Tensor:
    """A CPU tensor of uint8 images, sharing memory when it can; rows of a read-only memory map are copied (torch
    tensors must be writable)."""
    return torch.from_numpy(np.ascontiguousarray(images) if images.flags.writeable else np.array(images))


def images_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, H, W) uint8 -> (N, 1, H, W) float32 in [-1, 1]."""
    x = uint8_tensor(images).to(device)
    return x.unsqueeze(1).float().div_(127.5).sub_(1.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """(N, 1, H, W) float in [-1, 1] -> (N, H, W) uint8, rounding to the nearest grey level."""
    x = x.detach().float().clamp(-1, 1).add(1).mul(127.5).round()
    return x.squeeze(1).to(torch.uint8).cpu().numpy()
