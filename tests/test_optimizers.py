"""The classifier's Adam: the same updates as torch's, on tensors in any memory layout."""

from __future__ import annotations

import torch

from cxrgan.classify.optimizers import MemoryOrderAdam, adam

CHANNELS_LAST = torch.channels_last


def test_memory_order_adam_matches_torch_fused_adam_bit_for_bit():
    # two channels-last convolution weights (as the classifiers train them; the second gets its gradients in plain
    # NCHW order), a matrix and a vector: every update and moment equals torch's, every parameter keeps its layout
    generator = torch.Generator().manual_seed(0)
    shapes = [(8, 4, 3, 3), (8, 4, 3, 3), (5, 7), (6,)]
    start = [torch.randn(shape, generator=generator) for shape in shapes]
    start[0], start[1] = start[0].contiguous(memory_format=CHANNELS_LAST), start[1].contiguous(memory_format=CHANNELS_LAST)
    grads = [[torch.randn(shape, generator=generator) for shape in shapes] for _ in range(3)]
    results = []
    for cls in (torch.optim.Adam, MemoryOrderAdam):
        params = [torch.nn.Parameter(p.clone(memory_format=torch.preserve_format)) for p in start]
        optimizer = cls(params, lr=1e-2, weight_decay=1e-4, fused=True)
        for step in grads:
            for k, (param, grad) in enumerate(zip(params, step)):
                param.grad = grad.contiguous(memory_format=CHANNELS_LAST) if k == 0 else grad.clone()
            optimizer.step()
        results.append((params, optimizer.state_dict()["state"]))
    (plain, plain_state), (ordered, ordered_state) = results
    for a, b, first in zip(plain, ordered, start):
        assert torch.equal(a, b) and b.stride() == first.stride()
    for key, moments in plain_state.items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(moments[name], ordered_state[key][name])
    assert isinstance(adam([torch.nn.Parameter(torch.zeros(2))], 1e-3, 0.0), MemoryOrderAdam)
