"""Seeded patient-level stratified splits, nested fractions and induced imbalance on the real Kermany and NIH sets."""

from __future__ import annotations

import numpy as np
import pytest

from cxrgan.data import (
    assign_splits,
    fraction_subset,
    from_arrays,
    induce_imbalance,
    load_npz,
    nested_class_subsets,
    nested_fractions,
    resplit_rows,
)
from cxrgan.data.leakage import check_patient_disjoint
from cxrgan.errors import CxrganError


@pytest.fixture(scope="module")
def nih_findings(nih_path):
    return load_npz(nih_path, target="findings")


def _positive_share(dataset):
    return float(np.nanmean(dataset.labels[:, 0]))


def test_assign_splits_is_patient_level_stratified_and_seeded(kermany):
    split = assign_splits(kermany, (0.8, 0.1, 0.1), random_state=0)
    check_patient_disjoint(split.meta)
    sizes = split.meta["split"].value_counts(normalize=True)
    assert sizes["train"] == pytest.approx(0.8, abs=0.01) and sizes["test"] == pytest.approx(0.1, abs=0.01)
    overall = _positive_share(kermany)
    for name in ("train", "val", "test"):
        assert _positive_share(split.split(name)) == pytest.approx(overall, abs=0.03)
    assert split.images is kermany.images  # no copy of the images
    same = assign_splits(kermany, (0.8, 0.1, 0.1), random_state=np.random.default_rng(0))
    other = assign_splits(kermany, (0.8, 0.1, 0.1), random_state=1)
    assert list(same.meta["split"]) == list(split.meta["split"])
    assert list(other.meta["split"]) != list(split.meta["split"])


def test_assign_splits_multilabel_spreads_rare_findings(nih_findings):
    split = assign_splits(nih_findings, (0.7, 0.15, 0.15), random_state=0)
    check_patient_disjoint(split.meta)
    test = split.split("test")
    # findings seen in at least 30 patients get roughly their share of positives in test (649 rows, 185
    # patients, some with 30+ images: exact shares are impossible at patient level)
    for j, name in enumerate(nih_findings.label_names):
        positive = nih_findings.labels[:, j] == 1
        if nih_findings.meta["patient_id"][positive].nunique() >= 30:
            share = test.positives()[j] / positive.sum()
            assert 0.05 < share < 0.3, name
    assert (split.split("train").positives() > 0).sum() >= 13


def test_rows_without_patient_ids_are_their_own_groups(data_dir):
    mnist = load_npz(data_dir / "pneumoniamnist" / "pneumoniamnist_28.npz")
    assert (mnist.meta["patient_id"] == "").all()
    split = assign_splits(mnist, (0.6, 0.2, 0.2), random_state=3)
    assert split.meta["split"].value_counts()["val"] == pytest.approx(0.2 * len(mnist), abs=2)


def test_resplit_rows_carves_val_from_train_only(kermany):
    test_before = (kermany.meta["split"] == "test").to_numpy()
    carved = resplit_rows(kermany, ~test_before, (0.85, 0.15, 0.0), random_state=0)
    assert ((carved.meta["split"] == "test").to_numpy() == test_before).all()
    assert (carved.meta["split"] == "val").sum() == pytest.approx(0.15 * (~test_before).sum(), rel=0.05)


def test_nested_fractions_are_nested_stratified_and_patient_level(kermany):
    train = kermany.split("train")
    subsets = nested_fractions(train, (0.01, 0.1, 0.5, 1.0), random_state=0)
    assert list(subsets) == [0.01, 0.1, 0.5, 1.0]
    files = {f: set(s.meta["filename"]) for f, s in subsets.items()}
    assert files[0.01] <= files[0.1] <= files[0.5] <= files[1.0] and len(files[1.0]) == len(train)
    overall = _positive_share(train)
    for fraction, subset in subsets.items():
        assert len(subset) == pytest.approx(fraction * len(train), abs=5)
        assert _positive_share(subset) == pytest.approx(overall, abs=0.08 if fraction == 0.01 else 0.02)
        # a patient is either fully inside a subset or fully outside
        inside = set(subset.meta["patient_id"])
        assert (train.meta["patient_id"].isin(inside).sum()) == len(subset)
    again = fraction_subset(train, 0.1, random_state=0)
    assert set(again.meta["filename"]) == files[0.1]


def test_nested_fractions_multilabel(nih_findings):
    subsets = nested_fractions(nih_findings, (0.2, 0.6), random_state=0)
    assert set(subsets[0.2].meta["filename"]) <= set(subsets[0.6].meta["filename"])
    assert len(subsets[0.2]) >= 0.2 * len(nih_findings)


def test_empty_class_after_subsetting_is_an_error(kermany_small):
    train = kermany_small.split("train")  # 40 normal, 120 pneumonia
    normals = np.flatnonzero(train.binary_targets() == 0)
    one_normal = train.subset(np.r_[normals[:1], np.flatnonzero(train.binary_targets() == 1)])
    with pytest.raises(CxrganError, match="'normal'"):
        nested_fractions(one_normal, (0.05,), random_state=0)
    with pytest.raises(CxrganError, match=r"split '(val|test)' has no 'normal' rows"):
        assign_splits(one_normal, (0.8, 0.1, 0.1), random_state=0)
    with pytest.raises(CxrganError, match="fractions must lie in"):
        fraction_subset(train, 1.5)
    with pytest.raises(CxrganError, match="summing to 1"):
        assign_splits(train, (0.8, 0.1))


def test_induce_imbalance_counts_and_ratios(kermany):
    train = kermany.split("train")  # 1208 normal, 3475 pneumonia
    reduced = induce_imbalance(train, {1: 1460}, random_state=0)
    y = reduced.binary_targets()
    assert (y == 0).sum() == 1208 and (y == 1).sum() == 1460
    by_name = induce_imbalance(train, {"normal": 300}, random_state=0)
    assert (by_name.binary_targets() == 0).sum() == 300
    ratio = induce_imbalance(train, 10.0, random_state=0).binary_targets()
    assert (ratio == 1).sum() == 3475 and (ratio == 0).sum() == round(3475 / 10)
    balanced = induce_imbalance(train, 1.0, random_state=0).binary_targets()
    assert (balanced == 1).sum() == (balanced == 0).sum() == 1208
    # kept rows are real rows of the original, in order
    kept = by_name.meta["filename"].to_numpy()
    assert np.array_equal(kept, train.meta["filename"][train.meta["filename"].isin(kept)].to_numpy())
    assert list(induce_imbalance(train, 3.0, random_state=5).meta["filename"]) == list(
        induce_imbalance(train, 3.0, random_state=5).meta["filename"]
    )
    with pytest.raises(CxrganError, match="asked for 4385 'normal' rows but only 1208 exist"):
        induce_imbalance(train, {0: 4385}, random_state=0)
    with pytest.raises(CxrganError, match="unknown class 'covid'"):
        induce_imbalance(train, {"covid": 10})
    with pytest.raises(CxrganError, match="ratio must be >= 1"):
        induce_imbalance(train, 0.5)


def test_nested_class_subsets_are_nested_patient_grouped_exact_and_seeded(kermany, nih_path):
    train = kermany.split("train")
    normals = train.binary_targets() == 0
    counts = (400, 10, 25, 50, 100)
    subsets = nested_class_subsets(train, counts, class_value=1, random_state=3)
    assert list(subsets) == list(counts)
    patients = train.meta["patient_id"]
    previous = set()
    for count in sorted(counts):
        subset = subsets[count]
        y = subset.binary_targets()
        assert (y == 1).sum() == count  # exact: Kermany has single-image patients to fill every gap
        assert (y == 0).sum() == normals.sum()  # every row of the other class is kept
        chosen = set(subset.meta["filename"][y == 1])
        assert previous <= chosen  # nested: the 25 rows are inside the 50 rows ...
        previous = chosen
        # grouped by patient: a patient's pneumonia rows are all in or all out
        in_subset = patients[train.meta["filename"].isin(chosen)].unique()
        all_rows = train.meta["filename"][patients.isin(in_subset) & ~normals].to_numpy()
        assert set(all_rows) == chosen
    # several-image patients are drawn too, not only single-image ones
    largest = subsets[400].meta.loc[subsets[400].binary_targets() == 1, "patient_id"].value_counts()
    assert largest.max() > 1
    again = nested_class_subsets(train, counts, class_value=1, random_state=3)
    other = nested_class_subsets(train, counts, class_value=1, random_state=4)
    assert list(again[25].meta["filename"]) == list(subsets[25].meta["filename"])
    assert list(other[25].meta["filename"]) != list(subsets[25].meta["filename"])
    # the other class, on another file: the normals of NIH's adult pneumonia set (patients with several images)
    nih = load_npz(nih_path.parent.parent / "nih_pneumonia" / "nih_pneumonia_64.npz").split("train")
    small = nested_class_subsets(nih, (16, 60), class_value=0, random_state=0)
    assert [(s.binary_targets() == 0).sum() for s in small.values()] == [16, 60]
    assert (small[16].binary_targets() == 1).sum() == (nih.binary_targets() == 1).sum()
    with pytest.raises(CxrganError, match="a subset of 3476 'pneumonia' rows is impossible: the data hold 3475"):
        nested_class_subsets(train, (25, 3476), random_state=0)
    with pytest.raises(CxrganError, match="counts must lie in 1..3475"):
        nested_class_subsets(train, (0,), random_state=0)


def test_check_patient_disjoint_names_the_leak():
    images = np.zeros((4, 8, 8), np.uint8)
    leaky = from_arrays(images, [0, 1, 0, 1], ["pneumonia"], split=["train", "train", "test", "val"],
                        class_names=["normal", "pneumonia"], patient_id=["a", "b", "a", ""])
    with pytest.raises(CxrganError, match="1 patient\\(s\\) appear in more than one split \\(a in test/train\\)"):
        check_patient_disjoint(leaky.meta)
    assert check_patient_disjoint(leaky.meta, allow=True) == 1
