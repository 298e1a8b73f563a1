"""Uncertainty for evaluation results: DeLong intervals, DeLong's paired AUC test, seed statistics (bootstrap
intervals: ``cxrgan.evaluate.bootstrap``).

Two sources of variation matter when comparing imbalance fixes:

* the finite test set (which patients happened to be sampled): bootstrap intervals and DeLong's test, whose
  variance counts a patient's images as one cluster (Obuchowski 1997) whenever patient ids are given;
* the training run (seed of initialisation, sampling, generation): :func:`aggregate_seeds` over per-seed results.

DeLong's test of two scorers describes those two trained models on this test set; whether a *method* helps is the
seed-level question of ``cxrgan.evaluate.inference``, which joins both sources.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
from scipy import stats as sps

from cxrgan.errors import CxrganError
from cxrgan.evaluate.metrics import check_binary


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


def auc_from_midranks(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """Row-wise Mann-Whitney AUC of (R, m) positive and (R, n) negative scores, ties counted one half."""
    m, n = positives.shape[1], negatives.shape[1]
    ranks = sps.rankdata(np.concatenate([positives, negatives], axis=1), method="average", axis=1)
    return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)


def delong_placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs and DeLong's structural components (placement values) for K scorers, from sorted scores.

    DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated receiver operating
    characteristic curves: a nonparametric approach", Biometrics 44(3):837-845, define for positive i and
    negative j the kernel psi = 1 if x_i > y_j, 1/2 if equal, 0 otherwise, and the components
    V10(x_i) = mean_j psi(x_i, y_j), V01(y_j) = mean_i psi(x_i, y_j), whose means are the AUC. As in Sun & Xu
    (2014), "Fast implementation of DeLong's algorithm for comparing the areas under correlated receiver operating
    characteristic curves", IEEE Signal Processing Letters 21(11):1389-1393, they cost O(N log N): V10(x_i) is the
    share of negatives below x_i plus half the share tied with it (and V01 likewise with the positives), counted in
    one sort of the pooled scores of every scorer at once; this is their midrank formula.

    Args:
        y: (N,) 0/1 labels.
        scores: (N,) or (K, N) scores; row k is scorer k on the same N rows.

    Returns ``(aucs (K,), v10 (K, m), v01 (K, n))`` for m positives and n negatives, in row order within each class.
    """
    matrix = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if matrix.ndim != 2:
        raise CxrganError(f"scores must be (N,) or (K, N), got shape {np.shape(scores)}")
    y = check_binary(y, matrix[0], what="scorer 0")[0]
    if matrix.shape[1] != len(y):
        raise CxrganError(f"{len(y)} labels but {matrix.shape[1]} scores per scorer")
    if not np.isfinite(matrix).all():
        k, row = np.argwhere(~np.isfinite(matrix))[0]
        raise CxrganError(f"scorer {k}: score at row {row} is {float(matrix[k, row])!r}; scores must be finite")
    m, n = int(y.sum()), int((y == 0).sum())
    if m < 2 or n < 2:
        raise CxrganError(f"DeLong's variance needs at least 2 positives and 2 negatives; got {m} and {n}")
    is_positive = y == 1
    # One sort of each scorer's pooled scores; a row's tie block spans [first, last] of that order. Its share of the
    # negatives below it plus half those tied with it is (negatives before first + negatives up to last) / 2n.
    # Flat indices (row offset + column) instead of take_along_axis: this runs once per table cell and per replicate
    # of the calibration benchmark.
    n_rows, n_cols = matrix.shape
    offsets = (np.arange(n_rows) * n_cols)[:, None]
    order = np.argsort(matrix, axis=1) + offsets
    ordered = matrix.ravel()[order]
    positive_sorted = is_positive[order - offsets]
    positives_upto = np.cumsum(positive_sorted, axis=1)
    negatives_upto = np.arange(1, n_cols + 1) - positives_upto
    columns = np.arange(n_cols)
    new_value = ordered[:, 1:] != ordered[:, :-1]
    first = np.maximum.accumulate(np.where(np.c_[np.ones(n_rows, bool), new_value], columns, 0), axis=1) + offsets
    last = np.minimum.accumulate(np.where(np.c_[new_value, np.ones(n_rows, bool)], columns, n_cols - 1)[:, ::-1],
                                 axis=1)[:, ::-1] + offsets
    flat_first, flat_last, flat_positive = first.ravel(), last.ravel(), positive_sorted.ravel()

    def before_and_upto(upto: np.ndarray, in_class: np.ndarray) -> np.ndarray:
        flat = upto.ravel()
        return (flat[flat_first] - in_class[flat_first] + flat[flat_last]).reshape(n_rows, n_cols)

    below_neg = before_and_upto(negatives_upto, ~flat_positive) / (2 * n)  # V10 at positive rows
    below_pos = before_and_upto(positives_upto, flat_positive) / (2 * m)  # 1 - V01 at negative rows
    placement = np.empty(n_rows * n_cols)
    placement[order.ravel()] = np.where(positive_sorted, below_neg, 1.0 - below_pos).ravel()
    placement = placement.reshape(n_rows, n_cols)
    v10, v01 = placement[:, is_positive], placement[:, ~is_positive]
    return v10.mean(axis=1), v10, v01


def cluster_codes(groups: Sequence | np.ndarray | None, n_rows: int) -> tuple[np.ndarray, int]:
    """(N,) integer cluster codes 0..I-1 and I: rows with the same patient id share a code; ``groups`` None (no
    patient ids known) or an empty / NaN id makes a row its own cluster.

    Args:
        groups: (N,) patient ids (strings or numbers), or None.
        n_rows: N, the number of rows the ids must cover.
    """
    if groups is None:
        return np.arange(n_rows), n_rows
    ids = np.asarray(groups)
    if ids.shape != (n_rows,):
        raise CxrganError(f"patient ids must be one per row: got shape {ids.shape} for {n_rows} rows")
    if ids.dtype.kind in "iub":
        unknown = np.zeros(n_rows, dtype=bool)
    elif ids.dtype.kind == "f":
        unknown = np.isnan(ids)
    else:
        ids = ids.astype(str)
        unknown = (ids == "") | (ids == "nan") | (ids == "None")
    codes = np.unique(ids, return_inverse=True)[1].ravel()
    if unknown.any():  # each row without an id is a patient of its own
        codes = np.unique(np.where(unknown, codes.max() + 1 + np.arange(n_rows), codes), return_inverse=True)[1]
    return codes.ravel(), int(codes.max()) + 1


class AucComponents(NamedTuple):
    """K AUCs and their per-patient structural components, from which every (co)variance of linear contrasts of
    the AUCs follows (:meth:`covariance`, :meth:`contrast_covariance`).

    For AUC k on its known rows (m_k positives, n_k negatives, I_k patients, I10_k of them with a positive image
    and I01_k with a negative one), patient c contributes ``positive[k, c] = sum over c's positives (V10 - AUC_k)
    / m_k`` and ``negative[k, c] = sum over c's negatives (V01 - AUC_k) / n_k``. Obuchowski (1997, Biometrics
    53(2):567-578, "Nonparametric analysis of clustered ROC curve data", section 2) then estimates
    ``Cov(AUC_k, AUC_l) = f10 sum_c P_k P_l + f01 sum_c N_k N_l + f11 sum_c (P_k N_l + N_k P_l)``, i.e. her
    ``S10 / M + S01 / N + 2 S11 / (M N)`` with the small-sample factors f10 = I10 / (I10 - 1), f01 = I01 / (I01 - 1)
    and f11 = I / (I - 1). AUCs of different label columns (the findings of a macro average) have their own
    factors; their cross terms take the geometric mean of the two (the same factor when the columns agree).
    With one image per patient the cross term vanishes and the rest is DeLong's S10 / m + S01 / n exactly.
    """

    aucs: np.ndarray  # (K,) AUCs
    positive: np.ndarray  # (K, I) per patient: sum of (V10 - AUC) over its positive images, / m_k
    negative: np.ndarray  # (K, I) per patient: sum of (V01 - AUC) over its negative images, / n_k
    root_f10: np.ndarray  # (K,) sqrt(I10 / (I10 - 1))
    root_f01: np.ndarray  # (K,) sqrt(I01 / (I01 - 1))
    root_f11: np.ndarray  # (K,) sqrt(I / (I - 1))

    @staticmethod
    def concat(parts: Sequence[AucComponents]) -> AucComponents:
        """The AUCs of several parts (e.g. one per finding, over the same rows and patients) as one set."""
        return AucComponents(*(np.concatenate(arrays) for arrays in zip(*parts)))

    def contrast_covariance(self, weights: np.ndarray) -> np.ndarray:
        """(J, J) covariance of the J contrasts ``weights @ aucs`` ((J, K) weights)."""
        w = np.atleast_2d(weights)
        pos10, neg01 = (w * self.root_f10) @ self.positive, (w * self.root_f01) @ self.negative
        pos11, neg11 = (w * self.root_f11) @ self.positive, (w * self.root_f11) @ self.negative
        cross = pos11 @ neg11.T
        return pos10 @ pos10.T + neg01 @ neg01.T + cross + cross.T

    def covariance(self) -> np.ndarray:
        """(K, K) covariance of the AUCs."""
        return self.contrast_covariance(np.eye(len(self.aucs)))


def delong_components(y: np.ndarray, scores: np.ndarray, groups: Sequence | np.ndarray | None = None) -> AucComponents:
    """AUCs of K scorers on one label column and their patient-level structural components (Obuchowski 1997; with
    ``groups`` None every image is its own patient and the covariance is DeLong's).

    Args:
        y: (N,) 0/1 labels; NaN marks a row whose label is unknown, left out (its patient may still count for
            other columns of a macro average).
        scores: (N,) or (K, N) scores; row k is scorer k on the same N rows.
        groups: (N,) patient ids (see :func:`cluster_codes`), or None.
    """
    matrix = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    labels = np.asarray(y, dtype=np.float64)
    if matrix.ndim != 2 or labels.ndim != 1 or matrix.shape[1] != len(labels):
        raise CxrganError(f"labels must be (N,) and scores (N,) or (K, N); got {labels.shape} and {np.shape(scores)}")
    codes, n_clusters = cluster_codes(groups, len(labels))
    known = ~np.isnan(labels)
    labels, matrix, codes = labels[known], matrix[:, known], codes[known]
    aucs, v10, v01 = delong_placements(labels, matrix)
    n_scorers = len(matrix)
    cell = (np.arange(n_scorers) * n_clusters)[:, None]  # (scorer, patient) -> scorer * I + patient

    def per_patient(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
        """(K, I) sums over each patient's rows of (placement - AUC) / class size."""
        weights = (values - aucs[:, None]) / values.shape[1]
        return np.bincount((cell + codes[rows]).ravel(), weights.ravel(), n_scorers * n_clusters).reshape(
            n_scorers, n_clusters)

    positive, negative = per_patient(labels == 1, v10), per_patient(labels == 0, v01)
    counts = [int(np.count_nonzero(np.bincount(codes[rows], minlength=n_clusters)))
              for rows in (labels == 1, labels == 0, np.ones(len(labels), bool))]
    if min(counts[:2]) < 2:
        raise CxrganError(f"a clustered AUC variance needs positives and negatives from at least 2 patients each; "
                          f"got {counts[0]} and {counts[1]}")
    roots = [np.full(n_scorers, np.sqrt(count / (count - 1))) for count in counts]
    return AucComponents(aucs, positive, negative, *roots)


def delong_covariance(y: np.ndarray, scores: np.ndarray,
                      groups: Sequence | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of K scorers and their (K, K) covariance: DeLong's S10/m + S01/n (DeLong et al. 1988, eq. 4-5), or with
    patient ids Obuchowski's (1997) clustered form (see :class:`AucComponents`).

    Args:
        y: (N,) 0/1 labels with at least two of each class.
        scores: (N,) or (K, N) scores of K scorers on the same rows.
        groups: (N,) patient ids, or None (every image its own patient).
    """
    components = delong_components(y, scores, groups)
    return components.aucs, components.covariance()


def delong_ci(y: np.ndarray, s: np.ndarray, alpha: float = 0.05,
              groups: Sequence | np.ndarray | None = None) -> AucInterval:
    """One AUC with its DeLong variance and the normal interval AUC +- z_{1-alpha/2} * sqrt(var), clipped to [0, 1]
    (the ``ci.auc(method = "delong")`` interval of pROC; Robin et al. 2011, BMC Bioinformatics 12:77); with
    patient ids, the clustered variance of Obuchowski (1997).

    Args:
        y: (N,) 0/1 labels with at least two of each class.
        s: (N,) scores.
        alpha: 1 - confidence level.
        groups: (N,) patient ids, or None (every image its own patient).
    """
    aucs, covariance = delong_covariance(y, s, groups)
    auc, variance = float(aucs[0]), float(covariance[0, 0])
    half = sps.norm.ppf(1 - alpha / 2) * np.sqrt(max(variance, 0.0))
    return AucInterval(auc, float(max(0.0, auc - half)), float(min(1.0, auc + half)), variance)


def _paired_delong(y: np.ndarray, s1: np.ndarray, s2: np.ndarray,
                   groups: Sequence | np.ndarray | None) -> tuple[float, float, float]:
    """(auc1, auc2, variance of auc1 - auc2); rounding noise below 1e-12 of the AUC variances counts as zero."""
    y, s1 = check_binary(y, s1, what="first scores")
    _, s2 = check_binary(y, s2, what="second scores")
    aucs, covariance = delong_covariance(y, np.vstack([s1, s2]), groups)
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    if variance <= 1e-12 * max(float(covariance[0, 0] + covariance[1, 1]), 1e-300):
        variance = 0.0
    return float(aucs[0]), float(aucs[1]), variance


def delong_test(y: np.ndarray, s1: np.ndarray, s2: np.ndarray,
                groups: Sequence | np.ndarray | None = None) -> DelongResult:
    """Two-sided paired DeLong test that two scorers of the same rows have equal ROC AUC (DeLong et al. 1988),
    z = (AUC1 - AUC2) / sqrt(var1 + var2 - 2 cov12), p = 2 (1 - Phi(|z|)); matches pROC's ``roc.test``.

    Identical AUCs with zero variance of the difference (e.g. identical score vectors) give z = 0, p = 1;
    different AUCs with zero variance (two constant-placement scorers) give z = +-inf, p = 0.

    Args:
        y: (N,) 0/1 labels with at least two of each class.
        s1: (N,) scores of the first model.
        s2: (N,) scores of the second model on the same rows.
        groups: (N,) patient ids: the variance is then Obuchowski's (1997) clustered one; None: every image is
            its own patient.
    """
    auc1, auc2, variance = _paired_delong(y, s1, s2, groups)
    diff = auc1 - auc2
    if variance == 0.0:
        if abs(diff) < 1e-12:
            return DelongResult(auc1, auc2, 0.0, 1.0)
        return DelongResult(auc1, auc2, float(np.copysign(np.inf, diff)), 0.0)
    z = diff / np.sqrt(variance)
    return DelongResult(auc1, auc2, float(z), float(2 * sps.norm.sf(abs(z))))


def delong_diff_ci(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, alpha: float = 0.05,
                   groups: Sequence | np.ndarray | None = None) -> Interval:
    """AUC1 - AUC2 with its normal interval from the paired DeLong variance (pROC's ``roc.test`` conf.int).

    Args:
        y, s1, s2, groups: as in :func:`delong_test`.
        alpha: 1 - confidence level.
    """
    auc1, auc2, variance = _paired_delong(y, s1, s2, groups)
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
    descriptive and use ``"bonferroni"`` (the default) or ``cxrgan.evaluate.inference.seed_level_test`` for a claim.

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
