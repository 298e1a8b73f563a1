"""``--device auto`` and ``--precision``: CUDA when present with bf16 where the GPU has bf16 units, else fp16 with a
gradient scaler; fp16 refused off CUDA; the fp16 training path (autocast + GradScaler) runs; the generators' and
recipes' bf16 presets hold only where the device runs bf16 natively; seeding leaves the CUDA RNGs alone; the CUDA
determinism settings."""

from __future__ import annotations

import argparse
import os
import types

import numpy as np
import pytest
import torch

from cxrgan.classify import TrainConfig, train_classifier
from cxrgan.classify.decoupled import reset_head
from cxrgan.classify.networks import build_classifier
from cxrgan.cli import build_parser
from cxrgan.cli.flags import classifier, train_config
from cxrgan.data import CXRDataset
from cxrgan.data.images import resize_stack
from cxrgan.device import CUBLAS_WORKSPACE, configure_determinism, resolve_amp, resolve_device, seeded
from cxrgan.errors import CxrganError
from cxrgan.generators import GENERATORS, DCGAN, GeneratorSettings, GeneratorSpec
from cxrgan.generators.diffusion_networks import build_autoencoder, build_denoiser
from cxrgan.recipes.dcgan_alpha import CPU_CLASSIFIER, FULL_CLASSIFIER

CHECKPOINTS = {"checkpoint_seconds": TrainConfig.checkpoint_seconds, "checkpoint_epochs": TrainConfig.checkpoint_epochs}


@pytest.fixture
def fake_cuda(monkeypatch):
    """A machine that reports a CUDA device (nothing is moved to it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return monkeypatch


def gpu_of_capability(monkeypatch, major: int, minor: int = 0) -> None:
    """A CUDA GPU of compute capability ``major.minor`` as PyTorch sees it, mocked where ``torch.cuda`` reads it: the
    device properties, and the emulation probe (creating a bf16 tensor), which succeeds on every GPU since CUDA 10,
    so ``torch.cuda.is_bf16_supported()`` with its default says yes on a V100 or T4 too."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: types.SimpleNamespace(major=major, minor=minor, name=f"sm{major}{minor}"))
    monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)


@pytest.mark.parametrize("capability, expected", [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"),
                                                  ((9, 0), "bf16")])
def test_auto_precision_follows_the_gpus_compute_capability(monkeypatch, capability, expected):
    """V100 (7.0) and T4 (7.5): fp16 with a gradient scaler; A100 (8.0), H100 (9.0): bf16. Everywhere a choice is made:
    --precision auto, a recipe's classifier, the generators' presets (fp32 where bf16 is not native)."""
    gpu_of_capability(monkeypatch, *capability)
    assert resolve_device("auto").type == "cuda"
    assert resolve_amp("auto", "auto") == expected
    config = train_config(build_parser().parse_args(["compare", "data.npz", "--device", "auto"]))
    assert (config.bf16, config.fp16) == (expected == "bf16", expected == "fp16")
    args = argparse.Namespace(device="cuda", full=False, data_workers=0, epochs=None, **CHECKPOINTS)
    recipe = classifier(args, CPU_CLASSIFIER, FULL_CLASSIFIER)
    assert (recipe.bf16, recipe.fp16) == (expected == "bf16", expected == "fp16")
    for name, cls in GENERATORS.items():
        if cls.cpu_preset.get("bf16"):
            spec = GeneratorSpec.resolve(name, GeneratorSettings()).on("cuda")
            assert spec.config.bf16 == (expected == "bf16"), name
    assert DCGAN(DCGAN.resolve_config(GeneratorSettings()), device="cuda").config.bf16 == (expected == "bf16")


def test_cpu_presets_keep_bf16_only_where_the_cpu_runs_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # an AVX2-only CPU
    assert resolve_amp("auto", "cpu") == "fp32"
    args = argparse.Namespace(device="cpu", full=False, data_workers=0, epochs=None, **CHECKPOINTS)
    assert not classifier(args, CPU_CLASSIFIER, FULL_CLASSIFIER).bf16
    assert not DCGAN(DCGAN.resolve_config(GeneratorSettings()), device="cpu").config.bf16
    with pytest.raises(CxrganError, match="--bf16: cpu does not run bf16 natively"):
        build_parser().parse_args(["train-gan", "--method", "dcgan", "--data", "x.npz", "--bf16", "--device",
                                   "cpu"]).run(build_parser().parse_args(["train-gan", "--method", "dcgan", "--data",
                                                                          "x.npz", "--bf16", "--device", "cpu"]))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)  # AVX512-BF16 / AMX
    assert classifier(args, CPU_CLASSIFIER, FULL_CLASSIFIER).bf16
    assert DCGAN(DCGAN.resolve_config(GeneratorSettings()), device="cpu").config.bf16


def test_network_seeding_leaves_the_cuda_generators_alone(monkeypatch, fake_cuda):
    """Initial weights are drawn from the CPU RNG seeded inside ``seeded``; reseeding the CUDA RNGs there (what
    ``torch.manual_seed`` does) would leave them reseeded, since only the CPU state is forked and restored."""
    def reseeded(seed):
        raise AssertionError("a CUDA generator was reseeded")

    fake_cuda.setattr(torch.cuda, "manual_seed_all", reseeded)
    fake_cuda.setattr(torch.cuda, "_is_in_bad_fork", lambda: False)
    before = torch.random.get_rng_state()
    with seeded(3):
        first = torch.rand(4)
    with seeded(3):
        assert torch.equal(torch.rand(4), first)
    build_autoencoder((4, 8), 2, 1, seed=1)
    build_denoiser(2, 8, (8, 8), (False, True), 1, 8, 0, seed=2)
    with seeded(0):  # as train_classifier builds it
        model = build_classifier("small-cnn", 1)
    reset_head(model, torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)


def test_determinism_settings_on_cuda_only(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_determinism(torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.utils.deterministic.fill_uninitialized_memory)
    try:
        configure_determinism(torch.device("cuda"))
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    finally:
        torch.use_deterministic_algorithms(False)
        (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
         torch.utils.deterministic.fill_uninitialized_memory) = saved


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
    for module in (compare, dcgan_alpha):
        fake_cuda.setattr(module, "generator_seconds", lambda spec, rows, device, **kw: probed.append(device) or 1.0)
        fake_cuda.setattr(module, "training_seconds", lambda *args, **kwargs: 1.0)
    fake_cuda.setattr(compare, "sample_seconds", lambda spec, rows, device: probed.append(device) or 1e-3)
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


def test_a_named_gpu_is_kept_by_every_worker_and_refused_under_torchrun(fake_cuda):
    """--workers: each worker takes one visible GPU in turn, unless --device names one (cuda:N), which every worker
    then uses. torchrun gives each process the GPU of its LOCAL_RANK, so cuda:N there is refused in one line."""
    from cxrgan import distributed
    from cxrgan.errors import RankAgreedError
    from cxrgan.engine.workers import worker_environment

    base = {"CUDA_VISIBLE_DEVICES": "0,1,2"}
    assert [worker_environment(i, 4, base)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "1", "2", "0"]
    assert [worker_environment(i, 4, base, device="cuda:1")["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0,1,2"] * 4
    fake_cuda.setenv("WORLD_SIZE", "2")
    fake_cuda.setenv("LOCAL_RANK", "0")
    with pytest.raises(RankAgreedError, match="--device cuda:1: under torchrun every process uses the GPU of its"):
        distributed.setup("cuda:1")
