"""Data-parallel training under ``torchrun``: the process group (NCCL on CUDA, gloo on CPU, with a collective
timeout), rank helpers, agreement on errors, BatchNorm over the global batch, and gradient averaging.

``torchrun`` starts one process per device and sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT`` (Li et al. 2020, "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB).
Every cxrgan command started by torchrun joins one process group (:func:`setup`); without torchrun every helper
here is a no-op, so the same code runs in one process. Rank 0 writes files; all ranks compute the same cells.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable, Iterable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError, RankAgreedError

T = TypeVar("T")
TIMEOUT_ENV = "CXRGAN_DIST_TIMEOUT"  # seconds a collective may wait for the slowest process before it fails
DEFAULT_TIMEOUT_SECONDS = 600.0  # every collective here is in lockstep; ten minutes of waiting means a lost process


# ---- the process group ---------------------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """True in a process that torchrun started as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def env_rank() -> int:
    """This process's rank as torchrun announced it (0 without torchrun); valid before :func:`setup`."""
    return int(os.environ.get("RANK", "0"))


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(value) if value else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise RankAgreedError(f"{TIMEOUT_ENV}={value!r}: expected seconds, e.g. 600") from None
    if seconds <= 0:
        raise RankAgreedError(f"{TIMEOUT_ENV}={value!r}: must be positive")
    return seconds


def setup(device: str = "auto") -> None:
    """Join torchrun's process group: NCCL when ``device`` resolves to CUDA (each process on GPU ``LOCAL_RANK``),
    gloo otherwise; collectives fail after :func:`timeout_seconds` instead of hanging. A no-op without torchrun
    or when already joined. Errors are raised alike on every process (:class:`RankAgreedError`)."""
    if not launched_by_torchrun() or dist.is_initialized():
        return
    try:
        resolved = resolve_device(device)
    except CxrganError as exc:
        raise RankAgreedError(str(exc)) from None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if resolved.type == "cuda" and resolved.index is not None:
        raise RankAgreedError(f"--device {device}: under torchrun every process uses the GPU of its LOCAL_RANK; use "
                              "--device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose which GPUs torchrun sees")
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RankAgreedError(f"--nproc_per_node: process {local_rank} of this machine has no GPU (it has "
                                  f"{count}); start at most {count} processes per machine")
        torch.cuda.set_device(local_rank)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds()))


def shutdown() -> None:
    """Leave the process group (idempotent); afterwards every process computes on its own."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True while this process is one of several in a process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """The process that writes files: rank 0, or the only process."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


# ---- agreeing on objects and errors --------------------------------------------------------------------------
def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every process (picklable objects)."""
    if not active():
        return value
    box = [value if rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree(run: Callable[[], T]) -> T:
    """Run ``run`` on every process; if it raised a user error (:class:`CxrganError`, ``OSError``) on any, raise it
    on all of them, so none waits in a later collective for a process that has stopped.

    The error names the first failing rank when only some failed (a data file missing on one machine)."""
    result, failure = None, None
    try:
        result = run()
    except (CxrganError, OSError) as exc:
        if not active():
            raise
        failure = _message(exc)
    if not active():
        return result
    failures = [None] * world_size()
    dist.all_gather_object(failures, failure)
    failed = [(r, message) for r, message in enumerate(failures) if message is not None]
    if failed:
        first_rank, message = failed[0]
        prefix = "" if len(failed) == len(failures) else f"process {first_rank} (of {len(failures)}): "
        raise RankAgreedError(prefix + message) from None
    return result


def on_main(run: Callable[[], T]) -> T:
    """Run ``run`` on rank 0 only and hand its result (or its user error) to every process."""
    if not active():
        return run()
    outcome: tuple[bool, Any] = (True, None)
    if rank() == 0:
        try:
            outcome = (True, run())
        except (CxrganError, OSError) as exc:
            outcome = (False, _message(exc))
    ok, value = broadcast_object(outcome)
    if not ok:
        raise RankAgreedError(value)
    return value


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, CxrganError):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}{exc.strerror or exc}"
    return str(exc)


def all_sum(values: Iterable[float]) -> list[float]:
    """Element-wise sum over processes of a short list of numbers (float64)."""
    values = [float(v) for v in values]
    if not active():
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def global_std(tensor: torch.Tensor) -> torch.Tensor:
    """The standard deviation (Bessel-corrected) of the elements of every process's ``tensor`` together, as a 0-d
    tensor on its device (no host synchronisation); ``tensor.std()`` outside a process group. The partial sums are
    combined in float64, as :class:`GlobalBatchNorm` combines its statistics."""
    if not active():
        return tensor.std()
    x = tensor.detach().double()
    totals = torch.stack([torch.full((), x.numel(), dtype=torch.float64, device=x.device), x.sum(),
                          x.pow(2).sum()]).to(_collective_device())
    dist.all_reduce(totals)
    n, total, squares = totals.to(tensor.device)
    return ((squares - total * total / n) / (n - 1)).clamp(min=0).sqrt().to(tensor.dtype)


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order."""
    if not active():
        return [value]
    values = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


# ---- BatchNorm over the global batch ---------------------------------------------------------------------------
class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (Ioffe & Szegedy 2015) whose training statistics are those of the global batch of all processes,
    on any device: data-parallel training then normalises exactly as one process with the whole batch would.

    Each process computes its rows' count, mean and variance; one differentiable all-reduce (its backward is an
    all-reduce of the gradients) combines them in float64 as Chan et al. (1979) combine partial variances. In eval
    mode, or outside a process group, it is plain BatchNorm. ``torch.nn.SyncBatchNorm`` does the same with
    CUDA-only kernels and is used on GPUs (:func:`convert_batchnorm`).
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {input.dim()}-D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        x = input.float()
        var_local, mean_local = torch.var_mean(x, dims, correction=0)
        n_local = torch.tensor([input.numel() / channels], dtype=torch.float64, device=input.device)
        mean_local, var_local = mean_local.double(), var_local.double()
        totals = _SumOverProcesses.apply(torch.cat([n_local * mean_local, n_local * (var_local + mean_local ** 2), n_local]))
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels:2 * channels] / n - mean ** 2).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.to(self.running_mean.dtype))
                unbiased = var * n / (n - 1).clamp(min=1)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased.to(self.running_var.dtype))
        shape = [1, channels] + [1] * (input.dim() - 2)
        y = (x - mean.float().view(shape)) * torch.rsqrt(var.float().view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


class _SumOverProcesses(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of every process's input is the sum of all output gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def convert_batchnorm(module: nn.Module, device: torch.device | str) -> nn.Module:
    """``module`` with every BatchNorm layer normalising over the global batch: ``torch.nn.SyncBatchNorm`` on CUDA,
    :class:`GlobalBatchNorm` elsewhere. Parameters and buffers are shared with the old layers (optimisers that hold
    them keep working), and state_dict keys do not change."""
    if torch.device(device).type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        if module.affine:
            converted.weight, converted.bias = module.weight, module.bias
        if module.track_running_stats:
            converted.running_mean, converted.running_var = module.running_mean, module.running_var
            converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child, device))
    return module


# ---- gradients and buffers of models trained without the DDP wrapper -------------------------------------------
def average_gradients_before_step(optimizer: torch.optim.Optimizer):
    """Make ``optimizer.step()`` first average its parameters' gradients over processes (one flat all-reduce):
    what DistributedDataParallel does, for loops that run several forward passes per step (GANs). Returns the hook
    handle (``.remove()`` undoes it)."""

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if not grads or not active():
            return
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= world_size()
        for grad, averaged in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            grad.copy_(averaged)

    return optimizer.register_step_pre_hook(hook)


def broadcast_buffers(modules: Iterable[nn.Module]) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics, ...) to every process, as DDP does at each forward."""
    if not active():
        return
    buffers = [b for module in modules for b in module.buffers()]
    for dtype in sorted({b.dtype for b in buffers}, key=str):
        group = [b for b in buffers if b.dtype == dtype]
        flat = torch._utils._flatten_dense_tensors(group)
        dist.broadcast(flat, src=0)
        for buffer, value in zip(group, torch._utils._unflatten_dense_tensors(flat, group)):
            buffer.copy_(value)
