"""The classifier's optimiser: torch's Adam, fused where this torch has the kernel, handed every tensor in its
memory order."""

from __future__ import annotations

import torch


class MemoryOrderAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (Kingma & Ba 2015; same hyper-parameters, state dict and arithmetic) that hands each
    parameter, its gradient and its moments to the update as views in their memory order.

    Adam is element-wise, so the order in which it visits elements does not matter, but torch's fused CPU kernel
    works on contiguous tensors and copies any other one (and back): with the channels-last convolution weights of
    the classifiers that was 16 clones of ResNet-18's 3x3 weights per step, about 40 ms of a 1-thread bf16 step of
    about 500 ms on this project's CPU. Viewed in memory order they are contiguous and nothing is copied. A tensor
    whose strides differ from its parameter's (a gradient in another layout) is still copied by the kernel."""

    def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps):
        has_complex = super()._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
        orders = [_memory_order(p) for p in params]
        for tensors in (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs):
            if len(tensors) == len(orders):
                tensors[:] = [t.permute(order) if order else t for t, order in zip(tensors, orders)]
        return has_complex


def _memory_order(tensor: torch.Tensor) -> tuple[int, ...] | None:
    """The permutation of ``tensor``'s dimensions that makes it contiguous, or None (already contiguous, or none
    does: not dense)."""
    if tensor.is_contiguous() or tensor.dim() < 2:
        return None
    order = tuple(sorted(range(tensor.dim()), key=lambda d: (-tensor.stride(d), -tensor.size(d))))
    return order if tensor.permute(order).is_contiguous() else None


def adam(parameters, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with torch's fused kernel (one pass over each tensor per step) where this torch has it for the
    parameters' device (CPU since torch 2.4, CUDA), in memory order (:class:`MemoryOrderAdam`); else torch's default
    implementation (on the CPU, one element-wise operation after another). ``python benchmarks/classifier.py
    --ablation`` measures the gain."""
    parameters = list(parameters)
    try:
        return MemoryOrderAdam(parameters, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):  # no fused kernel for this device or dtype in this torch
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
