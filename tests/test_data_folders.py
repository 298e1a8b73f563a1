"""Image decoding (PNG / JPEG / DICOM), centre crop + area resize, and the Kermany image-folder loader on real images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _data_helpers import kermany_rows, stretch, write_dicom, write_kermany_folder
from cxrgan.data import KERMANY_PATIENT_REGEX, load_image_folder
from cxrgan.data.images import center_crop, load_many, read_image, resize_area
from cxrgan.errors import CxrganError


@pytest.fixture(scope="module")
def real128(data_dir):
    rows = kermany_rows(data_dir, per_class=2)
    rows["images"] = np.stack([stretch(im) for im in rows["images"]])
    return rows


def test_center_crop_and_area_resize_match_the_shared_preprocessing(data_dir, real128):
    image = real128["images"][0]
    padded = np.pad(image, ((10, 10), (0, 0)))  # taller than wide
    assert np.array_equal(center_crop(padded), image)
    half = resize_area(image, 64)
    # BOX filter at an exact factor 2 is the mean of each 2x2 block
    blocks = image.reshape(64, 2, 64, 2).astype(np.float64).mean(axis=(1, 3))
    assert np.abs(half.astype(np.float64) - blocks).max() <= 1.0
    assert np.array_equal(resize_area(image, 128), image)
    # the shared 64 px files were area-resized from the same 224 px sources as the 128 px files
    raw128, raw64 = kermany_rows(data_dir, 2, size=128), kermany_rows(data_dir, 2, size=64)
    assert list(raw128["filename"]) == list(raw64["filename"])
    for big, small in zip(raw128["images"], raw64["images"]):
        assert np.abs(resize_area(big, 64).astype(int) - small).mean() < 1.5


def test_png_jpeg_dicom_decode_to_the_same_image(tmp_path, real128):
    image = real128["images"][1]
    Image.fromarray(image).save(tmp_path / "a.png")
    Image.fromarray(image).save(tmp_path / "a.jpeg", quality=95)
    Image.fromarray(np.stack([image] * 3, axis=-1)).save(tmp_path / "rgb.png")
    Image.fromarray(image.astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG
    write_dicom(tmp_path / "m2.dcm", image, "MONOCHROME2")
    write_dicom(tmp_path / "m1.dcm", image, "MONOCHROME1")
    assert np.array_equal(read_image(tmp_path / "a.png"), image)
    assert np.array_equal(read_image(tmp_path / "rgb.png"), image)
    assert np.abs(read_image(tmp_path / "deep.png").astype(int) - image).max() <= 1
    assert np.abs(read_image(tmp_path / "a.jpeg").astype(int) - image).mean() < 3
    # MONOCHROME1 is stored inverted and must come back with bright = dense
    assert np.array_equal(read_image(tmp_path / "m2.dcm"), image)
    assert np.array_equal(read_image(tmp_path / "m1.dcm"), image)


def test_dicom_window_is_applied(tmp_path, real128):
    image = real128["images"][2]
    # a narrow window around the middle grey levels saturates the rest
    write_dicom(tmp_path / "w.dcm", image, "MONOCHROME2", window=(128 * 16, 64 * 16))
    out = read_image(tmp_path / "w.dcm")
    assert out.min() == 0 and out.max() == 255
    assert (out == 0).mean() > (image == 0).mean() and (out == 255).mean() > (image == 255).mean()
    assert np.corrcoef(out.ravel(), image.ravel())[0, 1] > 0.8


def test_image_folder_loads_kermany_layout(tmp_path, data_dir):
    rows = write_kermany_folder(tmp_path / "chest_xray", data_dir, per_class=3, dicom_every=4)
    dataset = load_image_folder(tmp_path / "chest_xray", size=64, patient_regex=KERMANY_PATIENT_REGEX, workers=2)
    assert len(dataset) == 12 and dataset.images.shape == (12, 64, 64)
    assert dataset.class_names == ("normal", "pneumonia") and dataset.label_names == ("pneumonia",)
    assert sorted(set(dataset.meta["split"])) == ["test", "train"]
    by_name = {name: i for i, name in enumerate(dataset.meta["filename"].str.split("/").str[-1].str.rsplit(".", n=1).str[0])}
    for i, filename in enumerate(rows["filename"]):
        j = by_name[filename.rsplit(".", 1)[0]]
        assert dataset.labels[j, 0] == rows["labels"][i]
        # Kermany numbers children per official folder: the id is namespaced by it (train/person1, test/person1)
        assert dataset.meta["patient_id"][j] == f"{rows['official_split'][i]}/{rows['patient_id'][i]}"
        assert dataset.meta["split"][j] == rows["official_split"][i]
        expected = resize_area(rows["images"][i], 64)  # the white padding was cropped away
        assert np.abs(dataset.images[j].astype(int) - expected).mean() < 2.5
    assert (dataset.meta["filename"].str.endswith(".dcm")).sum() == 3


def test_image_folder_native_size_and_mismatched_sizes(tmp_path, real128):
    for k, image in enumerate(real128["images"][:4]):
        folder = tmp_path / "train" / ("NORMAL" if k % 2 else "PNEUMONIA")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"img{k}.png")
    native = load_image_folder(tmp_path, size=None)
    assert native.images.shape == (4, 128, 128)
    Image.fromarray(real128["images"][4][:, :100]).save(tmp_path / "train" / "NORMAL" / "img9.png")
    with pytest.raises(CxrganError, match=r"img9\.png.*not square|img9\.png.*differs"):
        load_image_folder(tmp_path, size=None)
    assert len(load_image_folder(tmp_path, size=32)) == 5


def test_corrupt_and_unreadable_images_name_the_file(tmp_path, real128):
    good = tmp_path / "train" / "NORMAL" / "good.png"
    good.parent.mkdir(parents=True)
    Image.fromarray(real128["images"][0]).save(good)
    (tmp_path / "train" / "PNEUMONIA").mkdir()
    Image.fromarray(real128["images"][1]).save(tmp_path / "train" / "PNEUMONIA" / "p.png")
    truncated = tmp_path / "train" / "PNEUMONIA" / "truncated.jpeg"
    Image.fromarray(real128["images"][2]).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(CxrganError, match="truncated.jpeg"):
        load_image_folder(tmp_path, size=32, workers=2)
    truncated.unlink()
    (tmp_path / "train" / "PNEUMONIA" / "bad.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(CxrganError, match="bad.dcm"):
        load_image_folder(tmp_path, size=32)
    with pytest.raises(CxrganError, match="missing.png"):
        load_many([good, tmp_path / "missing.png"], 32)


def test_folder_errors(tmp_path, real128):
    with pytest.raises(CxrganError, match="no such folder"):
        load_image_folder(tmp_path / "absent")
    (tmp_path / "train" / "NORMAL").mkdir(parents=True)
    Image.fromarray(real128["images"][0]).save(tmp_path / "train" / "NORMAL" / "a.png")
    with pytest.raises(CxrganError, match="at least two class folders"):
        load_image_folder(tmp_path)
    (tmp_path / "train" / "PNEUMONIA").mkdir()
    with pytest.raises(CxrganError, match=r"\['PNEUMONIA'\] hold no images"):
        load_image_folder(tmp_path)
