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


def _nih_user_folder(data_dir, root, per_class: int = 80) -> list[str]:
    """A user's folder as a new user has one: real adult NIH radiographs in two class folders, no split folders,
    files named by NIH's <patient>_<index>.png convention. Returns the file names."""
    with np.load(data_dir / "nih_pneumonia" / "nih_pneumonia_64.npz") as archive:
        images, labels, names = archive["images"], archive["labels"], archive["filename"]
    written = []
    for cls, folder in ((0, "No_findings"), (1, "Pneumonia")):
        (root / folder).mkdir(parents=True)
        for i in np.flatnonzero(labels == cls)[:per_class]:
            Image.fromarray(images[i]).save(root / folder / str(names[i]))
            written.append(str(names[i]))
    return written


def test_a_folder_without_patient_ids_is_split_per_image_said_and_refused(tmp_path, data_dir, capsys):
    from cxrgan.cli import main
    from cxrgan.data import load_npz

    folder = tmp_path / "xrays"
    names = _nih_user_folder(data_dir, folder)
    per_image = tmp_path / "per_image.npz"
    assert main(["data", "prepare", str(folder), "--size", "64", "--out", str(per_image)]) == 0
    warning = capsys.readouterr().err
    assert "no patient ids" in warning and "split is made per image" in warning
    assert r"--patient-id '^(\d{8})_\d{3}'" in warning  # the NIH convention is recognised and offered
    assert main(["data", "info", str(per_image)]) == 0
    assert "split: per image, patients unknown" in capsys.readouterr().out
    compare = ["compare", str(per_image), "--methods", "none", "--seeds", "1", "--dry-run", "--out", str(tmp_path)]
    assert main(compare) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split was made per image with unknown patients" in err[0]
    assert "--allow-unknown-patients" in err[0] and r"--patient-id '^(\d{8})_\d{3}'" in err[0]
    assert len(load_npz(per_image, allow_unknown_patients=True)) == len(names)  # what --allow-unknown-patients does

    grouped = tmp_path / "grouped.npz"
    assert main(["data", "prepare", str(folder), "--size", "64", "--out", str(grouped),
                 "--patient-id", r"^(\d{8})_\d{3}"]) == 0
    assert "no patient ids" not in capsys.readouterr().err
    assert main(["data", "info", str(grouped)]) == 0
    assert "split: patient-grouped" in capsys.readouterr().out
    dataset = load_npz(grouped, allow_unknown_patients=False)
    splits = dataset.meta.groupby("patient_id")["split"].nunique()
    assert (splits == 1).all() and len(splits) < len(names)  # patients with several images, each in one split

    table = tmp_path / "patients.csv"
    table.write_text("filename,patient_id\n" + "".join(f"{n},{n[:8]}\n" for n in names))
    from_csv = tmp_path / "from_csv.npz"
    assert main(["data", "prepare", str(folder), "--size", "64", "--out", str(from_csv),
                 "--patient-csv", str(table)]) == 0
    assert (load_npz(from_csv).meta["split"].to_numpy() == dataset.meta["split"].to_numpy()).all()
