"""The contract every generative model in ``cxrgan.generators`` must pass, reusable by any new generator's tests.

Use: ``check_generator_contract(cls, config, train_split, requestable_labels)`` and
``check_resume_contract(cls, config, train_split, tmp_path)`` from a test parametrised over ``GENERATORS``; a new
generator registers a tiny config in ``CONTRACT_CASES`` (or calls the functions directly).
"""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch

from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators import (CDCGANConfig, CLDMConfig, CycleGANConfig, DCGANConfig, FastGANConfig, GenerativeModel,
                               GuidedConfig, LabelVectorConfig, LDMConfig, SGANConfig)

TINY = dict(ngf=8, ndf=8, z_dim=16, batch_size=16, steps=4, progress=False)
# a latent diffusion model small enough for a test: 64 px -> 16 x 16 x 2 latents, a 2-level UNet with attention at
# 8 x 8, 4 DDIM steps; half the steps train the autoencoder, the other half the UNet
TINY_LDM = dict(ae_width=4, ae_multipliers=(1, 2, 2), latent_channels=2, unet_width=8, unet_multipliers=(1, 1),
                unet_attention=(False, True), head_channels=8, sample_steps=4, batch_size=16, autoencoder_batch_size=8,
                steps=4, autoencoder_fraction=0.5, discriminator_width=8, quality_images=32, progress=False)

# registry name -> (tiny config, labels one may request: list of (K,) rows the samples must carry, data set:
# "kermany" = 64 binary real training images, "nih" = 64 multi-label ones)
NIH_ROW = [1.0, 0.0, 0.0, 1.0] + [0.0] * 10
CONTRACT_CASES: dict[str, tuple[object, list[list[float]], str]] = {
    "dcgan": (DCGANConfig(target="pneumonia", ema_decay=0.9, diffaugment="translation,cutout", **TINY), [[1.0]],
              "kermany"),
    "cdcgan": (CDCGANConfig(d_norm="spectral", loss="hinge", embed_dim=4, **TINY), [[0.0], [1.0]], "kermany"),
    "cgan-labelvec": (LabelVectorConfig(embed_dim=4, ema_decay=0.9, **TINY), [NIH_ROW], "nih"),
    "cyclegan": (CycleGANConfig(ngf=4, ndf=4, n_blocks=1, steps=8, batch_size=4, bank_size=8, ema_decay=0.9,
                                progress=False), [[0.0], [1.0]], "kermany"),
    "fastgan": (FastGANConfig(target="pneumonia", ema_decay=0.9, diffaugment="translation,cutout", **TINY), [[1.0]],
                "kermany"),
    "ldm": (LDMConfig(target="pneumonia", ema_decay=0.9, **TINY_LDM), [[1.0]], "kermany"),
    "cldm": (CLDMConfig(**TINY_LDM), [[0.0], [1.0]], "kermany"),
    "ldm-labelvec": (GuidedConfig(ema_decay=0.9, guidance_scale=1.5, **TINY_LDM), [NIH_ROW], "nih"),
    "sgan": (SGANConfig(image_size=64, ndf=8, ngf=8, z_dim=16, steps=4, batch_size=8, reference_size=16,
                        progress=False), [], "kermany"),
}


def _reload(state: dict) -> dict:
    """Round trip through torch.save / torch.load(weights_only=True), as a checkpoint on disk would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def check_generator_contract(cls: type[GenerativeModel], config: object, train_split: CXRDataset,
                             requestable_labels: list[list[float]]) -> GenerativeModel:
    """Fit ``cls`` briefly on ``train_split`` and check sampling, reproducibility, state round trip and labels."""
    unfitted = cls(config)
    with pytest.raises(CxrganError):
        unfitted.sample(2)
    model = cls(config)
    assert model.fit(train_split) is model, "fit must return self"
    assert model.history_ and model.history_[-1]["step"] == config.steps, "trains config.steps steps of the one loop"

    size, k = train_split.image_size, train_split.n_labels
    images, labels = model.sample(12, generator=torch.Generator().manual_seed(3))
    assert images.shape == (12, size, size) and images.dtype == np.uint8
    assert labels.shape == (12, k) and labels.dtype == np.float32
    known = labels[~np.isnan(labels)]
    assert np.isin(known, [0.0, 1.0]).all(), "sampled labels must be 0, 1 or NaN"
    assert images.std() > 0, "samples must not be constant images"

    again, again_labels = model.sample(12, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    other, _ = model.sample(12, generator=torch.Generator().manual_seed(4))
    assert not np.array_equal(images, other), "different seeds must give different samples"

    empty, empty_labels = model.sample(0)
    assert empty.shape == (0, size, size) and empty_labels.shape == (0, k)

    restored = cls().load_state_dict(_reload(model.state_dict()))
    copy_images, copy_labels = restored.sample(12, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(images, copy_images)
    np.testing.assert_array_equal(labels, copy_labels)

    for row in requestable_labels:
        got_images, got_labels = model.sample(5, labels=np.array(row, dtype=np.float32), generator=torch.Generator().manual_seed(5))
        assert got_images.shape == (5, size, size)
        np.testing.assert_array_equal(got_labels, np.tile(np.array(row, dtype=np.float32), (5, 1)))
    return model


def _tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state dict, by dotted path."""
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_tensors(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out.update({f"{prefix}{key}.{i}": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)})
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
    return out


def _records(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def check_resume_contract(cls: type[GenerativeModel], config: object, train_split: CXRDataset, tmp_path) -> None:
    """An interrupted run resumed from its checkpoint ends bit-identical to an uninterrupted one: weights (the best
    model fit keeps and the last checkpoint), metrics.jsonl without duplicates; checkpoints load weights-only."""
    config = dataclasses.replace(config, steps=6, checkpoint_every=2, log_every=1, quality_every=3, grid_every=3)
    full = cls(config, run_dir=tmp_path / "full").fit(train_split)

    def interrupt(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt  # after the step-4 checkpoint, with step 5 already in metrics.jsonl

    with pytest.raises(KeyboardInterrupt):
        cls(config, run_dir=tmp_path / "cut", step_hook=interrupt).fit(train_split)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 4 and not saved["done"]
    assert [r["step"] for r in _records(tmp_path / "cut" / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    resumed = cls(config, run_dir=tmp_path / "cut").fit(train_split, resume=True)

    ours, theirs = _tensors(resumed.state_dict()), _tensors(full.state_dict())
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), f"best model: {key}"
    last = {name: torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("full", "cut")}
    assert last["cut"]["done"] and last["cut"]["step"] == 6
    for key, value in _tensors(last["full"]["networks"]).items():
        assert torch.equal(_tensors(last["cut"]["networks"])[key], value), f"last checkpoint: {key}"
    assert _records(tmp_path / "cut" / "metrics.jsonl") == _records(tmp_path / "full" / "metrics.jsonl")
    best = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    assert best["best"]["step"] in (3, 6) and cls().load_state_dict(best).data_info_ == full.data_info_


def small_train_split(dataset: CXRDataset, n_negative: int = 16, n_positive: int = 48) -> CXRDataset:
    """The first ``n_negative`` normal and ``n_positive`` pneumonia training rows of a real binary dataset (64 by default)."""
    train = dataset.split("train")
    y = train.binary_targets()
    index = np.concatenate([np.flatnonzero(y == 0)[:n_negative], np.flatnonzero(y == 1)[:n_positive]])
    return train.subset(np.sort(index))
