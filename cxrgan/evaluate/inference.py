"""Does a method beat its baseline? The seed-level test of an AUC difference, Holm-adjusted p-values and power.

The question a table answers is "does method A help", not "do these two trained models differ". A method is a
distribution over training runs, so the unit of replication is the training seed: seed s of A and seed s of B share
the split, the initial weights and the batch order, and ``d_s = AUC(A_s) - AUC(B_s)`` is one paired observation.
The test is the Obuchowski-Rockette analysis of multi-reader ROC studies with the seeds as the readers and the test
images as the cases (Obuchowski & Rockette 1995, "Hypothesis testing of diagnostic accuracy for multiple readers
and multiple tests: an ANOVA approach with dependent observations", Commun. Stat. Simul. Comput. 24(2):285-308),
with Hillis's denominator degrees of freedom (Hillis 2007, "A comparison of denominator degrees of freedom methods
for multiple observer ROC analysis", Stat. Med. 26(3):596-619; Hillis, Berbaum & Metz 2008, "Recent developments in
the Dorfman-Berbaum-Metz procedure for multireader ROC study analysis", Acad. Radiol. 15(5):647-661).

Their model for the AUC of test (method) i read by reader (seed) j is
``theta_ij = mu + tau_i + R_j + (tau R)_ij + eps_ij``, the error ``eps`` being the test-image sampling error with
Var, Cov1 (same seed, other method), Cov2 (other seed, same method) and Cov3 (other seed, other method). For two
methods the OR statistic ``F = MS(T) / (MS(T x R) + n max(Cov2 - Cov3, 0))`` is ``t^2`` with

    Var(Δ) = s_d^2 / n + max(κ, 0),   κ = 2 (Cov2 - Cov3) = mean over seeds j != j' of Cov(d_j, d_j'),

since ``MS(T) = n Δ^2 / 2`` and ``MS(T x R) = s_d^2 / 2`` (s_d: sd over seeds of the d_s, Δ their mean). s_d^2
already holds every part of the test-image noise that differs between seeds (the seed x image interaction); only
κ, the part all seeds share because they are scored on one test set, is missing from it. κ is estimated from the
DeLong covariances of the 2n AUCs (DeLong, DeLong & Clarke-Pearson 1988), over patients when their ids are known
(Obuchowski 1997, see :class:`cxrgan.evaluate.stats.AucComponents`). Hillis's (2007) degrees of freedom,
``ddf_H = (MS(T x R) + n max(Cov2 - Cov3, 0))^2 / (MS(T x R)^2 / (n - 1))``, are written in these terms
``(s_d^2/n + κ+)^2 / ((s_d^2/n)^2 / (n - 1))``: n - 1 (the paired t over seeds) when κ+ = 0, growing without bound
as the shared test-image part dominates. The CI is ``Δ +- t_{1-α/2, ddf_H} sqrt(Var(Δ))`` (Hillis, Berbaum & Metz
2008, the random-reader interval for a difference of reader-averaged AUCs).

Seeds are random and so are the test images; the training and validation split is not: every seed trains on the
same one, so the inference is conditional on it. Adding seeds shrinks only s_d^2 / n; κ+ is the floor no number of
seeds removes (:func:`seeds_needed`).

Then, per table: Holm's step-down adjustment across every row (and finding, and site) tested against the baseline
(Holm 1979, "A simple sequentially rejective multiple test procedure", Scand. J. Statistics 6(2)), via statsmodels;
a verdict word from the sign and the adjusted p (the printed CI is not adjusted); the minimum detectable effect at
80 % power (noncentral t, Cohen 1988 ch. 2) and the number of seeds a target effect of 0.01 would need on this test
set. A cell with no variance at all (identical arms, or the same Δ on every seed and no test-image term) has no
p-value: it says so instead of printing p = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import optimize, special

from cxrgan.errors import CxrganError
from cxrgan.evaluate.stats import AucComponents, delong_components

ALPHA = 0.05  # two-sided significance level of every verdict
POWER = 0.8  # power at which the minimum detectable effect is reported
TARGET_EFFECT = 0.01  # AUC difference whose required number of seeds is reported
MIN_TEST_POSITIVES = 10  # below this many test positives (or negatives) an AUC is reported as not estimable
MAX_SEEDS_SEARCHED = 10_000  # "seeds needed" beyond this is reported as unreachable
ZERO_VARIANCE = 1e-18  # a variance of Δ below this (an SE under 1e-9 AUC) is rounding noise: no variance at all

VERDICT_BETTER, VERDICT_WORSE, VERDICT_NONE = "better", "worse", "no detectable difference"
DF_HILLIS, DF_PAIRED_T = "Hillis 2007", "paired t (n - 1)"


@dataclass(frozen=True)
class Effect:
    """Method minus baseline over paired training seeds, with everything a reader (or a stopping rule) needs.

    The variance parts are kept apart: ``seed_sd ** 2 / n`` shrinks with more seeds, ``max(kappa, 0)`` does not;
    :meth:`variance_at` and :meth:`df_at` give the test's variance and degrees of freedom at another number of
    seeds with the same parts."""

    n_seeds: int  # seeds both methods finished (pairs with non-finite scores dropped)
    delta: float  # mean over seeds of (method - baseline)
    ci_low: float  # 95 % confidence interval of delta (not Holm-adjusted)
    ci_high: float
    p: float  # two-sided p-value of delta = 0, before any multiplicity adjustment
    seed_sd: float  # s_d: standard deviation of the per-seed differences (holds the seed x image interaction)
    test_se: float  # sqrt(max(kappa, 0)): the standard error no number of seeds removes; NaN without test scores
    df: float  # degrees of freedom of the t reference (Hillis 2007; inf when only the test-image part is random)
    mde: float  # smallest |delta| detectable with POWER at ALPHA with these seeds and this test set
    seeds_needed: float  # seeds needed to detect TARGET_EFFECT with POWER (inf: the test-image floor is too large)
    p_adjusted: float = float("nan")  # Holm-adjusted p across the rows of one table (set by adjust_holm)
    kappa: float = float("nan")  # κ: mean covariance of distinct seeds' differences from test images, as estimated
    seed_test_var: float = float("nan")  # mean (clustered) DeLong variance of one seed's difference
    clustered: bool = False  # the test-image covariances count a patient's images as one cluster (Obuchowski 1997)
    df_method: str = ""  # DF_HILLIS, or DF_PAIRED_T when there were no test scores to estimate kappa
    untestable: str = ""  # why there is no p-value although there are >= 2 seeds (e.g. identical arms)

    @property
    def floor(self) -> float:
        """max(κ, 0): the variance of Δ that no number of seeds removes (0 without test scores)."""
        return 0.0 if math.isnan(self.kappa) else max(self.kappa, 0.0)

    def variance_at(self, n_seeds: int) -> float:
        """Var(Δ) with ``n_seeds`` seeds and the same seed spread and test-image term: s_d^2 / n + max(κ, 0)."""
        return self.seed_sd ** 2 / n_seeds + self.floor

    def df_at(self, n_seeds: int) -> float:
        """Hillis's degrees of freedom with ``n_seeds`` seeds and the same variance parts."""
        return hillis_df(self.seed_sd ** 2 / n_seeds, self.floor, n_seeds)

    def mde_at(self, n_seeds: int, alpha: float = ALPHA, power: float = POWER) -> float:
        """The minimum detectable |Δ| with ``n_seeds`` seeds and the same variance parts (what a rule that adds
        seeds until the table can see a given Δ looks at; it reads variances only, never Δ or p)."""
        return minimum_detectable_effect(math.sqrt(self.variance_at(n_seeds)), self.df_at(n_seeds), alpha, power)

    @property
    def variance(self) -> float:
        """Var(Δ) of this test."""
        return self.variance_at(self.n_seeds)

    @property
    def verdict(self) -> str:
        """"better" / "worse" at adjusted p < ALPHA, else "no detectable difference"; why not, when untestable."""
        if self.n_seeds < 2:
            return "needs >= 2 seeds"
        if self.untestable:
            return f"n/a: {self.untestable}"
        p = self.p_adjusted if not math.isnan(self.p_adjusted) else self.p
        if math.isnan(p):
            return "not testable"
        if p < ALPHA:
            return VERDICT_BETTER if self.delta > 0 else VERDICT_WORSE
        return VERDICT_NONE


# The power statements call these thousands of times per table (root finding over the noncentral t), so they use
# scipy.special's ufuncs directly rather than the slower scipy.stats distribution objects.
def _t_quantile(q: float, df: float) -> float:
    return float(special.ndtri(q)) if math.isinf(df) else float(special.stdtrit(df, q))


def hillis_df(seed_var: float, kappa_floor: float, n: int) -> float:
    """Hillis's (2007) denominator degrees of freedom for two methods, ``(seed_var + kappa_floor)^2 /
    (seed_var^2 / (n - 1))`` with ``seed_var = s_d^2 / n`` (his ddf_H with MS(T x R) = s_d^2 / 2 and
    n (Cov2 - Cov3) = n kappa / 2); inf when the seeds do not spread at all."""
    if seed_var <= 0:
        return math.inf
    return (seed_var + kappa_floor) ** 2 / (seed_var ** 2 / (n - 1))


def power_of(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided level-``alpha`` test of a true difference ``effect`` with standard error ``se``:
    P(|T| > t_crit) for T ~ noncentral t(df, effect / se) (normal when df is infinite)."""
    if se <= 0:
        return 1.0 if effect != 0 else alpha
    critical = _t_quantile(1 - alpha / 2, df)
    shift = abs(effect) / se
    if math.isinf(df):
        return float(special.ndtr(shift - critical) + special.ndtr(-critical - shift))
    # the far lower tail is negligible for shift >= 0, and the noncentral t returns NaN for some of its tiny values
    lower = float(special.nctdtr(df, shift, -critical))
    return float(1.0 - special.nctdtr(df, shift, critical)) + (0.0 if math.isnan(lower) else lower)


def minimum_detectable_effect(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The |delta| that a two-sided level-``alpha`` test with standard error ``se`` detects with ``power``."""
    if se <= 0:
        return 0.0
    high = _t_quantile(1 - alpha / 2, df) + 1.0
    while power_of(high, 1.0, df, alpha) < power:  # widen the bracket (heavy tails at df = 1 need a wide one)
        high *= 2
    shift = optimize.brentq(lambda x: power_of(x, 1.0, df, alpha) - power, 0.0, high)
    return float(shift * se)


def seeds_needed(target: float, seed_sd: float, kappa: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest number of seeds n >= 2 whose test on this test set detects ``target`` with ``power``.

    With n seeds the variance is ``seed_sd^2 / n + max(kappa, 0)`` and the degrees of freedom Hillis's: only the
    seed part shrinks, so the floor is ``max(kappa, 0)``, the test-image part shared by every seed. inf
    ("unreachable") when even infinitely many seeds cannot reach the power because that floor is too large."""
    floor = max(kappa, 0.0)
    if power_of(target, math.sqrt(floor), math.inf, alpha) < power:
        return math.inf
    seed_var = seed_sd ** 2

    def enough(n: int) -> bool:
        return power_of(target, math.sqrt(seed_var / n + floor), hillis_df(seed_var / n, floor, n), alpha) >= power

    if not enough(MAX_SEEDS_SEARCHED):
        return math.inf
    low, high = 1, MAX_SEEDS_SEARCHED  # power grows with n: bisect for the first n that is enough
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return float(max(high, 2))


def effect_from_parts(differences: Sequence[float], kappa: float | None = None, *, clustered: bool = False,
                      seed_test_var: float = float("nan"), alpha: float = ALPHA, power: float = POWER,
                      target: float = TARGET_EFFECT) -> Effect:
    """The effect, CI, p-value and power statements from the per-seed differences and the test-image covariance.

    Args:
        differences: per-seed ``metric(method_s) - metric(baseline_s)``; NaN entries are dropped.
        kappa: κ, the mean covariance between different seeds' differences from test-image sampling (estimated,
            so it may be negative; ``max(kappa, 0)`` enters the variance). None when no test scores exist: the
            test is then the paired t over seeds, conditional on this test set.
        clustered, seed_test_var: recorded in the effect (see :class:`Effect`).
        alpha, power, target: significance level, power and target effect of the power statements.

    With fewer than two seeds the effect has NaN p, CI and power and its verdict says "needs >= 2 seeds"; with no
    variance at all it has NaN p and says why (``untestable``).
    """
    diff = np.asarray(differences, dtype=np.float64).ravel()
    diff = diff[~np.isnan(diff)]
    n, nan = int(diff.size), float("nan")
    kappa_value = nan if kappa is None else float(kappa)
    floor = 0.0 if kappa is None else max(kappa_value, 0.0)
    parts = dict(kappa=kappa_value, seed_test_var=seed_test_var, clustered=clustered,
                 df_method=DF_PAIRED_T if kappa is None else DF_HILLIS,
                 test_se=nan if kappa is None else math.sqrt(floor))
    if n < 2:
        delta = float(diff.mean()) if n else nan
        return Effect(n, delta, nan, nan, nan, nan, df=nan, mde=nan, seeds_needed=nan, **parts)
    delta, seed_sd = float(diff.mean()), float(diff.std(ddof=1))
    seed_var = seed_sd ** 2 / n
    if seed_var + floor < ZERO_VARIANCE:
        why = ("identical on every seed, no variance" if np.all(np.abs(diff) < 1e-12) else
               "the same Δ on every seed and no test-image variance to weigh it")
        return Effect(n, delta, nan, nan, nan, seed_sd, df=nan, mde=nan, seeds_needed=nan, untestable=why, **parts)
    se = math.sqrt(seed_var + floor)
    df = hillis_df(seed_var, floor, n)
    half = _t_quantile(1 - alpha / 2, df) * se
    p = float(2 * (special.ndtr(-abs(delta) / se) if math.isinf(df) else special.stdtr(df, -abs(delta) / se)))
    return Effect(n, delta, delta - half, delta + half, p, seed_sd, df=df,
                  mde=minimum_detectable_effect(se, df, alpha, power),
                  seeds_needed=seeds_needed(target, seed_sd, floor, alpha, power), **parts)


def _as_columns(y: np.ndarray, method_scores: np.ndarray,
                baseline_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, F) labels and (n_seeds, N, F) scores of both methods, checked."""
    labels = np.asarray(y, dtype=np.float64)
    a = np.asarray(method_scores, dtype=np.float64)
    b = np.asarray(baseline_scores, dtype=np.float64)
    if labels.ndim == 1:
        labels, a, b = labels[:, None], a[..., None], b[..., None]
    if labels.ndim != 2 or a.ndim != 3 or a.shape != b.shape or a.shape[1:] != labels.shape:
        raise CxrganError(f"scores must be (n_seeds, N) per method for (N,) labels, or (n_seeds, N, F) for (N, F) "
                          f"labels, in the same seed order; got labels {np.shape(y)}, method "
                          f"{np.shape(method_scores)}, baseline {np.shape(baseline_scores)}")
    known = ~np.isnan(labels)
    if not np.isin(labels[known], (0.0, 1.0)).all():
        raise CxrganError("labels must be 0, 1 or NaN (unknown)")
    return labels, a, b


def seed_level_test(y: np.ndarray, method_scores: np.ndarray, baseline_scores: np.ndarray,
                    groups: Sequence | np.ndarray | None = None, *, alpha: float = ALPHA, power: float = POWER,
                    target: float = TARGET_EFFECT) -> Effect:
    """The primary test of every verdict table: Δ = mean over seeds of AUC(method_s) - AUC(baseline_s) with the
    Obuchowski-Rockette / Hillis variance ``s_d^2 / n + max(κ, 0)`` and ddf_H (see the module docstring).

    Args:
        y: (N,) 0/1 test labels (NaN = unknown, left out); or (N, F) label columns, and then the AUC of a seed is
            the macro average over the F columns (give only estimable findings), whose test-image covariance sums
            the DeLong covariances over findings, images and patients being shared between them.
        method_scores: (n_seeds, N) scores of the method, one row per seed ((n_seeds, N, F) for (N, F) labels).
        baseline_scores: the baseline's, same shape and seed order (seed s of both shares split, init and batches).
        groups: (N,) patient ids of the test rows; a patient's images then count as one cluster (Obuchowski 1997).
            None: every image its own patient.
        alpha, power, target: as in :func:`effect_from_parts`.

    A seed whose scores (either method's) are not finite on the known rows is left out (``n_seeds`` counts the rest).
    """
    labels, a, b = _as_columns(y, method_scores, baseline_scores)
    known = ~np.isnan(labels)
    finite = np.all(np.isfinite(a) | ~known, axis=(1, 2)) & np.all(np.isfinite(b) | ~known, axis=(1, 2))
    a, b = a[finite], b[finite]
    n, n_findings = len(a), labels.shape[1]
    if n == 0:
        return effect_from_parts([], 0.0, clustered=groups is not None, alpha=alpha, power=power, target=target)
    components = AucComponents.concat([delong_components(labels[:, f], np.concatenate([a[:, :, f], b[:, :, f]]),
                                                         groups) for f in range(n_findings)])
    # contrast j: the macro AUC of the method's seed j minus the baseline's; AUCs are ordered finding, arm, seed
    weights = np.zeros((n, 2 * n * n_findings))
    for f in range(n_findings):
        weights[np.arange(n), 2 * n * f + np.arange(n)] = 1.0 / n_findings
        weights[np.arange(n), 2 * n * f + n + np.arange(n)] = -1.0 / n_findings
    differences = weights @ components.aucs
    covariance = components.contrast_covariance(weights)
    seed_test_var = float(np.trace(covariance) / n)
    kappa = float((covariance.sum() - np.trace(covariance)) / (n * (n - 1))) if n > 1 else 0.0
    return effect_from_parts(differences, kappa, clustered=groups is not None, seed_test_var=seed_test_var,
                             alpha=alpha, power=power, target=target)


def ensemble_delong_p(y: np.ndarray, method_scores: np.ndarray, baseline_scores: np.ndarray,
                      groups: Sequence | np.ndarray | None = None) -> float:
    """DeLong's two-sided p (clustered by patient when ``groups`` is given) for the AUC, or macro AUC over the
    label columns, of the seed-averaged scores of the two methods: a description of these two ensembles on this
    test set, never of the methods. Shapes as in :func:`seed_level_test`."""
    labels, a, b = _as_columns(y, method_scores, baseline_scores)
    n_findings = labels.shape[1]
    components = AucComponents.concat([delong_components(labels[:, f], np.stack([a[:, :, f].mean(axis=0),
                                                                                 b[:, :, f].mean(axis=0)]), groups)
                                       for f in range(n_findings)])
    weights = np.tile([1.0, -1.0], n_findings) / n_findings
    diff = float(weights @ components.aucs)
    variance = float(components.contrast_covariance(weights)[0, 0])
    if variance < ZERO_VARIANCE:
        return 1.0 if abs(diff) < 1e-12 else 0.0
    return float(2 * special.ndtr(-abs(diff) / math.sqrt(variance)))


def adjust_holm(effects: Sequence[Effect]) -> list[Effect]:
    """The effects with ``p_adjusted`` set by Holm's step-down procedure over the testable ones (NaN p skipped)."""
    from statsmodels.stats.multitest import multipletests

    effects = list(effects)
    testable = [i for i, e in enumerate(effects) if not math.isnan(e.p)]
    if not testable:
        return effects
    adjusted = multipletests([effects[i].p for i in testable], alpha=ALPHA, method="holm")[1]
    for i, p in zip(testable, adjusted):
        effects[i] = replace(effects[i], p_adjusted=float(p))
    return effects


def estimable(y: np.ndarray, minimum: int = MIN_TEST_POSITIVES) -> bool:
    """Whether an AUC on labels ``y`` (NaN = unknown) rests on at least ``minimum`` positives and negatives."""
    known = np.asarray(y, dtype=np.float64)
    known = known[~np.isnan(known)]
    return int((known == 1).sum()) >= minimum and int((known == 0).sum()) >= minimum
