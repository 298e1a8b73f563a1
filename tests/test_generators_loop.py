"""The shared GAN loop on real images: exact resume, divergence stop, bad-input errors, run dirs and sampling."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from cxrgan.data import load_npz, save_npz
from cxrgan.errors import CxrganError
from cxrgan.generators import CDCGAN, DCGAN, CDCGANConfig, DCGANConfig, load_run, sample_from_run, train_gan
from cxrgan.generators.losses import LOSSES, AdversarialLoss
from generator_contract import TINY, small_train_split


RESUMABLE = DCGANConfig(**{**TINY, "epochs": 3, "batch_size": 16}, target="pneumonia", ema_decay=0.9,
                        diffaugment="translation,cutout,brightness,contrast", checkpoint_every=2)


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)


def _tensors(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    return {f"{net}.{k}": v for net in ("generator", "discriminator", "generator_ema") for k, v in state[net].items()}


def test_resume_after_interruption_matches_uninterrupted_run(train64, tmp_path):
    full = DCGAN(RESUMABLE, run_dir=tmp_path / "full").fit(train64)  # 48 pneumonia images: 3 steps x 3 epochs

    def interrupt(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt  # after the step-4 checkpoint, mid-epoch

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
    changed = DCGANConfig(**{**TINY, "epochs": 3, "batch_size": 16}, target="pneumonia", ema_decay=0.9, lr_g=1e-3)
    with pytest.raises(CxrganError, match="another config"):
        DCGAN(changed, run_dir=tmp_path).fit(train64, resume=True)


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
    config = CDCGANConfig(**{**TINY, "grid_every": 1}, embed_dim=4)
    run_dir = train_gan("cdcgan", data, tmp_path / "runs", config)
    assert run_dir.name == "00000-cdcgan-tiny"
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.jsonl", "loss_curves.png", "samples", "checkpoint.pt"}
    assert json.loads((run_dir / "config.json").read_text())["config"]["method"] == "cdcgan"
    assert (run_dir / "samples" / "epoch0001.png").exists()
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
