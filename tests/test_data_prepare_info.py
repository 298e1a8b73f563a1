"""``prepare`` (any layout -> compact .npz, atomically) and ``info`` (plain-text tables) on real-image fixtures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _data_helpers import write_chexpert_fixture, write_kermany_folder, write_nih_fixture
from cxrgan.data import (
    CHEXPERT_FINDINGS,
    detect_layout,
    info,
    load_chexpert,
    load_chexpert_raw,
    load_nih,
    load_npz,
    prepare,
)
from cxrgan.data.images import resize_stack
from cxrgan.data.leakage import check_patient_disjoint
from cxrgan.data.npz import read_split_method
from cxrgan.errors import CxrganError


@pytest.fixture(scope="module")
def kermany_folder(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("kermany") / "chest_xray"
    write_kermany_folder(root, data_dir, per_class=6, dicom_every=5)
    return root


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory, data_dir):
    return write_chexpert_fixture(tmp_path_factory.mktemp("chexpert"), data_dir)


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("nih")
    write_nih_fixture(root, data_dir, n_patients=25)
    return root


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_prepare_image_folder(kermany_folder, tmp_path):
    assert detect_layout(kermany_folder) == "folders"
    out = prepare(kermany_folder, 32, tmp_path / "kermany_32.npz", workers=2, progress=False, val_fraction=0.3)
    dataset = load_npz(out)
    assert dataset.images.shape == (24, 32, 32) and dataset.class_names == ("normal", "pneumonia")
    # the source has train and test only: val was carved from train patients, test kept as it was
    counts = dataset.meta["split"].value_counts()
    assert counts["test"] == 12 and counts["val"] >= 2 and counts["train"] + counts["val"] == 12
    # Kermany ids detected, namespaced by their official folder (train/person1 and test/person1 are two children)
    assert dataset.meta["patient_id"].str.match(r"(train|test)/(person\d+|IM-\d+|NORMAL2-IM-\d+)").all()
    check_patient_disjoint(dataset.meta)
    text = info(kermany_folder)
    assert "image folder" in text and "normal" in text and "pneumonia" in text and "1.00:1" in text
    # the file records how its split was made: official test, val carved by patient -> patient-grouped
    assert read_split_method(out) == "patient" and "split: patient-grouped" in info(out)
    every_split = prepare(kermany_folder, 32, tmp_path / "official.npz", progress=False, val_fraction=0.0)
    assert read_split_method(every_split) == "official" and "split: official folders" in info(every_split)


def test_prepare_medmnist_and_compact_files(tmp_path, data_dir, nih_path):
    with np.load(data_dir / "pneumoniamnist" / "pneumoniamnist_28.npz") as archive:
        source = {k: archive[k] for k in ("images", "labels", "split")}
    arrays = {}
    for split_name in ("train", "val", "test"):
        mask = source["split"] == split_name
        arrays[f"{split_name}_images"] = source["images"][mask][:50]
        arrays[f"{split_name}_labels"] = source["labels"][mask][:50, None].astype(np.uint8)
    np.savez(tmp_path / "pneumoniamnist.npz", **arrays)
    assert detect_layout(tmp_path / "pneumoniamnist.npz") == "medmnist"
    out = load_npz(prepare(tmp_path / "pneumoniamnist.npz", 14, tmp_path / "mnist_14.npz", progress=False))
    assert out.images.shape == (150, 14, 14) and out.class_names == ("normal", "pneumonia")
    assert np.array_equal(out.split("val").images, resize_stack(arrays["val_images"], 14))
    assert detect_layout(nih_path) == "compact"
    small = prepare(nih_path, 32, tmp_path / "nih_32.npz", progress=False)
    with np.load(nih_path) as before, np.load(small) as after:
        assert set(before.files) == set(after.files)
        assert after["images"].shape == (649, 32, 32)
        for key in before.files:
            if key != "images":
                assert np.array_equal(before[key], after[key]), key
    text = info(tmp_path / "pneumoniamnist.npz")
    assert "MedMNIST" in text and "normal" in text


def test_prepare_nih_folder(nih_root, tmp_path):
    assert detect_layout(nih_root) == "nih" and detect_layout(nih_root / "Data_Entry_2017.csv") == "nih"
    out = prepare(nih_root, 32, tmp_path / "nih.npz", progress=False, random_state=0)
    stored = load_npz(out, target="findings")
    direct = load_nih(nih_root, size=32, fractions=(0.8, 0.1, 0.1), random_state=0)
    assert np.array_equal(stored.images, direct.images) and np.array_equal(stored.labels, direct.labels)
    assert list(stored.meta["split"]) == list(direct.meta["split"])
    binary = load_npz(out)  # abnormal = any finding
    assert np.array_equal(binary.labels[:, 0], (direct.labels == 1).any(axis=1))
    text = info(nih_root / "Data_Entry_2017.csv")
    assert "NIH ChestX-ray14" in text and "Effusion" in text and f"frontal rows ({len(direct)} of {len(direct)})" in text


def test_prepare_chexpert_keeps_raw_labels_for_any_policy(chexpert_root, tmp_path):
    assert detect_layout(chexpert_root) == "chexpert" and detect_layout(chexpert_root / "train.csv") == "chexpert"
    out = prepare(chexpert_root, 32, tmp_path / "chexpert.npz", progress=False)
    _, raw = load_chexpert_raw(chexpert_root, size=32)
    with np.load(out) as archive:
        stored = archive["findings"]
        assert (stored == -1).any() and np.isnan(stored).any()
        assert np.array_equal(np.isnan(stored), np.isnan(raw)) and np.array_equal(stored[~np.isnan(stored)], raw[~np.isnan(raw)])
    for policy in ("zeros", "ones", "ignore"):
        from_file = load_npz(out, target="findings", uncertainty=policy)
        direct = load_chexpert(chexpert_root, size=32, uncertainty=policy)
        assert np.array_equal(np.nan_to_num(from_file.labels, nan=-9), np.nan_to_num(direct.labels, nan=-9)), policy
        assert list(from_file.meta["split"]) == list(direct.meta["split"])
    binary = load_npz(out)
    no_finding = raw[:, CHEXPERT_FINDINGS.index("No Finding")] == 1
    assert no_finding.any() and (binary.labels[no_finding, 0] == 0).all()  # "No Finding" is not abnormal


def test_info_on_chexpert_csv_counts_every_label_state(chexpert_root):
    table = pd.read_csv(chexpert_root / "train.csv")
    text = info(chexpert_root / "train.csv")
    assert "CheXpert" in text and "rows: 50, patients: 40" in text
    assert "findings, frontal rows (40 of 50)" in text
    edema = table["Edema"]
    line = next(l for l in text.splitlines() if l.startswith("Edema"))
    n = len(table)
    for value in (int((edema == 1).sum()), int((edema == -1).sum()), int((edema == 0).sum()), int(edema.isna().sum())):
        assert f"{value} ({100 * value / n:.1f}%)" in line
    both = info(chexpert_root)
    assert "train.csv" in both and "valid.csv" in both


def test_info_on_compact_files(kermany_path, nih_path):
    text = info(kermany_path)
    assert "train  4683      2561  1208 (25.8%)  3475 (74.2%)     2.88:1" in text
    # person ids are numbered per official folder: namespaced, the 2561 + 285 + 427 children are all distinct
    assert "patients: 3273" in text and "more than one split" not in text
    nih_text = info(nih_path)
    assert "Hernia" in nih_text and "1 (0.2%)" in nih_text and "uncertain" in nih_text


def test_prepare_failure_leaves_no_output(kermany_folder, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    for split_dir in kermany_folder.iterdir():
        for class_dir in split_dir.iterdir():
            (broken / split_dir.name / class_dir.name).mkdir(parents=True)
            for f in class_dir.iterdir():
                (broken / split_dir.name / class_dir.name / f.name).write_bytes(f.read_bytes())
    victim = sorted((broken / "test" / "PNEUMONIA").iterdir())[-1]
    victim.write_bytes(victim.read_bytes()[: len(victim.read_bytes()) // 3])
    out_dir = tmp_path / "out"
    with pytest.raises(CxrganError, match=victim.name):
        prepare(broken, 32, out_dir / "x.npz", workers=2, progress=False)
    assert not (out_dir / "x.npz").exists()
    # a failure while writing: the temporary file is removed and nothing looks complete
    def failing_savez(f, **arrays):
        f.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        prepare(kermany_folder, 32, out_dir / "y.npz", progress=False, val_fraction=0.3)
    assert not (out_dir / "y.npz").exists() and _leftovers(out_dir) == []


def test_prepare_and_info_reject_bad_sources(tmp_path, kermany_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CxrganError, match="unrecognised source"):
        prepare(tmp_path / "notes.txt", 32, tmp_path / "o.npz")
    with pytest.raises(CxrganError, match="no such file"):
        prepare(tmp_path / "absent", 32, tmp_path / "o.npz")
    with pytest.raises(CxrganError, match="must be a .npz"):
        prepare(kermany_path, 32, tmp_path / "o.h5")
    with pytest.raises(CxrganError, match="unknown layout"):
        prepare(kermany_path, 32, tmp_path / "o.npz", layout="dicomdir")
    pd.DataFrame({"a": [1], "b": [2]}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(CxrganError, match="other.csv: not an NIH"):
        info(tmp_path / "other.csv")


def test_prepare_folder_without_splits_assigns_patient_level_splits(kermany_folder, tmp_path):
    flat = tmp_path / "flat"
    for split_dir in kermany_folder.iterdir():
        for class_dir in split_dir.iterdir():
            (flat / class_dir.name).mkdir(parents=True, exist_ok=True)
            for f in class_dir.iterdir():
                (flat / class_dir.name / f.name).write_bytes(f.read_bytes())
    out = prepare(flat, 16, tmp_path / "flat.npz", fractions=(0.5, 0.25, 0.25), random_state=0, progress=False)
    dataset = load_npz(out)
    assert len(dataset) == 24 and set(dataset.meta["split"]) == {"train", "val", "test"}
    check_patient_disjoint(dataset.meta)
    for name in ("train", "val", "test"):
        assert set(dataset.split(name).binary_targets()) == {0, 1}
