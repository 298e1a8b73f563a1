"""Device and precision choices shared by every training loop: the device, native bf16, determinism, seeding."""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Iterator

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
    """Whether bf16 autocast runs natively here: a CUDA device with bf16 units (compute capability 8.0 or higher, or
    ROCm), or a CPU whose oneDNN has bf16 kernels (AVX512-BF16 or AMX; on this project's 2-core CPU bf16 doubles the
    matmul peak, 180 -> 377 GFLOP/s); never on other devices (``meta``).

    ``torch.cuda.is_bf16_supported()`` alone says yes on a T4 or V100 too: it counts software emulation, and cuDNN
    has no bf16 convolutions below compute capability 8.0. ``including_emulation=False`` asks about the hardware,
    of the current device, so the device asked about is made current for the question."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return False
        with torch.cuda.device(device.index if device.index is not None else -1):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type != "cpu":
        return False
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


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for the work queued on a CUDA device (all of them when None) before reading a clock; a no-op elsewhere.
    CUDA kernels run asynchronously, so an unsynchronised timer measures kernel launches, not their work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        if device is None or torch.device(device).type == "cuda":
            torch.cuda.synchronize(device)


CUBLAS_WORKSPACE = ":4096:8"  # a fixed cuBLAS workspace: what deterministic cuBLAS results need (CUDA >= 10.2)


def configure_determinism(device: torch.device | str) -> None:
    """On a CUDA device, the settings under which a run and its resumed twin compute the same numbers: cuDNN's
    deterministic algorithms without autotuning, a fixed cuBLAS workspace, and PyTorch's deterministic kernels (the
    sorted, atomic-free ``index_put_`` backward of DiffAugment's translation among them), warning once about ops
    that have none (the backward of ``ReflectionPad2d`` and ``AdaptiveAvgPool2d``: CycleGAN's padding, FastGAN's
    gate, the classifiers' global pooling). A no-op on the CPU, whose kernels are already deterministic for a fixed
    thread count, and where the deterministic mode would fill every new tensor with NaN first.

    ``CUBLAS_WORKSPACE_CONFIG`` only takes effect when set before cuBLAS starts: call this before the first CUDA
    computation (the command line does, for every command)."""
    if torch.device(device).type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # a debugging aid, not needed for determinism
    warnings.filterwarnings("once", message=".*does not have a deterministic implementation.*")


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """The global CPU RNG seeded with ``seed`` inside, restored afterwards; every CUDA RNG untouched.

    For constructors that draw their initial weights from the global RNG (torchvision, MONAI). ``torch.manual_seed``
    inside ``torch.random.fork_rng(devices=[])`` would also reseed every CUDA generator and leave it reseeded (only the
    CPU state is forked), so a GPU run's later CUDA draws would depend on which networks were built before."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
