"""The flip-and-affine transform (exact on known warps, ranges honoured) and the augment balancer on real images."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from cxrgan.balance import BalanceContext, flip_affine_tensor, make_balancer, random_flip_affine
from cxrgan.balance.augment import random_flip_affine_theta
from cxrgan.errors import CxrganError


@pytest.fixture(scope="module")
def real_images(kermany_small) -> np.ndarray:
    return np.array(kermany_small.images[:24])


def test_no_warp_is_exact_identity_and_pure_flip_is_mirror(real_images):
    no_warp = dict(max_rotation_deg=0.0, max_translation=0.0, scale_range=(1.0, 1.0))
    same = random_flip_affine(real_images, torch.Generator().manual_seed(0), flip_probability=0.0, **no_warp)
    np.testing.assert_array_equal(same, real_images)
    mirrored = random_flip_affine(real_images, torch.Generator().manual_seed(0), flip_probability=1.0, **no_warp)
    np.testing.assert_array_equal(mirrored, real_images[:, :, ::-1])


def test_seeded_and_input_untouched(real_images):
    before = real_images.copy()
    a = random_flip_affine(real_images, torch.Generator().manual_seed(5))
    b = random_flip_affine(real_images, torch.Generator().manual_seed(5))
    c = random_flip_affine(real_images, torch.Generator().manual_seed(6))
    np.testing.assert_array_equal(real_images, before)
    assert a.dtype == np.uint8 and a.shape == real_images.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_warp_moves_a_dot_where_the_matrix_says():
    """The forward map is the inverse of the affine_grid matrix: a bright dot lands at L^-1 (x - o)."""
    size, generator_seed = 64, 3
    dots = np.zeros((16, size, size), dtype=np.uint8)
    rows = np.random.default_rng(0).integers(20, 44, size=(16, 2))
    for image, (r, c) in zip(dots, rows):
        image[r - 1 : r + 2, c - 1 : c + 2] = 255
    warped = random_flip_affine(dots, torch.Generator().manual_seed(generator_seed)).astype(float)
    theta = random_flip_affine_theta(16, torch.Generator().manual_seed(generator_seed)).double().numpy()
    grid = (2 * np.arange(size) + 1) / size - 1  # pixel centres in [-1, 1] (align_corners=False)
    for image, (r, c), matrix in zip(warped, rows, theta):
        source = np.array([grid[c], grid[r]])  # (x, y)
        expected = np.linalg.solve(matrix[:, :2], source - matrix[:, 2])
        mass = image.sum()
        found = np.array([(image.sum(axis=0) * grid).sum() / mass, (image.sum(axis=1) * grid).sum() / mass])
        assert np.abs(found - expected).max() < 1.0 / size  # within half a pixel


def test_random_parameters_stay_in_range():
    theta = random_flip_affine_theta(4000, torch.Generator().manual_seed(0)).double()
    linear, offset = theta[:, :, :2], theta[:, :, 2]
    det = torch.linalg.det(linear)
    flipped = det < 0
    assert 0.45 < flipped.double().mean() < 0.55
    scale = 1 / det.abs().sqrt()
    assert scale.min() >= 0.9 - 1e-6 and scale.max() <= 1.1 + 1e-6 and scale.max() > 1.09 and scale.min() < 0.91
    unflipped = linear.clone()
    unflipped[flipped, 0, :] *= -1
    angle = torch.rad2deg(torch.atan2(unflipped[:, 0, 1], unflipped[:, 0, 0]))
    assert angle.abs().max() <= 10 + 1e-6 and angle.abs().max() > 9.9
    shift = -torch.linalg.solve(linear, offset)  # the forward translation, in [-1, 1] units
    assert shift.abs().max() <= 0.12 + 1e-6 and shift.abs().max() > 0.119
    # rotation is a rotation: rows orthogonal with equal length
    rows_dot = (unflipped[:, 0] * unflipped[:, 1]).sum(-1)
    assert rows_dot.abs().max() < 1e-6


def test_tensor_transform_repeats_borders():
    """A flat image stays flat: no black corners for a classifier to learn."""
    flat = torch.full((4, 1, 32, 32), 0.4)
    out = flip_affine_tensor(flat, torch.Generator().manual_seed(0))
    assert out.shape == flat.shape and out.dtype == flat.dtype
    torch.testing.assert_close(out, flat)


def test_bad_input_is_refused(real_images):
    with pytest.raises(CxrganError, match="uint8"):
        random_flip_affine(real_images.astype(np.float32), torch.Generator())
    with pytest.raises(CxrganError, match="scale_range"):
        random_flip_affine(real_images, torch.Generator(), scale_range=(1.1, 0.9))


def test_augment_balancer_rows(kermany_small):
    train = kermany_small.split("train")
    balancer = make_balancer("augment", BalanceContext(random_state=0))
    out = balancer.fit_resample(train)
    assert len(out) == 240 and out.positives()[0] == 120
    added = out.subset(np.arange(160, 240))
    parents = balancer.parent_indices_
    assert added.synthetic.all() and set(added.meta["source"]) == {"augment"}
    assert (train.labels[parents, 0] == 0).all() and (added.labels[:, 0] == 0).all()
    assert list(added.meta["patient_id"]) == list(train.meta["patient_id"].iloc[parents])
    assert set(added.meta["filename"]) == {""}
    # each new image is its parent warped by the transform, with the balancer's seed
    expected = random_flip_affine(train.images[parents], torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(added.images, expected)
    assert not np.array_equal(added.images, train.images[parents])
    # parents come from the minority class and cover it
    assert set(parents) <= set(np.flatnonzero(train.labels[:, 0] == 0)) and len(set(parents)) > 30
