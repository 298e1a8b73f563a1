"""The first run on a GPU: what the CPU suite cannot check. Skipped without CUDA; about 3 minutes on one GPU.

    python -m pytest -q -s tests/test_cuda.py

``-s`` prints what it measured (precision chosen, resume differences, peak memory traced and measured); those lines
go in the README beside the CPU numbers. With two or more GPUs it also runs a tiny data-parallel compare and its dry
run under torchrun (NCCL).

Tolerances. Every run sets the CUDA determinism flags the command line sets (``configure_determinism``). Kernels with
a deterministic CUDA implementation then repeat bit for bit, so a resumed DCGAN-family run equals the uninterrupted
one exactly. Kernels without one keep atomic additions, whose order varies from run to run (PyTorch warns about
each once): the backward passes of ``ReflectionPad2d`` (CycleGAN), ``AdaptiveAvgPool2d`` (FastGAN's gate, the
classifiers' global pooling), nearest-neighbour upsampling (MONAI's UNet and decoder) and memory-efficient attention
(the latent diffusion UNet). Those runs agree to 1e-3 in every weight (a few Adam steps at lr 2e-4 move a weight by
at most 1e-3 in all, so a wrong resume, another batch or noise order, shows far beyond it). The traced peak memory
(``cxrgan.generators.memory``) must lie within 25 % of ``torch.cuda.max_memory_allocated``: the trace leaves out
cuDNN's workspaces and the allocator's rounding beyond 512 bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: these tests run on a GPU")

from cxrgan.classify import TrainConfig, predict, train_classifier  # noqa: E402
from cxrgan.classify.memory import classifier_memory  # noqa: E402
from cxrgan.classify.networks import build_classifier  # noqa: E402
from cxrgan.cli import main  # noqa: E402
from cxrgan.data import CXRDataset, load_npz, save_npz  # noqa: E402
from cxrgan.data.images import resize_stack  # noqa: E402
from cxrgan.device import bf16_supported, configure_determinism, resolve_amp, resolve_device  # noqa: E402
from cxrgan.generators import GENERATORS, GeneratorSettings, GeneratorSpec  # noqa: E402
from cxrgan.generators.memory import traced_memory  # noqa: E402
from cxrgan.generators.trainable import dataset_facts  # noqa: E402
from cxrgan.generators.training import Trainer  # noqa: E402
from cxrgan.recipes import cyclegan_complement, dcgan_alpha  # noqa: E402
from generator_contract import CONTRACT_CASES  # noqa: E402

GiB = 2 ** 30
EXACT = {"dcgan", "cdcgan", "cgan-labelvec"}  # deterministic CUDA kernels only (see the module docstring)


@pytest.fixture(scope="module", autouse=True)
def deterministic():
    configure_determinism(torch.device("cuda"))


def say(text: str) -> None:
    print(f"\n[cuda] {text}")


def test_precision_auto_picks_for_this_gpu():
    properties = torch.cuda.get_device_properties(0)
    chosen = resolve_amp("auto", "auto")
    say(f"{properties.name}, compute capability {properties.major}.{properties.minor}, "
        f"{properties.total_memory / GiB:.1f} GiB: --precision auto = {chosen}")
    assert resolve_device("auto").type == "cuda"
    assert chosen == ("bf16" if properties.major >= 8 else "fp16") == ("bf16" if bf16_supported("cuda") else "fp16")


@pytest.fixture(scope="module")
def mapped_file(kermany_small, tmp_path_factory) -> Path:
    return save_npz(kermany_small, tmp_path_factory.mktemp("cuda") / "kermany_small.npz")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_classifier_epoch_with_workers_resumed_on_the_gpu_and_loaded_on_the_cpu(precision, mapped_file, tmp_path):
    if precision == "bf16" and not bf16_supported("cuda"):
        pytest.skip("this GPU has no native bf16")
    data = load_npz(mapped_file)
    train, val = data.split("train"), data.split("val")
    assert isinstance(train.images, np.memmap)  # read lazily by the two worker processes
    config = TrainConfig(model="resnet18", epochs=1, batch_size=32, lr=1e-3, device="cuda", data_workers=2,
                         bf16=precision == "bf16", fp16=precision == "fp16", progress=False)
    checkpoint = tmp_path / "classifier.pt"
    first = train_classifier(train, val, config, seed=0, checkpoint_path=checkpoint)
    assert next(first.model.parameters()).is_cuda and np.isfinite(first.history[0]["train_loss"])
    two = dataclasses.replace(config, epochs=2)
    resumed = train_classifier(train, val, two, seed=0, checkpoint_path=checkpoint, resume=True)
    straight = train_classifier(train, val, two, seed=0)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    loss_gap = abs(resumed.history[1]["train_loss"] - straight.history[1]["train_loss"])
    say(f"classifier {precision}, 2 data workers: {first.images_per_second:.0f} images/s; resumed vs uninterrupted "
        f"epoch-2 loss differs by {loss_gap:.2e}")
    assert loss_gap < 1e-2
    assert np.abs(predict(resumed.model, val, "cuda", 64, config.bf16, fp16=config.fp16)
                  - predict(straight.model, val, "cuda", 64, config.bf16, fp16=config.fp16)).max() < 0.05
    # the checkpoint written on the GPU loads on a CPU and scores as the GPU does (both in fp32)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    scores = {}
    for device in ("cuda", "cpu"):
        model = build_classifier("resnet18", 1).to(device, memory_format=torch.channels_last)
        model.load_state_dict(state)
        scores[device] = predict(model.eval(), val, device, 64)
    assert np.abs(scores["cuda"] - scores["cpu"]).max() < 1e-3


def _weights(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {f"{group}.{net}.{k}": v.float().cpu() for group in ("networks", "ema") for net, tensors in
            (state[group] or {}).items() for k, v in tensors.items() if v.is_floating_point()}


@pytest.mark.parametrize("name", sorted(CONTRACT_CASES))
def test_each_generator_trains_samples_and_resumes_on_the_gpu(name, kermany_small, nih_path, tmp_path):
    from generator_contract import small_train_split

    config, labels, data = CONTRACT_CASES[name]
    rows = small_train_split(kermany_small) if data == "kermany" else \
        load_npz(nih_path, target="findings").split("train").subset(np.arange(64))
    config = dataclasses.replace(config, steps=6, checkpoint_every=3)
    cls = GENERATORS[name]
    fit = (lambda model: model.fit(rows, random_state=0)) if name == "sgan" else (lambda model: model.fit(rows))
    straight = fit(cls(config, device="cuda", run_dir=tmp_path / "straight"))

    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(cls(config, device="cuda", run_dir=tmp_path / "cut", step_hook=interrupt))
    model = cls(config, device="cuda", run_dir=tmp_path / "cut")
    resumed = model.fit(rows, random_state=0, resume=True) if name == "sgan" else model.fit(rows, resume=True)
    a, b = _weights(straight), _weights(resumed)
    gap = max(float((a[k] - b[k]).abs().max()) for k in a)
    images, _ = resumed.sample(4, labels=np.array(labels[0], np.float32) if labels else None,
                               generator=torch.Generator().manual_seed(0))
    say(f"{name}: 6 steps on CUDA, resumed at step 3: largest weight difference {gap:.2e}; samples {images.shape}")
    assert images.dtype == np.uint8 and len(images) == 4
    assert gap == 0.0 if name in EXACT else gap < 1e-3


def test_audit_and_tstr_with_device_auto_run_on_the_gpu(kermany_small, tmp_path):
    data = save_npz(kermany_small, tmp_path / "small.npz")
    assert main(["train-gan", "--method", "cdcgan", "--data", str(data), "--gan-steps", "20", "--gan-width", "16",
                 "--device", "auto", "--no-progress", "--out", str(tmp_path / "runs")]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    torch.cuda.reset_peak_memory_stats()
    assert main(["audit", str(run_dir), "--n", "40", "--feature-epochs", "1", "--device", "auto"]) == 0
    audit = json.loads((run_dir / "audit" / "audit.json").read_text())
    say(f"audit with --device auto: device {audit['config']['device']}, CUDA peak "
        f"{torch.cuda.max_memory_allocated() / GiB:.2f} GiB")
    assert audit["config"]["device"].startswith("cuda") and audit["config"]["tstr"]
    assert torch.cuda.max_memory_allocated() > 0


def _real_rows(kermany, nih_path, findings: bool, size: int, per_class: int = 64) -> CXRDataset:
    """Real training rows at ``size`` px: ``per_class`` of each class (findings: the first 2 x per_class rows)."""
    if findings:
        rows = load_npz(nih_path, target="findings").split("train").subset(np.arange(2 * per_class))
    else:
        train = kermany.split("train")
        y = train.binary_targets()
        rows = train.subset(np.sort(np.concatenate([np.flatnonzero(y == c)[:per_class] for c in (0, 1)])))
    return CXRDataset(resize_stack(rows.images, size), rows.labels, rows.label_names, rows.meta, rows.class_names)


def _measured_memory(spec: GeneratorSpec, rows: CXRDataset) -> dict[str, int]:
    """``torch.cuda.max_memory_allocated`` over one real step of every phase, then one sampling batch of 256."""
    torch.cuda.empty_cache()
    model = spec.build(device="cuda")
    streams, info = model._training_streams(rows)
    model.data_info_ = {**dataset_facts(rows), **info, "fingerprint": "cuda"}
    model._initialise(streams)
    trainer = Trainer(model, streams)
    peaks = {}
    for phase, step in model.phases().items():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        trainer.step = step
        trainer.advance()
        torch.cuda.synchronize()
        peaks[phase] = torch.cuda.max_memory_allocated()
    trainer.flush()
    torch.cuda.reset_peak_memory_stats()
    model.sample(256)
    peaks["sampling"] = torch.cuda.max_memory_allocated()
    return peaks


@pytest.mark.parametrize("name", sorted(n for n, cls in GENERATORS.items() if cls.full_preset))
def test_one_step_of_every_full_preset_at_224_px_and_its_peak_memory(name, kermany, nih_path):
    cls = GENERATORS[name]
    size = 224 if not cls.image_sizes else cls.image_sizes[-1]
    spec = GeneratorSpec.resolve(name, GeneratorSettings(full=True)).on("cuda")
    rows = _real_rows(kermany, nih_path, cls.data_target == "findings", size)
    measured = _measured_memory(spec, rows)
    traced = traced_memory(spec, size, rows.label_names, rows.class_names)
    traced_peaks = {**traced.steps, "sampling": traced.sampling}
    say(f"{name} --full at {size} px, peak allocated: " + ", ".join(
        f"{phase} {measured[phase] / GiB:.2f} GiB (traced {traced_peaks[phase] / GiB:.2f})" for phase in measured))
    for phase, size_bytes in measured.items():
        assert size_bytes < 20 * GiB
        assert traced_peaks[phase] == pytest.approx(size_bytes, rel=0.25), phase


@pytest.mark.parametrize("preset", [dcgan_alpha.FULL_CLASSIFIER, cyclegan_complement.FULL_CLASSIFIER],
                         ids=["resnet18", "densenet121"])
def test_one_step_of_the_full_classifiers_at_224_px_and_its_peak_memory(preset):
    torch.cuda.empty_cache()
    net = build_classifier(preset.model, 1).to("cuda", memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=preset.lr)
    x = torch.randn(preset.batch_size, 1, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.nn.functional.binary_cross_entropy_with_logits(net(x), torch.ones(len(x), 1, device="cuda")).backward()
    optimizer.step()
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated()
    traced = classifier_memory(preset.model, 1, preset.batch_size, 224, preset.eval_batch_size).training
    say(f"{preset.model} --full at 224 px, batch {preset.batch_size}, fp32: training step {measured / GiB:.2f} GiB "
        f"(traced {traced / GiB:.2f})")
    assert measured < 20 * GiB and traced == pytest.approx(measured, rel=0.25)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_torchrun_tiny_compare_and_its_dry_run_on_two_gpus(mapped_file, tmp_path):
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
           "CXRGAN_DIST_TIMEOUT": "120"}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cxrgan",
            "compare", str(mapped_file), "--methods", "none,dcgan", "--seeds", "1", "--model", "small-cnn",
            "--epochs", "1", "--gan-steps", "4", "--batch-size", "32", "--device", "cuda", "--no-progress",
            "--no-external", "--out", str(tmp_path / "runs")]
    dry = subprocess.run([*base, "--dry-run"], env=env, capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "probed as one process" in dry.stdout and not (tmp_path / "runs").exists()
    done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    say(f"torchrun --nproc_per_node 2 compare on {torch.cuda.device_count()} GPUs: {run_dir.name} done")
    assert (run_dir / "report.html").is_file()
