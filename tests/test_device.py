"""``--device auto`` and ``--precision``: CUDA when present with bf16 where the GPU has it, else fp16 with a gradient
scaler; fp16 refused off CUDA; the fp16 training path (autocast + GradScaler) runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrgan.classify import TrainConfig, train_classifier
from cxrgan.cli import build_parser
from cxrgan.cli.flags import train_config
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


def test_auto_is_never_silently_the_cpu_for_a_recipe_s_other_models(fake_cuda, kermany_small, tmp_path):
    """With --device auto on a machine with CUDA, every model a recipe trains besides its classifiers -- the
    generators of its balancers, the TSTR and audit classifiers, the dry run's probes -- is placed on CUDA (nothing
    runs there: the plan and the estimate's bookkeeping only)."""
    from cxrgan.data import save_npz
    from cxrgan.engine.spec import RunSpec
    from cxrgan.evaluate.audit import AuditConfig
    from cxrgan.recipes import compare, dcgan_alpha
    from cxrgan.recipes.compare import CompareConfig
    from cxrgan.recipes.dcgan_alpha import CPU_CLASSIFIER, DcganAlpha, DcganAlphaConfig

    assert AuditConfig().device == "auto" and resolve_device(AuditConfig().device).type == "cuda"
    data = str(save_npz(kermany_small, tmp_path / "small.npz"))
    spec = RunSpec(data, seeds=1, device="auto")
    recipe = DcganAlpha(DcganAlphaConfig(CompareConfig(spec, methods=("none", "dcgan"), imbalance=(2, 1),
                                                       train=CPU_CLASSIFIER)))
    plan = recipe.plan()
    assert spec.torch_device().type == "cuda"
    assert recipe.balancer("dcgan", 0).device == "cuda"  # the generator a balancer trains
    for tstr in (True, False):
        assert resolve_device(recipe.audit_config(tstr).device).type == "cuda"  # TSTR and audit classifiers
    probed = []
    fake_cuda.setattr(compare, "generator_seconds", lambda spec, rows, device: probed.append(device) or 1.0)
    fake_cuda.setattr(dcgan_alpha, "generator_seconds", lambda spec, rows, device: probed.append(device) or 1.0)
    for module in (compare, dcgan_alpha):
        fake_cuda.setattr(module, "training_seconds", lambda *args: 1.0)
    recipe.estimate(plan)
    assert probed and set(probed) == {"cuda"}  # the dry run probes the generators where the run trains them


def test_no_module_maps_auto_to_the_cpu_by_hand():
    """The old bug's shape (``device if device != "auto" else "cpu"``) appears nowhere in the package."""
    import re
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "cxrgan"
    pattern = re.compile(r"""!=\s*["']auto["']\s*else\s*["']cpu["']""")
    found = [str(p) for p in package.rglob("*.py") if pattern.search(p.read_text(encoding="utf-8"))]
    assert not found, found
