"""Every registered generator passes the shared contract on 64 real Kermany training images (tiny widths)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrgan.generators import GENERATORS, CDCGAN, CDCGANConfig
from generator_contract import CONTRACT_CASES, TINY, check_generator_contract, small_train_split



@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generator_contract(name, train64):
    assert name in CONTRACT_CASES, f"generator {name!r} has no contract case in tests/generator_contract.py"
    config, requestable = CONTRACT_CASES[name]
    check_generator_contract(GENERATORS[name], config, train64, requestable)


def test_cdcgan_alpha_sets_the_healthy_fraction(train64):
    model = CDCGAN(CDCGANConfig(embed_dim=4, **TINY)).fit(train64)
    for alpha in (0.0, 0.25, 0.75, 1.0):
        _, labels = model.sample(400, generator=torch.Generator().manual_seed(0), alpha=alpha)
        healthy = float((labels[:, 0] == 0).mean())
        assert abs(healthy - alpha) < 0.07, (alpha, healthy)


def test_cdcgan_multi_hot_conditioning(nih_path):
    from cxrgan.data import load_npz

    nih = load_npz(nih_path, target="findings").split("train")
    has_finding = (np.nan_to_num(nih.labels) == 1).any(axis=1)
    rows = np.sort(np.concatenate([np.flatnonzero(has_finding)[:40], np.flatnonzero(~has_finding)[:24]]))
    model = CDCGAN(CDCGANConfig(embed_dim=4, **TINY)).fit(nih.subset(rows))
    row = np.zeros(nih.n_labels, dtype=np.float32)
    row[[0, 3]] = 1.0
    images, labels = model.sample(3, labels=row)
    assert images.shape == (3, nih.image_size, nih.image_size)
    np.testing.assert_array_equal(labels, np.tile(row, (3, 1)))
    _, drawn = model.sample(50, alpha=0.5)
    assert set(map(tuple, drawn.astype(int).tolist())) - {(0,) * nih.n_labels}, "non-healthy draws carry findings"
