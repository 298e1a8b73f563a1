"""bf16 copies of the convolution and linear weights, kept by the optimiser for a CPU bf16 training step.

Under bf16 autocast every forward pass casts each fp32 weight to bf16, and the backward pass casts each bf16 weight
gradient back to fp32 for Adam: per ResNet-18 step on this project's 2-core Sapphire Rapids, 1.7 ms and 2.7 ms of
memory traffic beside Adam's own 5.5-6 ms. Here the optimiser keeps the bf16 copy instead. The training forward uses
it (``with optimizer.bf16_weights():``; autocast leaves a bf16 tensor as it is), its gradient stays bf16, and one
pass over each weight (``csrc/bf16_adam.cpp``, built once per CPU with torch's extension builder) reads that
gradient, updates the fp32 weight and Adam's moments with torch's fused Adam arithmetic and writes the new bf16 copy:
5.7-6.1 ms for what took 13.0-13.8 ms (the gradient casts, fused Adam and the weight casts of ResNet-18's 11.2 M
parameters, timed alone); the whole step 1.07-1.08x (``benchmarks/classifier.py --ablation``: "no bf16 copies").

The fp32 weights stay the model's parameters: state dict, checkpoints, the optimiser's state and evaluation are
unchanged. Each copy is the value autocast's cast would produce, and the update is torch's operation for operation,
so training gives bit-identical weights (``tests/test_bf16_weights.py``). A weight changed by anything else (a
checkpoint or the best weights loaded, a head replaced) is noticed by its version counter and copied again before the
next forward pass. Where the kernel cannot be built (no C++ compiler), or torch runs its scalar kernels rather than
its AVX2 / AVX-512 ones (whose arithmetic the kernel repeats), training takes autocast's casts, as before.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import platform
import sys
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from cxrgan.classify.optimizers import MemoryOrderAdam, adam

SOURCE = Path(__file__).with_name("csrc") / "bf16_adam.cpp"
# -ffp-contract=off: no fused multiply-add but the one the source asks for, as in torch's vectorised kernel;
# -march=native: the extension's name carries this CPU's instruction sets, so a shared cache never mixes CPUs
CFLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"]
ALIGNMENT = 16  # floats per cache line: torch's fused kernel takes its vectorised path on whole lines
VECTOR_CAPABILITIES = ("AVX2", "AVX512")  # torch's x86 kernel builds whose Adam the kernel matches bit for bit


@functools.cache
def kernel():
    """The compiled ``bf16_adam`` extension, or None where it cannot be built (said once on stderr)."""
    try:
        from torch.utils.cpp_extension import load

        return load(f"cxrgan_bf16_adam_{_cpu_key()}", [str(SOURCE)], extra_cflags=CFLAGS, extra_ldflags=["-fopenmp"])
    except Exception as error:  # no compiler, no headers, no ninja: the casts of autocast, as before
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        print(f"cxrgan: note: bf16 weight copies off, the kernel could not be built ({first_line})", file=sys.stderr)
        return None


def _cpu_key() -> str:
    """A short hash of this CPU's instruction sets (the kernel is built for them), torch and the build flags."""
    flags = ""
    with contextlib.suppress(OSError):
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    text = "|".join([platform.machine(), platform.processor(), flags, torch.__version__, *CFLAGS])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def copyable(module: nn.Module, name: str, parameter: nn.Parameter) -> bool:
    """Whether a parameter gets a bf16 copy: a trainable dense fp32 CPU weight or bias of a convolution or linear
    layer (what autocast casts), of whole cache lines (where torch's kernel is vectorised, so the numbers agree)."""
    return (isinstance(module, (nn.Conv2d, nn.Linear)) and parameter.requires_grad and parameter.is_cpu
            and parameter.dtype == torch.float32 and parameter.numel() % ALIGNMENT == 0
            and (parameter.is_contiguous() or parameter.dim() == 4 and parameter.is_contiguous(
                memory_format=torch.channels_last)))


class Bf16WeightAdam(MemoryOrderAdam):
    """torch's fused Adam (:class:`MemoryOrderAdam`: same hyper-parameters, state dict and arithmetic) that keeps a
    bf16 copy of ``model``'s convolution and linear weights among ``parameters``, used by the training forward pass
    inside :meth:`bf16_weights` and updated in the same pass as the weight (see the module docstring)."""

    def __init__(self, model: nn.Module, parameters, lr: float, weight_decay: float):
        super().__init__(parameters, lr=lr, weight_decay=weight_decay, fused=True)
        ours = {id(p) for group in self.param_groups for p in group["params"]}
        self._slots = [(module, name, p) for module in model.modules()
                       for name, p in module.named_parameters(recurse=False)
                       if id(p) in ours and copyable(module, name, p)]
        self._copies = {id(p): nn.Parameter(_bf16_like(p)) for _, _, p in self._slots}
        self._seen = {id(p): (p._version, p.data_ptr()) for _, _, p in self._slots}

    @contextlib.contextmanager
    def bf16_weights(self) -> Iterator[None]:
        """The model's copied weights replaced by their bf16 copies (for one training forward pass)."""
        self._refresh()
        for module, name, p in self._slots:
            module._parameters[name] = self._copies[id(p)]
        try:
            yield
        finally:
            for module, name, p in self._slots:
                module._parameters[name] = p

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for copy in self._copies.values():
            if set_to_none:
                copy.grad = None
            elif copy.grad is not None:
                copy.grad.zero_()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tensors: tuple[list, ...] = ([], [], [], [], [], [])
            for p in group["params"]:
                copy = self._copies.get(id(p))
                if copy is None or copy.grad is None:
                    continue
                state = self.state[p]
                if not state:  # as torch's Adam starts a fused parameter's state
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                grad = copy.grad if copy.grad.stride() == p.stride() else torch.empty_like(copy).copy_(copy.grad)
                for bucket, tensor in zip(tensors, (p, grad, state["exp_avg"], state["exp_avg_sq"], copy,
                                                    float(state["step"]))):
                    bucket.append(tensor)
            if tensors[0]:
                beta1, beta2 = group["betas"]
                kernel().adam_step(*tensors, float(group["lr"]), beta1, beta2, group["eps"], group["weight_decay"])
        super().step()  # every other parameter (its gradient is fp32); the copied ones have none
        for _, _, p in self._slots:
            self._seen[id(p)] = (p._version, p.data_ptr())
        return loss

    def _refresh(self) -> None:
        """Copy again every weight changed outside :meth:`step` since its copy was made."""
        for _, _, p in self._slots:
            if self._seen[id(p)] != (p._version, p.data_ptr()):
                with torch.no_grad():
                    self._copies[id(p)].copy_(p)
                self._seen[id(p)] = (p._version, p.data_ptr())


def _bf16_like(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` in bf16 with its very strides: ``.to()`` may re-stride a weight with one input channel (the stem's),
    and oneDNN then picks another (NCHW) kernel for it."""
    return torch.empty_strided(weight.size(), weight.stride(), dtype=torch.bfloat16).copy_(weight.detach())


def training_adam(model: nn.Module, parameters, lr: float, weight_decay: float, device: torch.device, bf16: bool,
                  fp16: bool, world: int) -> torch.optim.Adam:
    """The training loop's Adam over ``parameters`` of ``model``: :class:`Bf16WeightAdam` for bf16 autocast on the CPU
    in one process (DistributedDataParallel reduces the parameters' own gradients) where the kernel builds, else
    :func:`cxrgan.classify.optimizers.adam`."""
    if device.type == "cpu" and bf16 and not fp16 and world == 1 and available():
        return Bf16WeightAdam(model, parameters, lr, weight_decay)
    return adam(parameters, lr, weight_decay)


def available() -> bool:
    """Whether this CPU keeps the copies: torch runs its vectorised x86 kernels here (AVX2 or AVX-512, the builds
    whose arithmetic the kernel repeats: bit-identical under both, measured by forcing ``ATEN_CPU_CAPABILITY``; not
    under torch's scalar fallback) and the kernel builds."""
    return torch.backends.cpu.get_cpu_capability() in VECTOR_CAPABILITIES and kernel() is not None
