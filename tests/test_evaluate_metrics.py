"""Tests of cxrgan.evaluate.metrics: hand-computed confusion counts, sklearn cross-checks, real NIH findings."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from cxrgan.errors import CxrganError
from cxrgan.evaluate import (
    METRICS,
    THRESHOLD_FREE,
    binary_metrics,
    get_metric,
    multilabel_auc,
    register_metric,
    threshold_report,
    youden_threshold,
)

# 10 rows, 4 positives. At threshold 0.5 (score >= 0.5 is positive): predicted positive rows 0, 1, 4, 5, 6
# -> TP = rows 0, 1 (2), FP = rows 4, 5, 6 (3), FN = rows 2, 3 (2), TN = rows 7, 8, 9 (3).
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
S = np.array([0.9, 0.5, 0.4, 0.2, 0.8, 0.5, 0.6, 0.1, 0.3, 0.45])


def _brute_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def _brute_average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """AP = sum over distinct thresholds of (R_t - R_prev) * P_t, thresholds from high to low."""
    total, recall_prev = 0.0, 0.0
    for t in np.sort(np.unique(s))[::-1]:
        predicted = s >= t
        tp = int((predicted & (y == 1)).sum())
        recall_t, precision_t = tp / int(y.sum()), tp / int(predicted.sum())
        total += (recall_t - recall_prev) * precision_t
        recall_prev = recall_t
    return total


def test_registry_holds_every_metric_and_rejects_duplicates() -> None:
    expected = {"roc_auc", "pr_auc", "accuracy", "balanced_accuracy", "precision", "recall", "specificity", "f1"}
    assert expected <= set(METRICS)
    assert THRESHOLD_FREE == {"roc_auc", "pr_auc"}
    with pytest.raises(ValueError, match="registered twice"):
        register_metric("f1")(lambda y, s, t: 0.0)
    with pytest.raises(CxrganError, match="unknown metric 'auroc'.*roc_auc"):
        get_metric("auroc")


def test_threshold_metrics_match_hand_counts() -> None:
    tp, fp, fn, tn = 2, 3, 2, 3
    result = binary_metrics(Y, S, threshold=0.5)
    assert result["accuracy"] == pytest.approx((tp + tn) / 10)
    assert result["precision"] == pytest.approx(tp / (tp + fp))
    assert result["recall"] == pytest.approx(tp / (tp + fn))
    assert result["specificity"] == pytest.approx(tn / (tn + fp))
    assert result["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["balanced_accuracy"] == pytest.approx((tp / (tp + fn) + tn / (tn + fp)) / 2)
    # Rows 1 and 5 score exactly 0.5: they are predicted positive (score >= threshold).
    assert binary_metrics(Y, S, threshold=0.50000001)["recall"] == pytest.approx(1 / 4)


def test_ranking_metrics_match_pair_counting_and_step_average_precision() -> None:
    result = binary_metrics(Y, S)
    assert result["roc_auc"] == pytest.approx(_brute_auc(Y, S))  # the tie at 0.5 counts one half
    assert result["pr_auc"] == pytest.approx(_brute_average_precision(Y, S))
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.round(y + rng.normal(size=200), 1)  # rounding makes many ties
    assert get_metric("roc_auc")(y, s, 0.5) == pytest.approx(_brute_auc(y, s))
    assert get_metric("pr_auc")(y, s, 0.5) == pytest.approx(_brute_average_precision(y, s))


def test_threshold_free_metrics_ignore_threshold_and_names_select_order() -> None:
    a = binary_metrics(Y, S, threshold=0.1, names=["pr_auc", "roc_auc"])
    b = binary_metrics(Y, S, threshold=0.9, names=["pr_auc", "roc_auc"])
    assert a == b and list(a) == ["pr_auc", "roc_auc"]


def test_undefined_metrics_are_nan_not_errors() -> None:
    all_negative = binary_metrics(np.zeros(5), np.linspace(0, 1, 5))
    assert np.isnan(all_negative["roc_auc"]) and np.isnan(all_negative["pr_auc"]) and np.isnan(all_negative["recall"])
    assert all_negative["specificity"] == pytest.approx(2 / 5)  # scores 0.5, 0.75, 1.0 are false positives
    nothing_predicted = binary_metrics(Y, S, threshold=2.0)
    assert nothing_predicted["precision"] == 0.0 and nothing_predicted["f1"] == 0.0
    assert nothing_predicted["specificity"] == 1.0


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], "row 2 is 2"),
        ([0, 1, 1], [0.1, np.nan, 0.3], "row 1 is nan"),
        ([0, 1, 1], [0.1, 0.2], "3 labels but 2 scores"),
        ([], [], "no rows"),
    ],
)
def test_bad_binary_input_names_the_row(labels, scores, message) -> None:
    with pytest.raises(CxrganError, match=message):
        binary_metrics(np.array(labels), np.array(scores, dtype=float))


def test_youden_threshold_matches_exhaustive_search() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = y * 1.2 + rng.normal(size=300)
    threshold = youden_threshold(y, s)
    j = {t: (s[y == 1] >= t).mean() - (s[y == 0] >= t).mean() for t in np.unique(s)}
    best = max(j.values())
    assert j[threshold] == pytest.approx(best)
    assert threshold == max(t for t, value in j.items() if np.isclose(value, best))  # ties: the highest
    report = threshold_report(y, s, y_val=y, s_val=s)
    assert report["youden"]["threshold"] == threshold
    assert report["youden"]["recall"] + report["youden"]["specificity"] - 1 == pytest.approx(best)
    assert report["default"]["threshold"] == 0.5 and set(report) == {"default", "youden"}


def test_youden_threshold_on_separable_scores_and_single_class() -> None:
    assert youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.7, 0.9])) == 0.7
    with pytest.raises(CxrganError, match="validation scores.*both classes"):
        youden_threshold(np.ones(4), np.array([0.1, 0.3, 0.7, 0.9]))
    assert set(threshold_report(Y, S)) == {"default"}


def test_multilabel_auc_skips_unknown_rows_per_column() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, (120, 3)).astype(float)
    scores = labels + rng.normal(size=(120, 3))
    labels[rng.random((120, 3)) < 0.2] = np.nan
    scores[np.isnan(labels)] = np.nan  # unknown rows may have any score, even NaN
    labels[:, 2] = np.where(np.isnan(labels[:, 2]), np.nan, 1.0)  # only positives known in column 2
    result = multilabel_auc(labels, scores, ["a", "b", "c"])
    for k, name in enumerate("ab"):
        known = ~np.isnan(labels[:, k])
        assert result[name] == pytest.approx(skm.roc_auc_score(labels[known, k], scores[known, k]))
    assert np.isnan(result["c"])
    assert result["macro"] == pytest.approx((result["a"] + result["b"]) / 2)
    pr = multilabel_auc(labels, scores, ["a", "b", "c"], metric="pr_auc")
    known = ~np.isnan(labels[:, 0])
    assert pr["a"] == pytest.approx(skm.average_precision_score(labels[known, 0], scores[known, 0]))


def test_multilabel_auc_rejects_bad_input() -> None:
    labels, scores = np.zeros((4, 2)), np.zeros((4, 2))
    with pytest.raises(CxrganError, match="same \\(N, K\\)"):
        multilabel_auc(labels, np.zeros((4, 3)), ["a", "b"])
    with pytest.raises(CxrganError, match="1 finding names for 2"):
        multilabel_auc(labels, scores, ["a"])
    with pytest.raises(CxrganError, match="unique and not 'macro'"):
        multilabel_auc(labels, scores, ["a", "macro"])
    with pytest.raises(CxrganError, match="threshold-free"):
        multilabel_auc(labels, scores, ["a", "b"], metric="f1")
    labels[1, 0] = 0.5
    with pytest.raises(CxrganError, match="label at row 1, finding 'a' is 0.5"):
        multilabel_auc(labels, scores, ["a", "b"])
    labels[1, 0] = np.nan
    scores[2, 1] = np.inf
    with pytest.raises(CxrganError, match="row 2, finding 'b'"):
        multilabel_auc(labels, scores, ["a", "b"])


def test_multilabel_auc_on_real_nih_test_findings(nih_path) -> None:
    """Real ChestX-ray14 test-split findings: five findings have no positive there and must come back as NaN."""
    from cxrgan.data import load_npz

    test = load_npz(nih_path, target="findings").split("test")
    rng = np.random.default_rng(0)
    scores = test.labels + rng.normal(scale=0.8, size=test.labels.shape)
    result = multilabel_auc(test.labels, scores, test.label_names)
    assert list(result) == [*test.label_names, "macro"]
    defined = []
    for k, name in enumerate(test.label_names):
        column = test.labels[:, k]
        if 0 < column.sum() < len(column):
            assert result[name] == pytest.approx(skm.roc_auc_score(column, scores[:, k]))
            defined.append(result[name])
        else:
            assert np.isnan(result[name])
    assert 0 < len(defined) < len(test.label_names)  # this split really has single-class findings
    assert result["macro"] == pytest.approx(np.mean(defined))
