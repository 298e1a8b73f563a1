"""The contract every generative model in ``cxrgan.generators`` must pass, reusable by any new generator's tests.

Use: ``check_generator_contract(cls, config, train_split, requestable_labels)`` from a test parametrised over
``GENERATORS``; a new generator registers a tiny config in ``CONTRACT_CASES`` (or calls the function directly).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators import CDCGANConfig, CycleGANConfig, DCGANConfig, GenerativeModel

TINY = dict(ngf=8, ndf=8, z_dim=16, batch_size=16, epochs=1, progress=False, grid_every=0)

# registry name -> (tiny config, labels one may request: list of (K,) rows the samples must carry)
CONTRACT_CASES: dict[str, tuple[object, list[list[float]]]] = {
    "dcgan": (DCGANConfig(target="pneumonia", ema_decay=0.9, diffaugment="translation,cutout", **TINY), [[1.0]]),
    "cdcgan": (CDCGANConfig(d_norm="spectral", loss="hinge", embed_dim=4, **TINY), [[0.0], [1.0]]),
    "cyclegan": (CycleGANConfig(ngf=4, ndf=4, n_blocks=1, epochs=1, decay_epochs=1, batch_size=4, bank_size=8,
                                progress=False, grid_every=0), [[0.0], [1.0]]),
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


def small_train_split(dataset: CXRDataset, n_negative: int = 16, n_positive: int = 48) -> CXRDataset:
    """The first ``n_negative`` normal and ``n_positive`` pneumonia training rows of a real binary dataset (64 by default)."""
    train = dataset.split("train")
    y = train.binary_targets()
    index = np.concatenate([np.flatnonzero(y == 0)[:n_negative], np.flatnonzero(y == 1)[:n_positive]])
    return train.subset(np.sort(index))


