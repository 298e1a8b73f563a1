"""Device and precision choices shared by every training loop."""

from __future__ import annotations

import contextlib

import torch

from cxrgan.errors import CxrganError


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when present, else CPU; "cpu", "cuda", "cuda:1" are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise CxrganError(f"unknown device {name!r}; use auto, cpu or cuda") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CxrganError(f"device {name!r} requested but CUDA is not available")
    return device


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked (CPU and CUDA both support it); a no-op context otherwise."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
