"""``--device auto`` and ``--precision``: CUDA when present with bf16 where the GPU has it, else fp16 with a gradient
scaler; fp16 refused off CUDA; the fp16 training path (autocast + GradScaler) runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrgan.classify import TrainConfig, train_classifier
from cxrgan.cli import build_parser, train_config
from cxrgan.data import CXRDataset
from cxrgan.data.images import resize_stack
from cxrgan.device import resolve_amp, resolve_device
from cxrgan.errors import CxrganError


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine that reports a CUDA device (nothing is moved to it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return monkeypatch


@pytest.mark.parametrize("bf16_units, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_cuda_is_bf16_where_supported_else_fp16(fake_cuda, bf16_units, expected):
    fake_cuda.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16_units)
    assert resolve_device("auto").type == "cuda"
    assert resolve_amp("auto", "auto") == expected
    args = build_parser().parse_args(["compare", "data.npz", "--device", "auto"])
    config = train_config(args)
    assert (config.bf16, config.fp16) == (expected == "bf16", expected == "fp16")


def test_fp16_needs_cuda_and_cpu_auto_never_picks_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_amp("auto", "cpu") in ("bf16", "fp32")
    with pytest.raises(CxrganError, match="--precision fp16 needs a CUDA device"):
        resolve_amp("fp16", "cpu")
    with pytest.raises(CxrganError, match="CUDA is not available"):
        resolve_amp("auto", "cuda")


def test_fp16_training_path_with_a_gradient_scaler_runs(kermany_small):
    """The fp16 branch a GPU without bf16 takes (autocast to float16, scaled loss), here on the CPU at 32 px."""
    train = kermany_small.split("train")
    y = train.binary_targets()
    train = train.subset(np.sort(np.concatenate([np.flatnonzero(y == 0)[:8], np.flatnonzero(y == 1)[:8]])))
    val = kermany_small.split("val")
    small = [CXRDataset(resize_stack(d.images, 32), d.labels, d.label_names, d.meta, d.class_names) for d in (train, val)]
    config = TrainConfig(model="small-cnn", epochs=1, batch_size=8, fp16=True, device="cpu", progress=False)
    result = train_classifier(*small, config, seed=0)
    assert np.isfinite(result.history[0]["train_loss"]) and result.best_epoch == 1
