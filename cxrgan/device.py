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


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 autocast runs natively here: a CUDA device with bf16 units, or a CPU whose oneDNN has bf16
    kernels (AVX512-BF16 or AMX; on this project's 2-core CPU bf16 doubles the matmul peak, 180 -> 377 GFLOP/s)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_precision(precision: str, device: str = "auto") -> bool:
    """``--precision``: "bf16", "fp32", or "auto" (bf16 where it runs natively) -> use bf16 autocast or not."""
    if precision not in ("auto", "bf16", "fp32"):
        raise CxrganError(f"--precision {precision!r}: expected auto, bf16 or fp32")
    if precision == "auto":
        return bf16_supported(resolve_device(device))
    return precision == "bf16"
