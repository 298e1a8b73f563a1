"""Convolutions with a small output map computed on the CPU partly as matrix products over the whole batch, where
oneDNN's direct convolution is slowest.

oneDNN's CPU convolutions put the positions of an output row into the rows of their matrix kernels, so a 2x2 or
4x4 map fills 2 or 4 of the 16 rows of an AMX tile or an AVX-512 register block. A ResNet-18 at 64 px ends in such
maps, and there the convolutions of its last two stages took most of a bf16 training step on this project's 2-core
Sapphire Rapids; the weight gradient was the worst part. Gathering the patches (im2col) and multiplying puts the
batch into the rows instead:

* output maps of at most ``MATMUL_POSITIONS`` positions: the whole convolution is one (N oh ow, C kh kw) x
  (C kh kw, O) product; its input gradient is the patches' gradient added back slice by slice (kh x kw additions
  into an fp32 map), which took half the time of autograd's two generic unfold backward passes (whole ResNet-18 bf16
  step with 2 threads: 1.68x -> 1.85-2.00x over main's step across runs, 1.91x on a quiet Sapphire Rapids with AMX);
* at most ``WEIGHT_GRAD_POSITIONS``: oneDNN computes the output and the input gradient, and the weight gradient is
  one (O, N oh ow) x (N oh ow, C kh kw) product.

Measured per layer, forward and backward, one thread (``benchmarks/classifier.py`` measures the whole step): at 2x2
2.7-3.6x faster with AMX bf16, 1.2-1.4x with AVX512-BF16 only, 2.1-5.2x in fp32 with AVX-512 or AVX2 (oneDNN and MKL
limited to those instruction sets); the split form at 4x4 1.8-3.8x with bf16 (AMX or AVX512-BF16) and 1.05-1.2x in
fp32. Larger maps are left alone (the whole product loses from 4x4 on, the split form from 8x8), and so are CUDA
devices (cuDNN).

The rule is by device and map size, not by instruction set: on the CPU the matrix forms win with AMX, with
AVX512-BF16 alone and in fp32 on AVX2, so a CPU without AMX takes them too. Whole ResNet-18 bf16 / fp32 training
step with fused Adam, over main's step (``benchmarks/classifier.py --ablation``, 1 thread, oneDNN limited with
``ONEDNN_MAX_CPU_ISA`` on a Sapphire Rapids): the small maps alone 1.70x with AMX, 1.06x with AVX512-BF16 only,
1.29x in fp32 with AVX2 only. Same arithmetic, another summation order: results match the direct convolution to rounding and
are as deterministic (fixed matrix kernels for a given shape and thread count).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MATMUL_POSITIONS = 4  # output positions (height x width) up to which a CPU convolution is one matrix product
WEIGHT_GRAD_POSITIONS = 16  # ... up to which its weight gradient is one matrix product (oneDNN for the rest)


class SmallMapConv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state dict) computed with matrix products when its output map is small
    and its input is on the CPU (see the module docstring); otherwise the usual convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = self._output_positions(x)
        if positions > WEIGHT_GRAD_POSITIONS:
            return super().forward(x)
        form = _ConvByMatmul if positions <= MATMUL_POSITIONS else _WeightGradByMatmul
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):  # cast as autocast would for a convolution, then run as is
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
            with torch.autocast(x.device.type, enabled=False):
                return form.apply(x, weight, bias, self.stride, self.padding)
        return form.apply(x, weight, bias, self.stride, self.padding)

    def _output_positions(self, x: torch.Tensor) -> float:
        """oh x ow where a matrix-product form applies, else infinity."""
        if x.device.type != "cpu" or x.dim() != 4 or self.groups != 1 or self.padding_mode != "zeros":
            return float("inf")
        if isinstance(self.padding, str) or self.dilation != (1, 1):
            return float("inf")
        oh, ow = _output_size(x, self.weight, self.stride, self.padding)
        return oh * ow


class _ConvByMatmul(torch.autograd.Function):
    """The whole convolution as one (N oh ow, C kh kw) x (C kh kw, O) product; the input gradient gathered back from
    the patches' gradient by kh x kw slice additions into an fp32 map (autograd through the patch views took twice as
    long: two generic unfold backward passes and their copies)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        n = x.shape[0]
        oh, ow = _output_size(x, weight, stride, padding)
        columns, matrix = _patches(x, weight, stride, padding)
        columns = columns.contiguous()
        ctx.save_for_backward(columns, matrix)
        ctx.input_shape, ctx.weight_shape, ctx.weight_contiguous = x.shape, weight.shape, weight.is_contiguous()
        ctx.stride, ctx.padding, ctx.with_bias, ctx.output_size = stride, padding, bias is not None, (oh, ow)
        out = F.linear(columns, matrix, bias)  # (N oh ow, O): an (N, O, oh, ow) map stored channels-last
        return out.view(n, oh, ow, weight.shape[0]).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad):
        columns, matrix = ctx.saved_tensors
        rows = grad.permute(0, 2, 3, 1).reshape(-1, matrix.shape[0])  # (N oh ow, O)
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = _gather_patch_gradient(rows @ matrix, ctx).to(grad.dtype)
        if ctx.needs_input_grad[1]:
            grad_weight = _as_weight(rows.t() @ columns, ctx.weight_shape, ctx.weight_contiguous)
        if ctx.with_bias and ctx.needs_input_grad[2]:
            grad_bias = rows.sum(0)
        return grad_input, grad_weight, grad_bias, None, None


def _gather_patch_gradient(patch_grad: torch.Tensor, ctx) -> torch.Tensor:
    """(N oh ow, C kh kw) patch gradients (in :func:`_patches`' order) -> the (N, C, H, W) input gradient, stored
    channels-last and summed in fp32 (in bf16 the sums of up to kh x kw patch gradients lost a third more precision
    than oneDNN's fp32 accumulation)."""
    n, channels, height, width = ctx.input_shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow) = ctx.weight_shape[2:], ctx.stride, ctx.padding, ctx.output_size
    patch_grad = patch_grad.float()
    if ctx.weight_contiguous:  # (C, kh, kw) order
        patch_grad = patch_grad.view(n, oh, ow, channels, kh, kw).permute(0, 1, 2, 4, 5, 3)
    else:  # (kh, kw, C) order
        patch_grad = patch_grad.view(n, oh, ow, kh, kw, channels)
    padded = patch_grad.new_zeros(n, height + 2 * ph, width + 2 * pw, channels)
    for i in range(kh):
        for j in range(kw):
            padded[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw] += patch_grad[:, :, :, i, j]
    return padded[:, ph:ph + height, pw:pw + width].permute(0, 3, 1, 2)


class _WeightGradByMatmul(torch.autograd.Function):
    """oneDNN's convolution and input gradient; the weight gradient as the product of the output gradient and the
    patches."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.with_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = torch.ops.aten.convolution_backward(
                grad, x, weight, None, list(ctx.stride), list(ctx.padding), [1, 1], False, [0, 0], 1,
                [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            columns, _ = _patches(x, weight, ctx.stride, ctx.padding)
            grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, weight.shape[0])  # (N oh ow, O)
            grad_weight = _as_weight(grad_rows.t() @ columns, weight.shape, weight.is_contiguous())
        if ctx.with_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum((0, 2, 3))
        return grad_input, grad_weight, grad_bias, None, None


def _output_size(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    return (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1


def _patches(x: torch.Tensor, weight: torch.Tensor, stride, padding) -> tuple[torch.Tensor, torch.Tensor]:
    """The (N oh ow, C kh kw) patches of ``x`` and ``weight`` as an (O, C kh kw) view, both in the weight's memory
    order: (C, kh, kw) for contiguous weights, (kh, kw, C) for channels-last ones (no copy of the weights)."""
    n, channels = x.shape[:2]
    (kh, kw), (sh, sw), (ph, pw) = weight.shape[2:], stride, padding
    oh, ow = _output_size(x, weight, stride, padding)
    padded = F.pad(x, (pw, pw, ph, ph)) if ph or pw else x
    patches = padded.permute(0, 2, 3, 1).unfold(1, kh, sh).unfold(2, kw, sw)  # (N, oh, ow, C, kh, kw) views
    if weight.is_contiguous():
        return patches.reshape(n * oh * ow, channels * kh * kw), weight.reshape(weight.shape[0], -1)
    return (patches.permute(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * channels),
            weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1))


def _as_weight(rows: torch.Tensor, shape: torch.Size, contiguous: bool) -> torch.Tensor:
    """(O, C kh kw) rows in the order :func:`_patches` used -> a weight-shaped tensor, contiguous or channels-last
    like the weight."""
    out_channels, channels, kh, kw = shape
    if contiguous:
        return rows.view(out_channels, channels, kh, kw)
    return rows.view(out_channels, kh, kw, channels).permute(0, 3, 1, 2)


def use_small_map_convolutions(module: nn.Module) -> nn.Module:
    """Turn every plain ``nn.Conv2d`` of ``module`` into a :class:`SmallMapConv2d` in place (same parameters, same
    state dict, no random draw) and return ``module``."""
    for layer in module.modules():
        if type(layer) is nn.Conv2d:
            layer.__class__ = SmallMapConv2d
    return module
