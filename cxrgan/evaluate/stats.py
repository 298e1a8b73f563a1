"""Uncertainty for evaluation results: bootstrap and DeLong intervals, DeLong's paired AUC test, seed statistics.

Two sources of variation matter when comparing imbalance fixes:

* the finite test set (which patients happened to be sampled): bootstrap intervals and DeLong's test;
* the training run (seed of initialisation, sampling, generation): :func:`aggregate_seeds` over per-seed results.

DeLong's test of two scorers describes those two trained models on this test set; whether a *method* helps is the
seed-level question of ``cxrgan.evaluate.inference``, which joins both sources.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import stats as sps

from cxrgan.errors import CxrganError
from cxrgan.evaluate.metrics import check_binary, get_metric

ScoreMetric = Callable[[np.ndarray, np.ndarray], float]


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float


class AucInterval(NamedTuple):
    """One AUC with its DeLong variance and normal-approximation confidence interval."""

    auc: float
    low: float
    high: float
    variance: float


class DelongResult(NamedTuple):
    """Paired DeLong test of H0: AUC1 = AUC2; ``z`` is positive when the first scorer has the larger AUC."""

    auc1: float
    auc2: float
    z: float
    p: float


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
        full = _auc_from_midranks(s[y == 1][None], s[y == 0][None])[0]
        return float(full), _auc_from_midranks(s[index[:, n_neg:]], s[index[:, :n_neg]])
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


def _auc_from_midranks(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Row-wise Mann-Whitney AUC of (R, m) positive and (R, n) negative scores, ties counted one half."""
    m, n = positives.shape[1], negatives.shape[1]
    ranks = sps.rankdata(np.concatenate([positives, negatives], axis=1), method="average", axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)


def delong_placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components for K scorers, by the midrank algorithm of Sun & Xu (2014).

    DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver operating
    characteristic curves: a nonparametric approach", Biometrics 44(3):837-845, define for positive i and
    negative j the kernel psi = 1 if x_i > y_j, 1/2 if equal, 0 otherwise, and the components
    V10(x_i) = mean_j psi(x_i, y_j), V01(y_j) = mean_i psi(x_i, y_j), whose means are the AUC. Sun & Xu (2014),
    "Fast implementation of DeLong's algorithm for comparing the areas under correlated receiver operating
    characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393, get them in O(N log N) from midranks:
    V10 = (Z_i - X_i) / n and V01 = 1 - (Z_j - Y_j) / m, with Z the midrank in the pooled sample and X, Y the
    midranks within the positives and negatives.

    Args:
        y: (N,) 0/1 labels.
        scores: (N,) or (K, N) scores; row k is scorer k on the same N rows.

    Returns ``(aucs (K,), v10 (K, m), v01 (K, n))`` for m positives and n negatives, in row order within each class.
    """
    matrix = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if matrix.ndim != 2:
        raise CxrganError(f"scores must be (N,) or (K, N), got shape {np.shape(scores)}")
    y = check_binary(y, matrix[0], what="scorer 0")[0]
    for k in range(1, len(matrix)):
        check_binary(y, matrix[k], what=f"scorer {k}")
    m, n = int(y.sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        raise CxrganError(f"DeLong's variance needs at least 2 positives and 2 negatives; got {m} and {n}")
    positives, negatives = matrix[:, y == 1], matrix[:, y == 0]
    ranks_pos = sps.rankdata(positives, method="average", axis=1)
    ranks_neg = sps.rankdata(negatives, method="average", axis=1)
    ranks_all = sps.rankdata(np.concatenate([positives, negatives], axis=1), method="average", axis=1)
    aucs = (ranks_all[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    v10 = (ranks_all[:, :m] - ranks_pos) / n
    v01 = 1.0 - (ranks_all[:, m:] - ranks_neg) / m
    return aucs, v10, v01


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of K scorers and their (K, K) DeLong covariance S10/m + S01/n (DeLong et al. 1988, eq. 4-5).

    Args:
        y: (N,) 0/1 labels with at least two of each class.
        scores: (N,) or (K, N) scores of K scorers on the same rows.
    """
    aucs, v10, v01 = delong_placements(y, scores)
    covariance = np.atleast_2d(np.cov(v10)) / v10.shape[1] + np.atleast_2d(np.cov(v01)) / v01.shape[1]
    return aucs, covariance


def delong_ci(y: np.ndarray, s: np.ndarray, alpha: float = 0.05) -> AucInterval:
    """One AUC with its DeLong variance and the normal interval AUC +- z_{1-alpha/2} * sqrt(var), clipped to [0, 1]
    (the ``ci.auc(method = "delong")`` interval of pROC; Robin et al. 2011, BMC Bioinformatics 12:77).

    Args:
        y: (N,) 0/1 labels with at least two of each class.
        s: (N,) scores.
        alpha: 1 - confidence level.
    """
    aucs, covariance = delong_covariance(y, s)
    auc, variance = float(aucs[0]), float(covariance[0, 0])
    half = sps.norm.ppf(1 - alpha / 2) * np.sqrt(max(variance, 0.0))
    return AucInterval(auc, float(max(0.0, auc - half)), float(min(1.0, auc + half)), variance)


def _paired_delong(y: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> tuple[float, float, float]:
    """(auc1, auc2, variance of auc1 - auc2); rounding noise below 1e-12 of the AUC variances counts as zero."""
    y, s1 = check_binary(y, s1, what="first scores")
    _, s2 = check_binary(y, s2, what="second scores")
    aucs, covariance = delong_covariance(y, np.vstack([s1, s2]))
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    if variance <= 1e-12 * max(float(covariance[0, 0] + covariance[1, 1]), 1e-300):
        variance = 0.0
    return float(aucs[0]), float(aucs[1]), variance


def delong_test(y: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> DelongResult:
    """Two-sided paired DeLong test that two scorers of the same rows have equal ROC AUC (DeLong et al. 1988),
    z = (AUC1 - AUC2) / sqrt(var1 + var2 - 2 cov12), p = 2 (1 - Phi(|z|)); matches pROC's ``roc.test``.

    Identical AUCs with zero variance of the difference (e.g. identical score vectors) give z = 0, p = 1;
    different AUCs with zero variance (two constant-placement scorers) give z = +-inf, p = 0.

    Args:
        y: (N,) 0/1 labels with at least two of each class.
        s1: (N,) scores of the first model.
        s2: (N,) scores of the second model on the same rows.
    """
    auc1, auc2, variance = _paired_delong(y, s1, s2)
    diff = auc1 - auc2
    if variance == 0.0:
        if abs(diff) < 1e-12:
            return DelongResult(auc1, auc2, 0.0, 1.0)
        return DelongResult(auc1, auc2, float(np.copysign(np.inf, diff)), 0.0)
    z = diff / np.sqrt(variance)
    return DelongResult(auc1, auc2, float(z), float(2 * sps.norm.sf(abs(z))))


def delong_diff_ci(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, alpha: float = 0.05) -> Interval:
    """AUC1 - AUC2 with its normal interval from the paired DeLong variance (pROC's ``roc.test`` conf.int).

    Args:
        y, s1, s2: as in :func:`delong_test`.
        alpha: 1 - confidence level.
    """
    auc1, auc2, variance = _paired_delong(y, s1, s2)
    half = sps.norm.ppf(1 - alpha / 2) * np.sqrt(variance)
    return Interval(auc1 - auc2, float(auc1 - auc2 - half), float(auc1 - auc2 + half))


def aggregate_seeds(values: Sequence[float], alpha: float = 0.05) -> dict[str, float]:
    """Mean over training seeds with a Student-t confidence interval (Student 1908, "The probable error of a mean").

    The interval mean +- t_{1-alpha/2, n-1} * sd / sqrt(n) describes run-to-run variation of the training
    procedure on fixed splits, not test-set sampling error. NaN values (a metric undefined for a seed) are left
    out and ``n`` counts the rest; with n = 1 the sd and interval are NaN.

    Args:
        values: one metric value per seed.
        alpha: 1 - confidence level.

    Returns ``{"mean", "sd", "ci_low", "ci_high", "n"}`` (sd with ddof = 1).
    """
    array = np.asarray(values, dtype=np.float64).ravel()
    array = array[~np.isnan(array)]
    n, nan = int(array.size), float("nan")
    if n < 2:
        return {"mean": float(array.mean()) if n else nan, "sd": nan, "ci_low": nan, "ci_high": nan, "n": n}
    mean = float(array.mean())
    sd = float(array.std(ddof=1))
    half = float(sps.t.ppf(1 - alpha / 2, df=n - 1)) * sd / np.sqrt(n)
    return {"mean": mean, "sd": sd, "ci_low": float(mean - half), "ci_high": float(mean + half), "n": n}


# p = 0 (DeLong with zero variance) and p = 1 are clipped so that log p and Phi^-1(1 - p) stay finite.
P_COMBINERS: dict[str, Callable[[np.ndarray], float]] = {
    "bonferroni": lambda p: float(min(1.0, p.size * p.min())),
    "fisher": lambda p: float(sps.combine_pvalues(np.clip(p, 1e-300, 1.0), method="fisher").pvalue),
    "stouffer": lambda p: float(sps.combine_pvalues(np.clip(p, 1e-300, 1 - 1e-16), method="stouffer").pvalue),
}


def combine_pvalues(pvalues: Sequence[float], method: str = "bonferroni") -> float:
    """One p-value from several tests of the same null hypothesis (e.g. per-seed DeLong tests).

    * ``"bonferroni"``: min(1, k * min p); valid under any dependence between the tests.
    * ``"fisher"``: -2 sum log p ~ chi2(2k) (Fisher 1932, "Statistical Methods for Research Workers").
    * ``"stouffer"``: sum Phi^-1(1 - p) / sqrt(k) ~ N(0, 1) (Stouffer et al. 1949, "The American Soldier").

    Fisher and Stouffer assume independent tests. Per-seed DeLong tests on one shared test set are positively
    dependent (the same patients drive every seed), so these two are anti-conservative there: report them as
    descriptive and use ``"bonferroni"`` (the default) or :func:`paired_seed_test` for a claim.

    Args:
        pvalues: the k p-values, each in [0, 1].
        method: one of :data:`P_COMBINERS`.
    """
    array = np.asarray(pvalues, dtype=np.float64).ravel()
    if array.size == 0:
        raise CxrganError("combine_pvalues needs at least one p-value")
    bad = np.flatnonzero(~((array >= 0) & (array <= 1)))
    if bad.size:
        raise CxrganError(f"p-value number {bad[0]} is {float(array[bad[0]])!r}; p-values must lie in [0, 1]")
    if method not in P_COMBINERS:
        raise CxrganError(f"unknown p-value combination {method!r}; available: {', '.join(sorted(P_COMBINERS))}")
    return P_COMBINERS[method](array)
