"""Latent diffusion models: conditioning respected on a checkable fixture, guidance, phases, presets, balancers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from balancer_contract import check_balancer_contract

from cxrgan.balance import BalanceContext, LabelVectorCGAN, make_balancer
from cxrgan.balance.gan import GANOversampler
from cxrgan.data import CXRDataset, from_arrays, load_npz
from cxrgan.data.images import resize_stack
from cxrgan.errors import CxrganError
from cxrgan.generators import CLDM, LDM, CLDMConfig, GeneratorSettings, GuidedConfig, LabelVectorLDM, LDMConfig
from generator_contract import TINY_LDM

SIDE = 32  # the fixture's image side: small enough to learn in seconds


@pytest.fixture(scope="module")
def marked_images(nih_path) -> CXRDataset:
    """Real NIH images at 32 px with two checkable 'findings' the labels decide, all four combinations equally often:
    ``dark`` = the image scaled to 40 % of its grey levels, ``marked`` = a white 8 x 8 square in the top-left corner."""
    images = resize_stack(load_npz(nih_path, target="findings").split("train").images[:256], SIDE)
    labels = np.array([[a, b] for a in (0.0, 1.0) for b in (0.0, 1.0)] * 64, np.float32)
    out = images.astype(np.float32)
    out[labels[:, 0] == 1] *= 0.4
    out[labels[:, 1] == 1, :8, :8] = 255
    return from_arrays(np.round(out).astype(np.uint8), labels, ("dark", "marked"), split="train")


def _dark_and_marked(images: np.ndarray) -> tuple[float, float]:
    """(mean grey level outside the corner, mean grey level of the corner)."""
    body = images.astype(np.float64).copy()
    corner = body[:, :8, :8].mean()
    body[:, :8, :8] = np.nan
    return float(np.nanmean(body)), float(corner)


FIXTURE_LDM = dict(ae_width=8, ae_multipliers=(1, 2), latent_channels=4, unet_width=16, unet_multipliers=(1, 2),
                   unet_attention=(False, True), head_channels=16, sample_steps=10, batch_size=32,
                   autoencoder_batch_size=32, steps=300, autoencoder_fraction=0.5, adversarial_weight=0.0, ae_lr=1e-3,
                   lr=1e-3, progress=False)


def test_label_vector_conditioning_is_respected(marked_images):
    """Each requested finding shows in the samples: dark rows are darker, marked rows have the white corner."""
    model = LabelVectorLDM(GuidedConfig(guidance_scale=2.0, **FIXTURE_LDM)).fit(marked_images)
    generator = torch.Generator().manual_seed(0)
    looks = {}
    for row in ((0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)):
        images, labels = model.sample(16, labels=np.array(row, np.float32), generator=generator)
        np.testing.assert_array_equal(labels, np.tile(np.array(row, np.float32), (16, 1)))
        looks[row] = _dark_and_marked(images)
    real = {row: _dark_and_marked(marked_images.images[(marked_images.labels == row).all(1)]) for row in looks}
    for marked in (0.0, 1.0):  # dark is about 40 % of the grey level of not dark, with or without the mark
        assert looks[(1.0, marked)][0] < 0.7 * looks[(0.0, marked)][0], (looks, real)
    for dark in (0.0, 1.0):  # the corner is white exactly when marked
        assert looks[(dark, 1.0)][1] > looks[(dark, 0.0)][1] + 60, (looks, real)


def test_class_conditional_model_and_guidance(marked_images):
    """cldm on a binary task: requested classes show; guidance 1 needs no unconditional pass; alpha sets labels."""
    dark = dataclasses.replace(marked_images, labels=marked_images.labels[:, :1], label_names=("dark",))
    model = CLDM(CLDMConfig(guidance_scale=3.0, **FIXTURE_LDM)).fit(dark)
    generator = torch.Generator().manual_seed(1)
    light, _ = model.sample(16, labels=np.array([0.0], np.float32), generator=generator)
    darkened, _ = model.sample(16, labels=np.array([1.0], np.float32), generator=generator)
    assert darkened.mean() < 0.7 * light.mean()
    drawn = model.sample_labels(400, 0.25, generator)
    assert abs(float((drawn[:, 0] == 0).mean()) - 0.25) < 0.07


def test_phases_ema_and_quality_wait_for_the_unet(marked_images, tmp_path):
    config = LDMConfig(target="dark", ema_decay=0.9, quality_every=1, log_every=1, **{**TINY_LDM, "steps": 6})
    assert config.autoencoder_steps == 3
    model = LDM(config, run_dir=tmp_path).fit(marked_images)
    scored = [r["step"] for r in model.history_ if "quality_fd" in r]
    assert scored == [4, 5, 6]  # nothing to score before the UNet trains
    assert [("ae_l1" in r, "diffusion_loss" in r) for r in model.history_] == [(True, False)] * 3 + [(False, True)] * 3
    assert model.scale_factor_ is not None and model.scale_factor_ > 0
    with pytest.raises(CxrganError, match="diffusion phase"):
        LDM().load_state_dict({**model.state_dict(), "extra": {}}).sample(1)


def test_any_image_size_reaches_the_latent_side(marked_images):
    """48 px rows are trained at 64 px (halved twice to the 16 px latent) and sampled back at 48 px."""
    rows = marked_images.subset(np.arange(32))
    rows = dataclasses.replace(rows, images=resize_stack(rows.images, 48))
    model = LDM(LDMConfig(target="dark", **{**TINY_LDM, "latent_size": 16, "ae_multipliers": (1, 2)})).fit(rows)
    assert model.data_info_["network_size"] == 64
    assert model.networks_["denoiser"].unet.conv_in.conv.in_channels == TINY_LDM["latent_channels"]
    images, _ = model.sample(3, generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 48, 48)


def test_presets_and_settings():
    cpu = CLDM.resolve_config(GeneratorSettings())
    assert cpu.bf16 and cpu.ae_channels == (16, 32, 64) and cpu.unet_channels == (32, 64, 64)
    assert CLDM.resolve_config(GeneratorSettings(steps=500, width=16)).unet_channels == (16, 32, 32)
    full = CLDM.resolve_config(GeneratorSettings(full=True))
    assert full.latent_size == 32 and not full.bf16  # 32 x 32 latents whatever the image size:
    assert full.autoencoder_geometry(224) == (256, (64, 128, 128, 128))  # 224 px rows at 256 px, halved 3 times
    assert full.autoencoder_geometry(128) == (128, (64, 128, 128))
    assert cpu.autoencoder_geometry(64) == (64, cpu.ae_channels)  # the CPU preset's measured 16 x 16 x 4 latents
    with pytest.raises(CxrganError, match="guidance_scale"):
        CLDMConfig(cond_dropout=0.0, guidance_scale=2.0)
    with pytest.raises(CxrganError, match="steps"):
        LDMConfig(steps=1)


@pytest.fixture(scope="module")
def pneumonia_minority(kermany):
    """88 real training images, 64 normal : 24 pneumonia."""
    train = kermany.split("train")
    y = train.binary_targets()
    return train.subset(np.sort(np.concatenate([np.flatnonzero(y == 0)[:64], np.flatnonzero(y == 1)[:24]])))


def test_balancers_registered_with_the_cpu_preset():
    for name, generator, alpha in (("ldm", "ldm", None), ("cldm-a0.25", "cldm", 0.25), ("cldm-a0.5", "cldm", 0.5),
                                   ("cldm-a0.75", "cldm", 0.75)):
        balancer = make_balancer(name, BalanceContext(random_state=3))
        assert (balancer.method, balancer.name, balancer.random_state) == (generator, name, 3)
        assert balancer.config.steps == LDM.cpu_preset["steps"] and balancer.one_class == (alpha is None)
        if alpha is not None:
            assert balancer.alpha == balancer.config.alpha == alpha
    labelvec = make_balancer("ldm-labelvec", BalanceContext(random_state=3, generators=GeneratorSettings(steps=40)))
    assert labelvec.generator_spec().name == "ldm-labelvec" and labelvec.generator_spec().config.steps == 40


@pytest.mark.parametrize("method, healthy", [("ldm", 0), ("cldm", 40)])
def test_oversampling_balancers(method, healthy, pneumonia_minority, tmp_path):
    config = (LDMConfig if method == "ldm" else CLDMConfig)(**TINY_LDM)
    balancer = GANOversampler(method, config, alpha=0.5, work_dir=tmp_path, name=f"{method}-test")
    out = check_balancer_contract(balancer, pneumonia_minority, expect="balanced" if healthy == 0 else "any")
    added = out.subset(out.synthetic)
    assert int((added.labels[:, 0] == 1).sum()) == 40 and int((added.labels[:, 0] == 0).sum()) == healthy
    assert set(added.meta["source"]) == {f"{method}-test"}
    assert len(list((tmp_path / "gan").glob(f"{method}-*/checkpoint.pt"))) == 1  # trained once, then the cache


def test_label_vector_balancer(nih_path, tmp_path):
    train = load_npz(nih_path, target="findings").split("train")
    balancer = LabelVectorCGAN(GuidedConfig(**TINY_LDM), work_dir=tmp_path, name="ldm-labelvec",
                               generator="ldm-labelvec")
    out = balancer.fit_resample(train)
    assert isinstance(balancer.model_, LabelVectorLDM) and out.synthetic.sum() == len(balancer.vectors_) > 0
    assert set(out.meta.loc[out.synthetic, "source"]) == {"ldm-labelvec"}
