"""The one training loop on real images: exact resume, divergence stop, quality and best.pt, metrics after a kill,
bad-input errors, run dirs, sampling."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from cxrgan.data import load_npz, save_npz
from cxrgan.io import read_jsonl
from cxrgan.errors import CxrganError
from cxrgan.generators import CDCGAN, DCGAN, CDCGANConfig, DCGANConfig, load_run, sample_from_run, train_gan
from cxrgan.generators.losses import LOSSES, AdversarialLoss
from cxrgan.generators.training import Trainer
from generator_contract import TINY, small_train_split


RESUMABLE = DCGANConfig(**{**TINY, "steps": 9}, target="pneumonia", ema_decay=0.9,
                        diffaugment="translation,cutout,brightness,contrast", checkpoint_every=2)


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)


def _tensors(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {f"{group}.{net}.{k}": v for group in ("networks", "ema") for net, tensors in state[group].items()
            for k, v in tensors.items()}


def test_resume_after_interruption_matches_uninterrupted_run(train64, tmp_path):
    full = DCGAN(RESUMABLE, run_dir=tmp_path / "full").fit(train64)  # 48 pneumonia images: 3 passes of 3 steps

    def interrupt(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt  # after the step-4 checkpoint, mid-pass

    with pytest.raises(KeyboardInterrupt):
        DCGAN(RESUMABLE, run_dir=tmp_path / "cut", step_hook=interrupt).fit(train64)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["step"] == 4
    resumed = DCGAN(RESUMABLE, run_dir=tmp_path / "cut").fit(train64, resume=True)

    ours, theirs = _tensors(resumed), _tensors(full)
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key
    final = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert final["done"] and final["step"] == 9
    a, _ = full.sample(8, generator=torch.Generator().manual_seed(0))
    b, _ = resumed.sample(8, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)


def test_resume_refuses_another_config(train64, tmp_path):
    DCGAN(RESUMABLE, run_dir=tmp_path).fit(train64)
    changed = DCGANConfig(**{**TINY, "steps": 9}, target="pneumonia", ema_decay=0.9, lr_g=1e-3)
    with pytest.raises(CxrganError, match="another config"):
        DCGAN(changed, run_dir=tmp_path).fit(train64, resume=True)
    # settings that change neither the weights nor the kept checkpoint may differ on resume
    relaxed = dataclasses.replace(RESUMABLE, progress=True, log_every=3, grid_every=2, checkpoint_every=0)
    DCGAN(relaxed, run_dir=tmp_path).fit(train64, resume=True)


def test_discriminator_stuck_near_zero_stops_and_keeps_last_checkpoint(train64, tmp_path):
    config = DCGANConfig(**TINY, target="pneumonia", checkpoint_every=1, divergence_patience=2, divergence_d_loss=100.0)
    with pytest.raises(CxrganError, match=r"diverged at step 2 .*discriminator loss below 100.*last good checkpoint"):
        DCGAN(config, run_dir=tmp_path).fit(train64)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


def test_nan_loss_stops_training(train64, tmp_path, monkeypatch):
    bce = LOSSES["bce"]
    monkeypatch.setitem(LOSSES, "bce", AdversarialLoss(lambda r, f: bce.d_loss(r, f) * float("nan"), bce.g_loss))
    with pytest.raises(CxrganError, match=r"discriminator loss is nan.*no checkpoint"):
        DCGAN(DCGANConfig(**TINY), run_dir=tmp_path).fit(train64)


def test_losses_are_read_once_per_window_and_a_late_nan_keeps_the_checkpoint_before_it(train64, tmp_path,
                                                                                       monkeypatch):
    """No host sync inside a step: the loop reads statistics and checked losses when it next records, scores, draws
    or saves. A loss that turns NaN at step 3 is found at the checkpoint of step 4, named by its own step, and the
    checkpoint of step 2 is the last one written."""
    reads = []
    flush = Trainer.flush
    monkeypatch.setattr(Trainer, "flush", lambda self: (reads.append(self.step), flush(self))[1])
    DCGAN(DCGANConfig(**{**TINY, "steps": 8}, log_every=4, checkpoint_every=0)).fit(train64)
    assert reads == [4, 8, 8]  # after steps 4 and 8, and once more at the end (nothing left to read)

    bce, calls = LOSSES["bce"], []

    def nan_from_step_3(real, fake):
        calls.append(1)
        return bce.d_loss(real, fake) * (float("nan") if len(calls) >= 3 else 1.0)

    monkeypatch.setitem(LOSSES, "bce", AdversarialLoss(nan_from_step_3, bce.g_loss))
    with pytest.raises(CxrganError, match=r"diverged at step 3 \(the discriminator loss is nan\); the last good "
                                          r"checkpoint"):
        DCGAN(DCGANConfig(**TINY, checkpoint_every=2, log_every=50), run_dir=tmp_path).fit(train64)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 2


def test_too_few_images_and_foreign_rows_are_refused(kermany_small):
    train = kermany_small.split("train")
    few_normal = small_train_split(kermany_small, n_negative=10, n_positive=40)
    with pytest.raises(CxrganError, match="class 'normal' has 10 training images"):
        DCGAN(DCGANConfig(**TINY, target="normal")).fit(few_normal)
    with pytest.raises(CxrganError, match="class 'normal' has 10 training images"):
        CDCGAN(CDCGANConfig(**TINY)).fit(few_normal)
    with pytest.raises(CxrganError, match="training split only"):
        DCGAN(DCGANConfig(**TINY)).fit(kermany_small)
    with pytest.raises(CxrganError, match="unknown target class 'cat'"):
        DCGAN(DCGANConfig(**TINY, target="cat")).fit(train)


def test_train_gan_run_dir_and_sample_from_run(train64, tmp_path):
    data = tmp_path / "tiny.npz"
    save_npz(train64, data)
    config = CDCGANConfig(**{**TINY, "grid_every": 2, "quality_every": 2}, embed_dim=4)
    run_dir = train_gan("cdcgan", data, tmp_path / "runs", config)
    assert run_dir.name == "00000-cdcgan-tiny"
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "status.json", "metrics.jsonl", "loss_curves.png",
                                                    "samples", "checkpoint.pt", "best.pt"}
    assert json.loads((run_dir / "config.json").read_text())["config"]["method"] == "cdcgan"
    assert {p.name for p in (run_dir / "samples").iterdir()} == {"step000002.png", "step000004.png"}
    assert train_gan("cdcgan", data, tmp_path / "runs", config, resume=True) == run_dir  # finished: unchanged

    grid = sample_from_run(run_dir, 6, label="normal", out_path=tmp_path / "grid.png")
    from PIL import Image

    assert Image.open(grid).mode == "L"
    out = load_npz(sample_from_run(run_dir, 6, label="pneumonia", out_path=tmp_path / "pneumonia.npz"))
    assert len(out) == 6 and out.images.shape[1:] == (64, 64)
    assert (out.labels[:, 0] == 1).all() and out.synthetic.all()
    with pytest.raises(CxrganError, match="unknown label 'cat'"):
        sample_from_run(run_dir, 2, label="cat", out_path=tmp_path / "x.png")
    with pytest.raises(CxrganError, match="is a 'cdcgan' run, expected a 'dcgan' run"):
        load_run(run_dir, method="dcgan")


@pytest.mark.parametrize("changes, field", [({"batch_size": 1}, "batch_size=1"), ({"ema_decay": 1.0}, "ema_decay=1.0"),
                                            ({"d_norm": "layer"}, "d_norm='layer'"), ({"loss": "wgan"}, "unknown GAN loss"),
                                            ({"diffaugment": "saturation"}, "unknown DiffAugment op")])
def test_invalid_settings_are_named(changes, field):
    with pytest.raises(CxrganError, match=re.escape(field)):
        DCGANConfig(**changes)


def test_quality_is_tracked_and_the_best_model_is_kept(train64, tmp_path):
    """Every quality_every steps the FD of EMA samples to real rows is logged and plotted; fit leaves the model
    with the best-scoring state, which is best.pt; the last state stays in checkpoint.pt."""
    config = DCGANConfig(**{**TINY, "steps": 12}, target="pneumonia", ema_decay=0.9, quality_every=3, log_every=2)
    model = DCGAN(config, run_dir=tmp_path).fit(train64)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [2, 3, 4, 6, 8, 9, 10, 12]
    scores = {r["step"]: r["quality_fd"] for r in records if "quality_fd" in r}
    assert sorted(scores) == [3, 6, 9, 12] and all(np.isfinite(list(scores.values())))
    best_step = min(scores, key=scores.get)
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["best"] == {"step": best_step, "quality_fd": scores[best_step]} and status["done"]
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    for key, value in best["networks"]["generator"].items():
        assert torch.equal(model.generator_.state_dict()[key], value), key
    a, _ = model.sample(6, generator=torch.Generator().manual_seed(0))
    b, _ = load_run(tmp_path).sample(6, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)  # load_run and sampling use the best by default
    last = load_run(tmp_path, checkpoint="last")
    if best_step != 12:
        assert not torch.equal(last.generator_ema_.state_dict()["to_image.weight"],
                               model.generator_ema_.state_dict()["to_image.weight"])
    from PIL import Image

    assert Image.open(tmp_path / "loss_curves.png").size[0] > 3 * 400  # losses, statistics, fidelity panels


def test_fidelity_score_ranks_real_images_above_noise(train64):
    from cxrgan.generators.quality import FidelityScore

    class Fixed:  # a "model" whose samples are given images
        def __init__(self, images):
            self.images = images

        def quality_samples(self, n, labels, generator):
            return self.images[:n]

    pneumonia = train64.images[train64.labels[:, 0] == 1]
    score = FidelityScore(pneumonia[:24], None, n=24, seed=0)
    noise = np.random.default_rng(0).integers(0, 256, (24, 64, 64), dtype=np.uint8)
    assert score(Fixed(pneumonia[:24])) == pytest.approx(0.0, abs=1e-6)
    assert score(Fixed(pneumonia[24:48])) < score(Fixed(noise))


def test_metrics_written_after_the_checkpoint_are_dropped_on_resume(train64, tmp_path):
    config = dataclasses.replace(RESUMABLE, log_every=1, checkpoint_every=3)

    def interrupt(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DCGAN(config, run_dir=tmp_path, step_hook=interrupt).fit(train64)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    DCGAN(config, run_dir=tmp_path).fit(train64, resume=True)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == list(range(1, 10))


def test_only_the_main_process_writes(train64, tmp_path, monkeypatch):
    from cxrgan.generators import training

    monkeypatch.setattr(training, "is_main_process", lambda: False)  # as rank 1 of a DDP job
    DCGAN(dataclasses.replace(RESUMABLE, grid_every=3, quality_every=3), run_dir=tmp_path / "rank1").fit(train64)
    assert not (tmp_path / "rank1").exists() or not any((tmp_path / "rank1").iterdir())
