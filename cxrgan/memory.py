"""Peak device memory of a computation traced on ``meta`` tensors (shapes without values), so the memory of a
paper-size training step is known in seconds on any machine, without the memory it describes.

Method. :class:`PeakMemory` is a ``TorchDispatchMode``: it sees every ATen operation, forward, backward (autograd
runs CPU and meta backward passes on the calling thread) and optimiser, and counts the bytes of every storage an
operation returns from its creation until it is freed. A storage is freed when the last tensor, view or autograd
saved tensor holding it is gone; PyTorch keeps one Python object per live storage, so a weak reference to it fires
exactly then. The running sum of live bytes, plus what existed before (``hold``: parameters, buffers, optimiser
state), peaks where a real device's allocated memory peaks: ``torch.cuda.max_memory_allocated`` counts the same
storages, each rounded up to the caching allocator's 512-byte blocks (done here too).

Not counted: memory an operation uses inside itself (cuDNN workspaces, a CPU kernel's scratch buffers), the CUDA
context and the allocator's cached-but-free blocks (what ``nvidia-smi`` adds on top), and host memory.

Attention. On ``meta`` tensors ``scaled_dot_product_attention`` has no fused kernel to choose and falls back to its
math path, which materialises the (tokens x tokens) attention matrix; a CUDA device runs a flash or memory-efficient
kernel that keeps only the output and one log-sum-exp per row. :class:`PeakMemory` routes the call to PyTorch's
fused CPU flash kernel (which has meta kernels, forward and backward), whose memory is that of the CUDA kernels.
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

BLOCK_BYTES = 512  # the CUDA caching allocator rounds every allocation up to a multiple of this
GiB = 2 ** 30


class _FusedAttention(TorchFunctionMode):
    """``scaled_dot_product_attention`` on meta tensors through the fused flash kernel (see the module docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and args and args[0].is_meta:
            query, key, value = args[:3]
            options = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale"), args[3:]), **kwargs)
            if options.get("attn_mask") is None and not options.get("enable_gqa"):
                return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                    query, key, value, options.get("dropout_p", 0.0), options.get("is_causal", False),
                    scale=options.get("scale"))[0]
        return func(*args, **kwargs)


class PeakMemory(TorchDispatchMode):
    """Bytes of tensor storage alive at once while active (``current``), and their maximum (``peak``); only the
    storages of ``device`` (a device type) when given: a trace's host tensors (noise drawn on the CPU before it is
    copied over) are not device memory.

    Use on tensors of any device; on ``meta`` tensors it traces what a run would hold without holding it::

        with PeakMemory() as memory:
            memory.hold(model.parameters())
            loss = model(x).sum(); loss.backward(); optimizer.step()
        memory.peak  # bytes
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.device = None if device is None else torch.device(device).type  # count only this device's tensors
        self.current = 0
        self.peak = 0
        self._live: dict[int, int] = {}  # id of a live storage -> its (rounded) bytes
        self._refs: dict[int, weakref.ref] = {}
        self._attention = _FusedAttention()

    def __enter__(self) -> PeakMemory:
        self._attention.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._attention.__exit__(*exc)

    def hold(self, tensors: Any) -> None:
        """Count tensors that exist already (parameters, buffers, optimiser state), each storage once."""
        for tensor in tree_flatten(list(tensors) if not isinstance(tensors, (dict, list, tuple)) else tensors)[0]:
            if isinstance(tensor, torch.Tensor):
                self._count(tensor)

    def reset_peak(self) -> None:
        """Start a new peak from what is alive now."""
        self.peak = self.current

    def _count(self, tensor: torch.Tensor) -> None:
        if self.device is not None and tensor.device.type != self.device:
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._live:
            return
        size = math.ceil(storage.nbytes() / BLOCK_BYTES) * BLOCK_BYTES
        self._live[key] = size
        self._refs[key] = weakref.ref(storage, lambda _, key=key: self._free(key))
        self.current += size
        self.peak = max(self.peak, self.current)

    def _free(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._count(tensor)
        return out


def module_tensors(modules: Any) -> list[torch.Tensor]:
    """Every parameter and buffer of ``modules`` (a module, a ModuleDict, or a list of them)."""
    modules = [modules] if isinstance(modules, torch.nn.Module) else list(modules)
    return [t for module in modules for t in (*module.parameters(), *module.buffers())]


def gib(size: float) -> str:
    return f"{size / GiB:.1f} GiB"
