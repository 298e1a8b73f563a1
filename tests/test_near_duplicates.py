"""The near-duplicate check on real Kermany images: altered copies are found, other patients' images are not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cxrgan.data.near_duplicates import check_no_near_duplicates, fingerprints, match
from cxrgan.errors import CxrganError


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("L"))


def _round_trip(image: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR).resize((64, 64), Image.BILINEAR))


ALTERATIONS = {
    "mirror": lambda x: np.ascontiguousarray(x[:, ::-1]),
    "+1 grey level": lambda x: np.clip(x.astype(np.int16) + 1, 0, 255).astype(np.uint8),
    "gamma 0.8": lambda x: (255 * (x / 255.0) ** 0.8).astype(np.uint8),
    "JPEG 50": lambda x: _jpeg(x, 50),
    "resized to 48 px and back": lambda x: _round_trip(x, 48),
    "mirror + JPEG 75": lambda x: _jpeg(np.ascontiguousarray(x[:, ::-1]), 75),
}


@pytest.fixture(scope="module")
def splits(kermany_small):
    train, test = kermany_small.split("train"), kermany_small.split("test")
    return train, test, fingerprints(test.images)


@pytest.mark.parametrize("name", sorted(ALTERATIONS))
def test_altered_copies_of_test_images_are_found(name, splits):
    _, test, test_prints = splits
    copies = np.stack([ALTERATIONS[name](image) for image in test.images])
    found = match(copies, test_prints)
    assert found.count == len(test), (name, found.count)
    np.testing.assert_array_equal(found.index, np.arange(len(test)))  # each copy matched with its own original
    assert found.mirrored.all() == name.startswith("mirror")


def test_images_of_other_patients_are_not_near_duplicates(splits):
    train, test, test_prints = splits
    found = match(train.images, test_prints)
    assert found.count == 0
    assert np.nanmax(found.detail) < 0.85 and np.nanmax(found.layout) < 0.98  # candidates exist, none confirmed


def test_exact_copies_count_also_without_detail_and_groups_exclude_pairs(splits):
    _, test, _ = splits
    flat = np.full((2, 64, 64), 120, np.uint8)  # no band-pass detail to correlate, still an exact copy
    references = np.concatenate([test.images[:3], flat[:1]])
    found = match(np.concatenate([flat[1:], test.images[:1]]), references)
    assert found.exact.tolist() == [True, True] and found.index.tolist() == [3, 0]
    same_group = match(test.images[:3], test.images[:3], groups=(np.arange(3), np.arange(3)))
    assert same_group.count == 0  # an image is not its own near-duplicate when its group is left out


def test_refusal_names_the_file_the_count_and_the_first_image(splits):
    train, test, _ = splits
    images = np.concatenate([train.images[:5], np.ascontiguousarray(test.images[[7, 2], :, ::-1])])
    with pytest.raises(CxrganError, match=r"^--synthetic s\.npz: 2 of its 7 images are near-duplicates of images of "
                                          r"the test split \(the first: its image 5 ~ row 7 there, mirrored"):
        check_no_near_duplicates(images, {"the test split": test.images}, "--synthetic s.npz", "not allowed")
    check_no_near_duplicates(train.images[:5], {"the test split": test.images}, "--synthetic s.npz", "not allowed")
