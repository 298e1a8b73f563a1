"""NIH ChestX-ray14 and CheXpert CSV layouts, built in tmp_path from real shared images and NIH labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _data_helpers import nih_rows, write_chexpert_fixture, write_nih_fixture
from cxrgan.data import CHEXPERT_FINDINGS, NIH_FINDINGS, load_chexpert, load_chexpert_raw, load_nih
from cxrgan.data.leakage import check_patient_disjoint
from cxrgan.errors import CxrganError


@pytest.fixture(scope="module")
def nih_root(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("nih")
    write_nih_fixture(root, data_dir, n_patients=30)
    return root


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory, data_dir):
    return write_chexpert_fixture(tmp_path_factory.mktemp("chexpert"), data_dir)


def test_nih_loads_real_labels_and_images(nih_root, data_dir):
    table = pd.read_csv(nih_root / "Data_Entry_2017.csv")
    dataset = load_nih(nih_root, size=32, random_state=0)
    assert len(dataset) == len(table) and dataset.images.shape[1:] == (32, 32)
    assert dataset.label_names == NIH_FINDINGS
    rows = nih_rows(data_dir)
    source = {name: i for i, name in enumerate(rows["filename"])}
    for j, filename in enumerate(dataset.meta["filename"]):
        assert np.array_equal(dataset.labels[j], rows["findings"][source[filename]])
    no_finding = (dataset.meta["finding_labels"] == "No Finding").to_numpy()
    assert no_finding.any() and (dataset.labels[no_finding] == 0).all()
    assert dataset.meta["patient_id"].str.fullmatch(r"\d{8}").all()
    check_patient_disjoint(dataset.meta)
    assert set(dataset.meta["split"]) == {"train", "val", "test"}
    again = load_nih(nih_root, size=32, random_state=0)
    assert list(again.meta["split"]) == list(dataset.meta["split"])  # seeded


def test_nih_official_split_lists(nih_root, tmp_path):
    table = pd.read_csv(nih_root / "Data_Entry_2017.csv")
    patients = sorted(set(table["Patient ID"]))
    test_patients = set(patients[::4])
    is_test = table["Patient ID"].isin(test_patients)
    (nih_root / "test_list.txt").write_text("\n".join(table["Image Index"][is_test]) + "\n")
    (nih_root / "train_val_list.txt").write_text("\n".join(table["Image Index"][~is_test]) + "\n")
    try:
        dataset = load_nih(nih_root, size=16, val_fraction=0.2)
    finally:
        (nih_root / "test_list.txt").unlink()
        (nih_root / "train_val_list.txt").unlink()
    listed_test = set(table["Image Index"][is_test])
    assert set(dataset.meta.loc[dataset.meta["split"] == "test", "filename"]) == listed_test
    assert (dataset.meta["split"] == "val").any()
    check_patient_disjoint(dataset.meta)


def test_nih_bad_input(nih_root, tmp_path):
    table = pd.read_csv(nih_root / "Data_Entry_2017.csv")
    bad = table.copy()
    bad.loc[3, "Finding Labels"] = "Effusion|Pneumonitis"
    bad.to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    with pytest.raises(CxrganError, match=r"row 5 .*'Pneumonitis'"):
        load_nih(nih_root, csv=tmp_path / "Data_Entry_2017.csv")
    table.drop(columns=["Patient ID"]).to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    with pytest.raises(CxrganError, match=r"missing column\(s\) \['Patient ID'\]"):
        load_nih(nih_root, csv=tmp_path / "Data_Entry_2017.csv")
    extra = pd.concat([table, table.iloc[[0]].assign(**{"Image Index": "99999999_000.png"})])
    extra.to_csv(tmp_path / "Data_Entry_2017.csv", index=False)
    with pytest.raises(CxrganError, match=r"99999999_000.png: image file not found"):
        load_nih(nih_root, csv=tmp_path / "Data_Entry_2017.csv", size=16)
    assert len(load_nih(nih_root, csv=tmp_path / "Data_Entry_2017.csv", size=16, missing="skip")) == len(table)


def test_chexpert_policies_views_and_raw_values(chexpert_root):
    raw_table = pd.read_csv(chexpert_root / "train.csv")
    zeros, raw = load_chexpert_raw(chexpert_root, size=32, uncertainty="zeros")
    ones = load_chexpert(chexpert_root, size=32, uncertainty="ones")
    ignore = load_chexpert(chexpert_root, size=32, uncertainty="ignore", blank="ignore")
    assert zeros.label_names == CHEXPERT_FINDINGS
    # frontal only by default: 50 patients, one frontal image each
    assert len(zeros) == 50 and set(zeros.meta["view"]) == {"AP", "PA"}
    uncertain = raw == -1
    assert uncertain.any() and np.isnan(raw).any()
    assert (zeros.labels[uncertain] == 0).all() and (ones.labels[uncertain] == 1).all()
    assert np.isnan(ignore.labels[uncertain]).all() and np.isnan(ignore.labels[np.isnan(raw)]).all()
    assert (zeros.labels[np.isnan(raw)] == 0).all()  # blank read as negative by default
    edema = CHEXPERT_FINDINGS.index("Edema")
    frontal_train = raw_table[raw_table["Frontal/Lateral"] == "Frontal"]
    assert int((raw[:, edema] == -1).sum()) == int((frontal_train["Edema"] == -1).sum())
    # valid.csv is the official test set; train.csv is split by patient into train and val
    assert (zeros.meta["split"] == "test").sum() == 10
    assert zeros.meta["filename"][zeros.meta["split"] == "test"].str.contains("/valid/").all()
    assert set(zeros.meta["split"]) == {"train", "val", "test"}
    assert zeros.meta["patient_id"].str.fullmatch(r"patient\d{5}").all()
    # the split does not depend on the uncertainty policy
    assert list(ones.meta["split"]) == list(zeros.meta["split"]) == list(ignore.meta["split"])
    check_patient_disjoint(zeros.meta)
    with_laterals = load_chexpert(chexpert_root, size=16, frontal_only=False)
    assert len(with_laterals) == 50 + 13 and (with_laterals.meta["view"] == "Lateral").sum() == 13
    check_patient_disjoint(with_laterals.meta)
    pa_only = load_chexpert(chexpert_root, size=16, views=("PA",))
    assert set(pa_only.meta["view"]) == {"PA"} and len(pa_only) == 33
    only_train = load_chexpert(chexpert_root / "train.csv", size=16)
    assert len(only_train) == 40 and set(only_train.meta["split"]) == {"train", "val", "test"}


def test_chexpert_bad_input(chexpert_root, tmp_path):
    table = pd.read_csv(chexpert_root / "train.csv", dtype=str, keep_default_na=False)
    csv = chexpert_root / "bad.csv"
    try:
        bad = table.copy()
        bad.loc[6, "Pneumonia"] = "2.0"
        bad.to_csv(csv, index=False)
        with pytest.raises(CxrganError, match=r"row 8 .*'Pneumonia' has value '2.0'"):
            load_chexpert(csv)
        bad.loc[6, "Pneumonia"] = "maybe"
        bad.to_csv(csv, index=False)
        with pytest.raises(CxrganError, match=r"row 8 .*'maybe'"):
            load_chexpert(csv)
        table.drop(columns=["Edema", "Fracture"]).to_csv(csv, index=False)
        with pytest.raises(CxrganError, match=r"missing column\(s\) \['Edema', 'Fracture'\]"):
            load_chexpert(csv)
        moved = table.copy()
        moved.loc[0, "Path"] = "CheXpert-v1.0-small/train/patient99999/study1/view1_frontal.jpg"
        moved.to_csv(csv, index=False)
        with pytest.raises(CxrganError, match=r"patient99999/study1/view1_frontal.jpg: image file not found"):
            load_chexpert(csv, size=16)
        assert len(load_chexpert(csv, size=16, missing="skip")) == 39
    finally:
        csv.unlink(missing_ok=True)
    with pytest.raises(CxrganError, match="unknown uncertainty policy 'maybe'"):
        load_chexpert(chexpert_root, uncertainty="maybe")
