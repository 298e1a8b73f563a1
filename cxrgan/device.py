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


def autocast(device: torch.device, bf16: bool, fp16: bool = False) -> contextlib.AbstractContextManager:
    """bf16 autocast when asked (CPU and CUDA both support it), fp16 autocast (CUDA, with a gradient scaler in the
    training loop); a no-op context otherwise."""
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if fp16:
        return torch.autocast(device_type=device.type, dtype=torch.float16)
    return contextlib.nullcontext()


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


PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def resolve_amp(precision: str, device: str = "auto") -> str:
    """``--precision`` -> the autocast a run uses: "bf16", "fp16" or "fp32".

    "auto" is bf16 where it runs natively (a CUDA device with bf16 units, or a CPU with AVX512-BF16 / AMX); on a
    CUDA device without bf16 it is fp16 with a gradient scaler (Micikevicius et al. 2018, "Mixed Precision
    Training"); elsewhere fp32. fp16 is refused off CUDA (CPU fp16 autocast is slow and needs no scaler)."""
    if precision not in PRECISIONS:
        raise CxrganError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    resolved = resolve_device(device)
    if precision == "auto":
        if bf16_supported(resolved):
            return "bf16"
        return "fp16" if resolved.type == "cuda" else "fp32"
    if precision == "fp16" and resolved.type != "cuda":
        raise CxrganError(f"--precision fp16 needs a CUDA device (--device {device} is {resolved.type}); use bf16 or fp32")
    return precision


def resolve_precision(precision: str, device: str = "auto") -> bool:
    """``--precision`` -> use bf16 autocast or not (see :func:`resolve_amp`)."""
    return resolve_amp(precision, device) == "bf16"
