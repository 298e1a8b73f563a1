"""Stratified percentile bootstrap intervals of a metric, and of the paired difference of two scorers' metric, on a
fixed test set (every resample keeps the test set's class counts)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from cxrgan.errors import CxrganError
from cxrgan.evaluate.metrics import check_binary, get_metric
from cxrgan.evaluate.stats import Interval, auc_from_midranks

ScoreMetric = Callable[[np.ndarray, np.ndarray], float]


def _stratified_indices(y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N) row indices, negatives first; each resample redraws each class separately, with replacement."""
    parts = []
    for label in (0, 1):
        rows = np.flatnonzero(y == label)
        parts.append(rows[rng.integers(0, len(rows), size=(n_boot, len(rows)))])
    return np.concatenate(parts, axis=1)


def _replicates(
    y: np.ndarray, s: np.ndarray, metric_fn: str | ScoreMetric, threshold: float, index: np.ndarray
) -> tuple[float, np.ndarray]:
    """The metric on all rows and on each resample (a row of ``index``)."""
    if metric_fn == "roc_auc":
        # The registered AUC's value, computed for all resamples at once from midranks.
        n_neg = int((y == 0).sum())
        full = auc_from_midranks(s[y == 1][None], s[y == 0][None])[0]
        return float(full), auc_from_midranks(s[index[:, n_neg:]], s[index[:, :n_neg]])
    if isinstance(metric_fn, str):
        registered = get_metric(metric_fn)
        fn: ScoreMetric = lambda y_rows, s_rows: registered(y_rows, s_rows, threshold)  # noqa: E731
    else:
        fn = metric_fn
    return float(fn(y, s)), np.array([fn(y[rows], s[rows]) for rows in index], dtype=np.float64)


def _percentile_interval(estimate: float, replicates: np.ndarray, alpha: float) -> Interval:
    finite = replicates[np.isfinite(replicates)]
    if finite.size == 0:
        return Interval(estimate, float("nan"), float("nan"))
    low, high = np.percentile(finite, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return Interval(estimate, float(low), float(high))


def _check_boot_args(y: np.ndarray, n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise CxrganError(f"n_boot must be at least 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise CxrganError(f"alpha must be in (0, 1), got {alpha}")
    if not 0 < int(y.sum()) < len(y):
        raise CxrganError(f"a stratified bootstrap needs both classes; got {int(y.sum())} positives of {len(y)} rows")


def bootstrap_ci(
    y: np.ndarray,
    s: np.ndarray,
    metric_fn: str | ScoreMetric,
    n_boot: int = 2000,
    alpha: float = 0.05,
    random_state: int | np.random.Generator | None = None,
    threshold: float = 0.5,
) -> Interval:
    """Percentile bootstrap confidence interval of a metric (Efron & Tibshirani 1993, "An Introduction to the
    Bootstrap", ch. 13), resampling rows within each class so every resample keeps the test set's class counts.

    Args:
        y: (N,) 0/1 labels with both classes present.
        s: (N,) scores.
        metric_fn: a registered metric name (``"roc_auc"``, ``"f1"``, ...) or ``fn(y, s) -> float``.
        n_boot: number of bootstrap resamples.
        alpha: 1 - confidence level (0.05 gives a 95% interval).
        random_state: seed or ``np.random.Generator``; the only source of randomness.
        threshold: decision threshold passed to a registered threshold-dependent metric.

    Returns ``Interval(estimate, low, high)``: the metric on all rows and the alpha/2, 1-alpha/2 percentiles of the
    resampled values (resamples where the metric is NaN are left out).
    """
    y, s = check_binary(y, s)
    _check_boot_args(y, n_boot, alpha)
    index = _stratified_indices(y, n_boot, np.random.default_rng(random_state))
    estimate, replicates = _replicates(y, s, metric_fn, threshold, index)
    return _percentile_interval(estimate, replicates, alpha)


def bootstrap_diff_ci(
    y: np.ndarray,
    s1: np.ndarray,
    s2: np.ndarray,
    metric_fn: str | ScoreMetric,
    n_boot: int = 2000,
    alpha: float = 0.05,
    random_state: int | np.random.Generator | None = None,
    threshold: float = 0.5,
) -> Interval:
    """Paired percentile bootstrap interval of ``metric(s1) - metric(s2)``: both scorers are evaluated on the same
    resamples, keeping their correlation. For metrics without an analytic paired test, such as F1.

    Args:
        y: (N,) 0/1 labels.
        s1: (N,) scores of the first model.
        s2: (N,) scores of the second model on the same rows.
        metric_fn, n_boot, alpha, random_state, threshold: as in :func:`bootstrap_ci`.
    """
    y, s1 = check_binary(y, s1, what="first scores")
    _, s2 = check_binary(y, s2, what="second scores")
    _check_boot_args(y, n_boot, alpha)
    index = _stratified_indices(y, n_boot, np.random.default_rng(random_state))
    estimate1, replicates1 = _replicates(y, s1, metric_fn, threshold, index)
    estimate2, replicates2 = _replicates(y, s2, metric_fn, threshold, index)
    return _percentile_interval(estimate1 - estimate2, replicates1 - replicates2, alpha)
