"""Classification metrics on plain arrays: a registry of binary metrics, Youden thresholds and multi-label AUCs.

Every metric takes ``(y_true, scores, threshold)``: ``y_true`` holds 0/1 labels, ``scores`` any real-valued
score where larger means "more likely positive" (a probability, a logit), and a row is predicted positive when
``score >= threshold`` (the convention of :func:`sklearn.metrics.roc_curve`). Threshold-free metrics (ROC AUC,
average precision) ignore the threshold. Metrics that are undefined on the given rows (an AUC when only one
class is present) return NaN instead of raising, so a table can report them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sklearn import metrics as skm

from cxrgan.errors import CxrganError

MetricFn = Callable[[np.ndarray, np.ndarray, float], float]
METRICS: dict[str, MetricFn] = {}
THRESHOLD_FREE: set[str] = set()


def register_metric(name: str, threshold_free: bool = False) -> Callable[[MetricFn], MetricFn]:
    """Decorator adding ``fn(y_true, scores, threshold) -> float`` to :data:`METRICS` under ``name``.

    Args:
        name: the key used in result dicts, tables and the CLI.
        threshold_free: True when the metric ranks scores and ignores ``threshold`` (ROC AUC, PR AUC).
    """

    def decorate(fn: MetricFn) -> MetricFn:
        if name in METRICS:
            raise ValueError(f"metric {name!r} is registered twice")
        METRICS[name] = fn
        if threshold_free:
            THRESHOLD_FREE.add(name)
        return fn

    return decorate


def get_metric(name: str) -> MetricFn:
    """The registered metric called ``name``; an unknown name is a :class:`CxrganError` listing the known ones."""
    if name not in METRICS:
        raise CxrganError(f"unknown metric {name!r}; available: {', '.join(sorted(METRICS))}")
    return METRICS[name]


def check_binary(y_true: np.ndarray, scores: np.ndarray, what: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    """Validate a binary label vector and its scores; return them as (int8 labels, float64 scores).

    Args:
        y_true: (N,) labels, each 0 or 1 (bool, int or float).
        scores: (N,) finite real scores.
        what: a name for the inputs used in error messages (e.g. ``"test scores of seed 3"``).

    Raises:
        CxrganError: shapes differ, a label is not 0/1, or a score is NaN/inf; the message names the row.
    """
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype=np.float64)
    if y.ndim != 1 or s.ndim != 1:
        raise CxrganError(f"{what}: labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if len(y) != len(s):
        raise CxrganError(f"{what}: {len(y)} labels but {len(s)} scores")
    if len(y) == 0:
        raise CxrganError(f"{what}: no rows to evaluate")
    y_float = y.astype(np.float64)
    bad = np.flatnonzero((y_float != 0) & (y_float != 1))
    if bad.size:
        raise CxrganError(f"{what}: label at row {bad[0]} is {y[bad[0]].item()!r}; binary labels must be 0 or 1")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise CxrganError(f"{what}: score at row {bad[0]} is {float(s[bad[0]])!r}; scores must be finite")
    return y_float.astype(np.int8), s


def _both_classes(y: np.ndarray) -> bool:
    return 0 < int(y.sum()) < len(y)


def _confusion(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(tn, fp, fn, tp) with a positive prediction when ``score >= threshold``."""
    predicted = scores >= threshold
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted.astype(np.int8), labels=[0, 1]).ravel()
    return int(tn), int(fp), int(fn), int(tp)


@register_metric("roc_auc", threshold_free=True)
def roc_auc(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Area under the ROC curve (Hanley & McNeil 1982, "The meaning and use of the area under a ROC curve");
    NaN when one class is absent."""
    y, s = check_binary(y_true, scores)
    return float(skm.roc_auc_score(y, s)) if _both_classes(y) else float("nan")


@register_metric("pr_auc", threshold_free=True)
def pr_auc(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Average precision, the step-wise area under the precision-recall curve (sklearn's
    ``average_precision_score``; see Saito & Rehmsmeier 2015, "The precision-recall plot is more informative than
    the ROC plot when evaluating binary classifiers on imbalanced datasets"). NaN without positives."""
    y, s = check_binary(y_true, scores)
    return float(skm.average_precision_score(y, s)) if y.any() else float("nan")


@register_metric("accuracy")
def accuracy(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of rows classified correctly at ``threshold``."""
    y, s = check_binary(y_true, scores)
    return float(skm.accuracy_score(y, (s >= threshold).astype(np.int8)))


@register_metric("balanced_accuracy")
def balanced_accuracy(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Mean of sensitivity and specificity (Brodersen et al. 2010, "The balanced accuracy and its posterior
    distribution"); the accuracy that an all-majority classifier cannot inflate. NaN when one class is absent."""
    y, s = check_binary(y_true, scores)
    if not _both_classes(y):
        return float("nan")
    return float(skm.balanced_accuracy_score(y, (s >= threshold).astype(np.int8)))


@register_metric("precision")
def precision(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Positive predictive value TP / (TP + FP); 0 when nothing is predicted positive (sklearn's convention)."""
    y, s = check_binary(y_true, scores)
    return float(skm.precision_score(y, (s >= threshold).astype(np.int8), zero_division=0))


@register_metric("recall")
def recall(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Sensitivity TP / (TP + FN); NaN when there are no positives."""
    y, s = check_binary(y_true, scores)
    if not y.any():
        return float("nan")
    return float(skm.recall_score(y, (s >= threshold).astype(np.int8)))


@register_metric("specificity")
def specificity(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """True negative rate TN / (TN + FP), the recall of class 0; NaN when there are no negatives."""
    y, s = check_binary(y_true, scores)
    tn, fp, _, _ = _confusion(y, s, threshold)
    return tn / (tn + fp) if tn + fp else float("nan")


@register_metric("f1")
def f1(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    """Harmonic mean of precision and recall; 0 when there are no true positives (sklearn's convention)."""
    y, s = check_binary(y_true, scores)
    return float(skm.f1_score(y, (s >= threshold).astype(np.int8), zero_division=0))


def youden_threshold(y_val: np.ndarray, s_val: np.ndarray) -> float:
    """The score threshold maximising Youden's J = sensitivity + specificity - 1 on validation rows.

    Youden (1950), "Index for rating diagnostic tests", Cancer 3(1):32-35. Candidate thresholds are the distinct
    validation scores (sklearn's ``roc_curve``); a row is positive when ``score >= threshold``, so the returned
    value reproduces the best validation operating point exactly. Ties in J go to the highest threshold (the
    most specific of the equally good points). Choose it on validation scores only, never on the test set.

    Args:
        y_val: (N,) validation labels with both classes present.
        s_val: (N,) validation scores.

    Raises:
        CxrganError: a class is missing from the validation labels, or the inputs are malformed.
    """
    y, s = check_binary(y_val, s_val, what="validation scores")
    if not _both_classes(y):
        raise CxrganError(
            f"validation scores: Youden's threshold needs both classes, got {int(y.sum())} positives "
            f"among {len(y)} rows"
        )
    fpr, tpr, thresholds = skm.roc_curve(y, s, drop_intermediate=False)
    # Index 0 is sklearn's "predict nothing positive" point at +inf; J = 0 there, never better than a real score.
    j = tpr[1:] - fpr[1:]
    return float(thresholds[1:][int(np.argmax(j))])


def binary_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Every registered metric (or those in ``names``) of one binary task at one threshold.

    Args:
        y_true: (N,) 0/1 labels.
        scores: (N,) scores; with probabilities the default threshold 0.5 is the usual argmax rule.
        threshold: decision threshold for the threshold-dependent metrics.
        names: metric names to compute, in order; all registered ones when None.

    Returns:
        ``{metric name: value}``, NaN where a metric is undefined on these rows.
    """
    y, s = check_binary(y_true, scores)
    return {name: get_metric(name)(y, s, threshold) for name in (names or list(METRICS))}


def threshold_report(
    y_test: np.ndarray,
    s_test: np.ndarray,
    y_val: np.ndarray | None = None,
    s_val: np.ndarray | None = None,
    default_threshold: float = 0.5,
) -> dict[str, dict[str, float]]:
    """Test metrics at the default threshold and, given validation scores, at the validation Youden threshold.

    Args:
        y_test: (N,) test labels.
        s_test: (N,) test scores.
        y_val: (M,) validation labels, or None to skip the Youden operating point.
        s_val: (M,) validation scores from the same model.
        default_threshold: the fixed threshold reported as ``"default"``.

    Returns:
        ``{"default": metrics, "youden": metrics}`` where each metrics dict also records its ``"threshold"``.
    """
    report = {"default": {"threshold": float(default_threshold), **binary_metrics(y_test, s_test, default_threshold)}}
    if y_val is not None and s_val is not None:
        threshold = youden_threshold(y_val, s_val)
        report["youden"] = {"threshold": threshold, **binary_metrics(y_test, s_test, threshold)}
    return report


def multilabel_auc(
    labels: np.ndarray, scores: np.ndarray, names: Sequence[str], metric: str = "roc_auc"
) -> dict[str, float]:
    """Per-finding AUC of a multi-label task, skipping unknown (NaN) labels column by column, plus the macro mean.

    Args:
        labels: (N, K) float array, 1 positive, 0 negative, NaN unknown (as in ``CXRDataset.labels``).
        scores: (N, K) scores, column k for finding k; finite wherever the label is known.
        names: the K finding names; used as dict keys.
        metric: a threshold-free registered metric, ``"roc_auc"`` or ``"pr_auc"``.

    Returns:
        ``{finding: value, ..., "macro": mean over the findings with a defined value}``. A finding whose known
        test labels hold only one class gets NaN (reported, not dropped); ``"macro"`` is NaN if all are NaN.

    Raises:
        CxrganError: shapes disagree, a name is repeated or is ``"macro"``, a score is not finite, or ``metric``
            needs a threshold.
    """
    y_all = np.asarray(labels, dtype=np.float64)
    s_all = np.asarray(scores, dtype=np.float64)
    names = [str(n) for n in names]
    if y_all.ndim != 2 or y_all.shape != s_all.shape:
        raise CxrganError(f"multi-label labels {y_all.shape} and scores {s_all.shape} must be the same (N, K)")
    if len(names) != y_all.shape[1]:
        raise CxrganError(f"{len(names)} finding names for {y_all.shape[1]} label columns")
    if len(set(names)) != len(names) or "macro" in names:
        raise CxrganError(f"finding names must be unique and not 'macro': {names}")
    if metric not in THRESHOLD_FREE:
        raise CxrganError(f"multilabel_auc needs a threshold-free metric ({sorted(THRESHOLD_FREE)}), got {metric!r}")
    bad = np.argwhere(~np.isnan(y_all) & (y_all != 0) & (y_all != 1))
    if bad.size:
        row, k = bad[0]
        value = float(y_all[row, k])
        raise CxrganError(f"multi-label label at row {row}, finding {names[k]!r} is {value!r}; need 0, 1 or NaN")
    bad = np.argwhere(~np.isnan(y_all) & ~np.isfinite(s_all))
    if bad.size:
        row, k = bad[0]
        value = float(s_all[row, k])
        raise CxrganError(f"multi-label score at row {row}, finding {names[k]!r} is {value!r}; must be finite")
    metric_fn = get_metric(metric)
    result: dict[str, float] = {}
    for k, name in enumerate(names):
        known = ~np.isnan(y_all[:, k])
        y, s = y_all[known, k], s_all[known, k]
        result[name] = metric_fn(y, s, 0.5) if len(y) and _both_classes(y) else float("nan")
    values = np.array(list(result.values()))
    result["macro"] = float(np.mean(values[~np.isnan(values)])) if (~np.isnan(values)).any() else float("nan")
    return result
