"""The optimiser's bf16 weight copies: training takes the same numbers as autocast's casts with torch's fused Adam,
bit for bit, and falls back to them where the copies cannot be kept."""

from __future__ import annotations

import contextlib

import pytest
import torch

import cxrgan.classify.train as train_module
from cxrgan.classify import TrainConfig, train_classifier
from cxrgan.classify import bf16_weights
from cxrgan.classify.bf16_weights import Bf16WeightAdam, training_adam
from cxrgan.classify.networks import build_classifier
from cxrgan.classify.optimizers import MemoryOrderAdam, adam

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def kernel():
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in bf16_weights.VECTOR_CAPABILITIES:
        pytest.skip(f"torch runs its {capability} kernels here: training keeps no bf16 copies (fused Adam as before)")
    built = bf16_weights.kernel()
    if built is None:  # said on stderr by kernel(); CI installs the compiler (.ci/run)
        pytest.skip("the bf16 Adam kernel could not be built here (no C++ compiler or Python headers)")
    return built


def _resnet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier("resnet18", 1).to(memory_format=torch.channels_last).train()


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_training_with_copies_is_bit_identical_to_autocast_and_fused_adam(kernel, kermany_small, monkeypatch,
                                                                          weight_decay):
    train, val = kermany_small.split("train"), kermany_small.split("val")
    config = TrainConfig(model="resnet18", epochs=2, batch_size=32, lr=1e-3, weight_decay=weight_decay, bf16=True,
                         augment="flip", progress=False, device="cpu")
    made = []

    def recorded(*args):
        made.append(training_adam(*args))
        return made[-1]

    monkeypatch.setattr(train_module, "training_adam", recorded)
    with_copies = train_classifier(train, val, config, seed=3)
    monkeypatch.setattr(train_module, "training_adam", lambda model, parameters, lr, decay, *rest: adam(
        parameters, lr, decay))
    without = train_classifier(train, val, config, seed=3)
    convolutions = [m for m in with_copies.model.modules() if isinstance(m, torch.nn.Conv2d)]
    expected = len(convolutions) + sum(m.bias is not None for m in convolutions) + 1  # and the head's weight
    assert isinstance(made[0], Bf16WeightAdam) and len(made[0]._slots) == expected == 24
    assert [r["val_auc"] for r in with_copies.history] == [r["val_auc"] for r in without.history]
    ours, theirs = with_copies.model.state_dict(), without.model.state_dict()
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def test_moments_state_dict_and_copies_match_torch_step_by_step(kernel):
    plain, kept = _resnet(), _resnet()
    reference, optimizer = adam(plain.parameters(), 1e-3, 1e-4), Bf16WeightAdam(kept, kept.parameters(), 1e-3, 1e-4)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 1, 64, 64, generator=generator).contiguous(memory_format=torch.channels_last)
        for model, opt in ((plain, reference), (kept, optimizer)):
            opt.zero_grad(set_to_none=True)
            weights = optimizer.bf16_weights() if opt is optimizer else contextlib.nullcontext()
            with torch.autocast("cpu", dtype=torch.bfloat16), weights:
                out = model(x)
            out.float().square().mean().backward()
            opt.step()
    for (name, p), q in zip(plain.named_parameters(), kept.parameters()):
        assert torch.equal(p, q), name
        copy_of = optimizer._copies.get(id(q))
        assert copy_of is None or (torch.equal(copy_of, q.to(torch.bfloat16)) and copy_of.stride() == q.stride())
    ours, theirs = optimizer.state_dict(), reference.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    for key, moments in theirs["state"].items():
        assert moments.keys() == ours["state"][key].keys()
        assert all(torch.equal(value, ours["state"][key][name]) for name, value in moments.items())


def test_copies_follow_weights_loaded_from_elsewhere(kernel):
    model, other = _resnet(0), _resnet(1)
    optimizer = Bf16WeightAdam(model, model.parameters(), 1e-3, 0.0)
    model.load_state_dict(other.state_dict())  # a checkpoint or the best weights, loaded between steps
    x = torch.randn(4, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = other(x)
        with optimizer.bf16_weights():
            got = model(x)
    assert torch.equal(got, expected)
    assert all(isinstance(p, torch.nn.Parameter) and p.dtype == torch.float32 for p in model.parameters())


def test_without_the_kernel_or_off_the_cpu_bf16_path_training_takes_fused_adam(monkeypatch):
    model = _resnet()
    cases = [dict(device=CPU, bf16=False, fp16=False, world=1), dict(device=CPU, bf16=True, fp16=False, world=2),
             dict(device=torch.device("cuda"), bf16=True, fp16=False, world=1)]
    for case in cases:
        optimizer = training_adam(model, model.parameters(), 1e-3, 0.0, **case)
        assert type(optimizer) is MemoryOrderAdam, case
    monkeypatch.setattr(bf16_weights, "kernel", lambda: None)
    optimizer = training_adam(model, model.parameters(), 1e-3, 0.0, CPU, True, False, 1)
    assert type(optimizer) is MemoryOrderAdam
    monkeypatch.setattr(bf16_weights, "kernel", lambda: object())  # built, but torch's scalar kernels run here
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert not bf16_weights.available()


def test_a_kernel_that_cannot_be_built_says_so_once(monkeypatch, capsys):
    monkeypatch.setattr(bf16_weights, "SOURCE", bf16_weights.SOURCE.with_name("missing.cpp"))
    monkeypatch.setattr(bf16_weights, "_cpu_key", lambda: "test-missing-source")
    bf16_weights.kernel.cache_clear()
    try:
        assert bf16_weights.kernel() is None and bf16_weights.kernel() is None
    finally:
        bf16_weights.kernel.cache_clear()
    err = capsys.readouterr().err
    assert err.count("cxrgan: note: bf16 weight copies off") == 1


def test_only_dense_cache_line_sized_convolution_and_linear_weights_are_copied():
    conv, linear, norm = torch.nn.Conv2d(3, 16, 3), torch.nn.Linear(5, 1), torch.nn.BatchNorm2d(4)
    assert bf16_weights.copyable(conv, "weight", conv.weight)  # 432 values
    assert bf16_weights.copyable(conv, "bias", conv.bias)  # 16
    assert not bf16_weights.copyable(linear, "weight", linear.weight)  # 5 values: not a whole cache line
    assert not bf16_weights.copyable(norm, "weight", norm.weight)  # BatchNorm runs its parameters in fp32
    conv.weight.requires_grad_(False)  # frozen (cRT's backbone): no gradient, no copy
    assert not bf16_weights.copyable(conv, "weight", conv.weight)
