"""Every registered generator passes the shared contract through the one loop on 64 real training images (tiny widths)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrgan.data import load_npz
from cxrgan.generators import GENERATORS, CDCGAN, CDCGANConfig
from generator_contract import CONTRACT_CASES, TINY, check_generator_contract, check_resume_contract, small_train_split


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)


@pytest.fixture(scope="module")
def nih64(nih_path):
    """64 real multi-label NIH training rows: 40 with a finding, 24 without."""
    nih = load_npz(nih_path, target="findings").split("train")
    has_finding = (np.nan_to_num(nih.labels) == 1).any(axis=1)
    return nih.subset(np.sort(np.concatenate([np.flatnonzero(has_finding)[:40], np.flatnonzero(~has_finding)[:24]])))


@pytest.fixture(scope="module")
def data(train64, nih64):
    return {"kermany": train64, "nih": nih64}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_contract(name, data):
    assert name in CONTRACT_CASES, f"generator {name!r} has no contract case in tests/generator_contract.py"
    config, requestable, dataset = CONTRACT_CASES[name]
    check_generator_contract(GENERATORS[name], config, data[dataset], requestable)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_resume_after_interruption_is_bit_identical(name, data, tmp_path):
    config, _, dataset = CONTRACT_CASES[name]
    check_resume_contract(GENERATORS[name], config, data[dataset], tmp_path)


def test_cdcgan_alpha_sets_the_healthy_fraction(train64):
    model = CDCGAN(CDCGANConfig(embed_dim=4, **TINY)).fit(train64)
    for alpha in (0.0, 0.25, 0.75, 1.0):
        _, labels = model.sample(400, generator=torch.Generator().manual_seed(0), alpha=alpha)
        healthy = float((labels[:, 0] == 0).mean())
        assert abs(healthy - alpha) < 0.07, (alpha, healthy)


def test_cdcgan_multi_hot_conditioning(nih64):
    model = CDCGAN(CDCGANConfig(embed_dim=4, **TINY)).fit(nih64)
    row = np.zeros(nih64.n_labels, dtype=np.float32)
    row[[0, 3]] = 1.0
    images, labels = model.sample(3, labels=row)
    assert images.shape == (3, nih64.image_size, nih64.image_size)
    np.testing.assert_array_equal(labels, np.tile(row, (3, 1)))
    _, drawn = model.sample(50, alpha=0.5)
    assert set(map(tuple, drawn.astype(int).tolist())) - {(0,) * nih64.n_labels}, "non-healthy draws carry findings"


def test_label_vector_cgan_draws_training_label_vectors(nih64):
    model = GENERATORS["cgan-labelvec"](CONTRACT_CASES["cgan-labelvec"][0]).fit(nih64)
    _, drawn = model.sample(200, generator=torch.Generator().manual_seed(0))
    training_vectors = set(map(tuple, np.nan_to_num(nih64.labels).astype(int).tolist()))
    assert set(map(tuple, drawn.astype(int).tolist())) <= training_vectors  # whole real vectors, co-occurrence kept
    healthy = float((drawn.sum(1) == 0).mean())
    assert abs(healthy - 24 / 64) < 0.1  # by training frequency
