"""IRLbl, MeanIR, ML-ROS and ML-RUS (Charte et al. 2015) on hand-built label matrices, counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from cxrgan.data import info, load_npz
from cxrgan.data.label_imbalance import (
    check_percentage,
    imbalance_table,
    irlbl,
    label_counts,
    label_sets,
    mean_ir,
    ml_ros_rows,
    ml_rus_rows,
    row_budget,
)
from cxrgan.errors import CxrganError

A, B, C, D = np.eye(4, dtype=bool)


def rows(*blocks: tuple[np.ndarray, int]) -> np.ndarray:
    """Stack ``count`` copies of each label row, in order."""
    return np.concatenate([np.tile(row, (count, 1)) for row, count in blocks])


def test_irlbl_and_mean_ir_by_hand():
    # counts 12, 3, 2, 1 -> IRLbl 12/12, 12/3, 12/2, 12/1 = 1, 4, 6, 12; MeanIR = 23 / 4 = 5.75
    np.testing.assert_allclose(irlbl([12, 3, 2, 1]), [1, 4, 6, 12])
    assert mean_ir([12, 3, 2, 1]) == pytest.approx(5.75)
    # a label no row carries has no IRLbl and is left out of MeanIR: (1 + 4) / 2
    ratios = irlbl([8, 0, 2])
    assert np.isnan(ratios[1]) and ratios[2] == 4
    assert mean_ir([8, 0, 2]) == pytest.approx(2.5)


def test_label_sets_add_no_finding_and_treat_binary_classes_as_labels():
    labels = np.array([[1, 0], [0, 0], [np.nan, 0], [1, 1]], dtype=np.float32)
    matrix, names = label_sets(labels, ("Mass", "Nodule"))
    assert names == ("Mass", "Nodule", "no finding")
    # unknown is not carried, so row 2 (NaN, 0) has no positive finding
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [0, 0, 1], [0, 0, 1], [1, 1, 0]])
    assert label_sets(labels, ("Mass", "Nodule"), no_finding=False)[1] == ("Mass", "Nodule")
    # CheXpert has its own "No Finding" column: nothing is appended
    assert label_sets(labels, ("No Finding", "Edema"))[1] == ("No Finding", "Edema")
    # binary: the two classes are the labels, whatever no_finding says
    matrix, names = label_sets(np.array([[1], [0], [0]]), ("pneumonia",), no_finding=False, negative_name="normal")
    assert names == ("pneumonia", "normal")
    np.testing.assert_array_equal(matrix, [[1, 0], [0, 1], [0, 1]])
    np.testing.assert_array_equal(label_counts(labels), [[1, 2], [3, 1]])  # (negatives, positives), NaN skipped


def test_row_budget_and_percentage_checks():
    assert row_budget(18, 25) == 4  # floor(4.5): at most P % of the rows
    assert row_budget(16, 25) == 4 and row_budget(463, 25) == 115  # floor(115.75)
    assert check_percentage(100, "ml-ros") == 100.0
    for bad in (0, -5, 100.5, float("nan"), "many"):
        with pytest.raises(CxrganError, match=r"^ml-rus: the resampling percentage must lie in \(0, 100\], got "):
            check_percentage(bad, "ml-rus")


def test_ml_ros_clones_minority_bags_until_they_reach_mean_ir():
    # A x12, B x3, C x2, D x1 (single-label rows 0-11, 12-14, 15-16, 17). IRLbl 1, 4, 6, 12, MeanIR 5.75:
    # minority labels C and D. P = 25 % of 18 rows -> at most 4 clones.
    matrix = rows((A, 12), (B, 3), (C, 2), (D, 1))
    clones = ml_ros_rows(matrix, 25, np.random.default_rng(0))
    # round 1: C -> 3 rows, IRLbl 12/3 = 4 <= 5.75, C leaves; D -> 2 rows, IRLbl 6 > 5.75, D stays
    # round 2: D -> 3 rows, IRLbl 4 <= 5.75, D leaves. No bag left: 3 clones, under the budget of 4.
    assert len(clones) == 3
    assert set(clones[:1]) <= {15, 16} and set(clones[1:]) == {17}
    grown = matrix[np.r_[np.arange(18), clones]].sum(axis=0)
    np.testing.assert_array_equal(grown, [12, 3, 3, 3])
    # P = 10 % -> floor(1.8) = 1 clone: round 1 stops after C's clone
    clones = ml_ros_rows(matrix, 10, np.random.default_rng(0))
    assert len(clones) == 1 and clones[0] in (15, 16)


def test_ml_ros_tests_a_bag_only_after_its_own_clone():
    # A x12, B x3, one row carrying C and D (row 15). IRLbl 1, 4, 12, 12; MeanIR 29/4 = 7.25; minority C and D.
    matrix = rows((A, 12), (B, 3), (C | D, 1))
    clones = ml_ros_rows(matrix, 25, np.random.default_rng(0))
    # C clones row 15 -> C = D = 2, IRLbl 6 <= 7.25, C leaves. D is also at 6 now, but ML-ROS checks a bag
    # after its own clone: D clones row 15 -> C = D = 3 and leaves. 2 clones.
    np.testing.assert_array_equal(clones, [15, 15])


def test_ml_rus_removes_majority_rows_and_keeps_minority_rows():
    # A-only x10 (rows 0-9), A+C x2 (10-11), B-only x3 (12-14), D-only x1 (15); N = 16.
    # Counts A 12, B 3, C 2, D 1 -> IRLbl 1, 4, 6, 12, MeanIR 5.75: majority A and B, minority C and D.
    # Rows carrying C or D (10, 11, 15) are never removed.
    matrix = rows((A, 10), (A | C, 2), (B, 3), (D, 1))
    removed = ml_rus_rows(matrix, 25, np.random.default_rng(0))
    # P = 25 % -> 4 removals. Round 1: A -> 11 (IRLbl 1); B -> 2 (11/2 = 5.5 < 5.75, stays).
    # Round 2: A -> 10; B -> 1 (10/1 = 10 >= 5.75, leaves). Budget spent.
    assert len(removed) == 4
    assert sorted(r for r in removed if r >= 12) == sorted(removed[[1, 3]]) and len(set(removed)) == 4
    assert all(r < 10 for r in removed[[0, 2]])
    np.testing.assert_array_equal(np.delete(matrix, removed, axis=0).sum(axis=0), [10, 1, 2, 1])
    # P = 50 % -> 8 removals: after round 2 only A is in play and loses 4 more A-only rows -> A = 6
    removed = ml_rus_rows(matrix, 50, np.random.default_rng(1))
    np.testing.assert_array_equal(np.delete(matrix, removed, axis=0).sum(axis=0), [6, 1, 2, 1])
    # P = 100 %: A's bag runs out of unprotected rows (A = 2, the A+C rows): 12 removals, not 16; nothing emptied
    removed = ml_rus_rows(matrix, 100, np.random.default_rng(2))
    assert len(removed) == 12 and set(range(10)) <= set(removed.tolist())
    np.testing.assert_array_equal(np.delete(matrix, removed, axis=0).sum(axis=0), [2, 1, 2, 1])


def test_ml_rus_that_would_empty_a_label_is_refused():
    # A x6, B x2, D x1: IRLbl 1, 3, 6, MeanIR 10/3; majority A and B, D protected. A is the commonest label, so its
    # IRLbl stays 1 and it stays in play: B leaves at 1 row after round 1, then A loses a row per round, and with
    # P = 100 % (9 removals) the 7th removal would take A's last row.
    matrix = rows((A, 6), (B, 2), (D, 1))[:, [0, 1, 3]]
    with pytest.raises(CxrganError, match=r"^ml-rus: removing 100 % of the rows would leave 'A' without a row"):
        ml_rus_rows(matrix, 100, np.random.default_rng(0), ("A", "B", "D"))
    removed = ml_rus_rows(matrix, 50, np.random.default_rng(0), ("A", "B", "D"))  # 4 removals: A 3, B 1
    np.testing.assert_array_equal(np.delete(matrix, removed, axis=0).sum(axis=0), [3, 1, 1])


def test_resampling_is_reproducible_and_seeded():
    matrix = rows((A, 40), (A | B, 5), (B, 20), (C, 4), (D, 2))
    np.testing.assert_array_equal(ml_ros_rows(matrix, 25, np.random.default_rng(5)),
                                  ml_ros_rows(matrix, 25, np.random.default_rng(5)))
    assert not np.array_equal(ml_rus_rows(matrix, 25, np.random.default_rng(5)),
                              ml_rus_rows(matrix, 25, np.random.default_rng(6)))


def test_imbalance_table_before_and_after():
    matrix = rows((A, 12), (B, 3), (C, 2), (D, 1))
    grown = matrix[np.r_[np.arange(18), [15, 17, 17]]]
    table = imbalance_table(matrix, ("A", "B", "C", "D"), ml_ros=grown)
    assert list(table["label"]) == ["A", "B", "C", "D", "MeanIR", "rows"]
    assert list(table["before IRLbl"]) == ["1.00", "4.00", "6.00", "12.00", "5.75", ""]
    assert list(table["ml_ros n"])[:4] == [12, 3, 3, 3] and table["ml_ros n"].iloc[-1] == 21
    assert table["ml_ros IRLbl"].iloc[4] == "3.25"  # (1 + 4 + 4 + 4) / 4


def test_nih_ml_rus_keeps_three_quarters_of_the_rows(nih_path):
    """The issue's measurement: ML-RUS at P = 25 % against the powerset's 58 of 463 rows."""
    train = load_npz(nih_path, target="findings").split("train")
    matrix, names = label_sets(train.labels, train.label_names)
    assert len(train) == 463 and names[-1] == "no finding"
    for seed in range(5):
        removed = ml_rus_rows(matrix, 25, np.random.default_rng(seed), names)
        assert len(train) - len(removed) == 348 >= 0.75 * 463  # floor(115.75) = 115 rows removed
        kept = np.delete(matrix, removed, axis=0).sum(axis=0)
        minority = irlbl(matrix.sum(axis=0)) > mean_ir(matrix.sum(axis=0))
        np.testing.assert_array_equal(kept[minority], matrix.sum(axis=0)[minority])  # minority rows all kept


def test_data_info_prints_irlbl_and_mean_ir_before_and_after(nih_path, kermany_path):
    text = info(nih_path)
    block = text[text.index("label imbalance, training rows"):]
    assert "before and after ml-ros / ml-rus at P = 25% (seed 0)" in block
    lines = block.splitlines()
    assert lines[2].split() == ["label", "before", "n", "before", "IRLbl", "ml-ros", "n", "ml-ros", "IRLbl",
                                "ml-rus", "n", "ml-rus", "IRLbl"]
    # Hernia: 1 of 463 training rows, the commonest label is "no finding" with 220 rows -> IRLbl 220
    assert next(line for line in lines if line.startswith("Hernia")).split()[1:3] == ["1", "220.00"]
    assert next(line for line in lines if line.startswith("no finding")).split()[2:4] == ["220", "1.00"]
    assert next(line for line in lines if line.startswith("MeanIR")).split()[1] == "28.64"
    assert next(line for line in lines if line.startswith("rows")).split()[1:] == ["463", "477", "348"]
    assert "label imbalance" not in info(kermany_path)  # binary files have no findings table
