"""Does a method beat its baseline? Seed-level paired effects with CIs, Holm-adjusted p-values and power.

The question a table answers is "does method A help", not "do these two trained models differ". A method is a
distribution over training runs, so the unit of replication is the training seed: seed s of A and seed s of B
share the split, the initial weights and the batch order, and ``d_s = AUC(A_s) - AUC(B_s)`` is one paired
observation. Two sources of noise sit in the mean difference ``d = mean_s d_s``:

* **training seeds**: the spread of ``d_s`` over seeds, ``s_d^2 / n`` (the paired t-test's variance);
* **test images**: every seed is scored on the same finite test set, so all ``d_s`` share its sampling error.
  That part is the DeLong variance of the linear contrast ``mean_s AUC(A_s) - mean_s AUC(B_s)`` of the 2n
  correlated AUCs (DeLong, DeLong & Clarke-Pearson 1988, eq. 4-5): ``c' S c`` with ``c = (1/n, ..., -1/n, ...)``.

The primary test adds the two, ``SE^2 = s_d^2 / n + c' S c``, and refers ``t = d / SE`` to a t distribution with
Welch-Satterthwaite degrees of freedom ``(SE^2)^2 / ((s_d^2/n)^2 / (n - 1))`` (Satterthwaite 1946, "An
approximate distribution of estimates of variance components", Biometrics Bulletin 2(6)); only the seed part is
estimated from n values, the DeLong part from thousands of placements. With few seeds it is a paired t-test over
seeds; with a small test set it tends to DeLong on the seed means. Why not either alone: the paired t over seeds
conditions on the one test set (it answers "on these patients"), DeLong on one pair of models ignores the
seed-to-seed training noise and calls noise significant (``none`` against itself gave p = 1.6e-16). The sum
slightly double-counts the seed x test-image interaction, which makes it mildly conservative. When the test
scores are not available the test part is left out and the table says so.

Then, per table: Holm's step-down adjustment across every row (and finding) tested against the baseline (Holm
1979, "A simple sequentially rejective multiple test procedure", Scand. J. Statistics 6(2)), via statsmodels; a
verdict word from the sign and the adjusted p; the minimum detectable effect at 80 % power (noncentral t, Cohen
1988 ch. 2) and the number of seeds a target effect of 0.01 would need with this test set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from cxrgan.errors import CxrganError
from cxrgan.evaluate.stats import delong_covariance, delong_test

ALPHA = 0.05  # two-sided significance level of every verdict
POWER = 0.8  # power at which the minimum detectable effect is reported
TARGET_EFFECT = 0.01  # AUC difference whose required number of seeds is reported
MIN_TEST_POSITIVES = 10  # below this many test positives (or negatives) an AUC is reported as not estimable
MAX_SEEDS_SEARCHED = 10_000  # "seeds needed" beyond this is reported as unreachable

VERDICT_BETTER, VERDICT_WORSE, VERDICT_NONE = "better", "worse", "no detectable difference"


@dataclass(frozen=True)
class Effect:
    """Method minus baseline over paired training seeds, with everything a reader needs to judge it."""

    n_seeds: int  # seeds both methods finished (pairs with a NaN metric dropped)
    delta: float  # mean over seeds of (method - baseline)
    ci_low: float  # 95 % confidence interval of delta (seed and test-image variance)
    ci_high: float
    p: float  # two-sided p-value of delta = 0, before any multiplicity adjustment
    seed_sd: float  # standard deviation of the per-seed differences
    test_se: float  # standard error of delta from test-image sampling (DeLong); NaN when not available
    df: float  # Welch-Satterthwaite degrees of freedom (inf when only the test part is random)
    mde: float  # smallest |delta| detectable with POWER at ALPHA with these seeds and this test set
    seeds_needed: float  # seeds needed to detect TARGET_EFFECT with POWER (inf: this test set is too small)
    p_adjusted: float = float("nan")  # Holm-adjusted p across the rows of one table (set by adjust_holm)

    @property
    def verdict(self) -> str:
        """"better" / "worse" at adjusted p < ALPHA, else "no detectable difference"; why not, when untestable."""
        if self.n_seeds < 2:
            return "needs >= 2 seeds"
        p = self.p_adjusted if not math.isnan(self.p_adjusted) else self.p
        if math.isnan(p):
            return "not testable"
        if p < ALPHA:
            return VERDICT_BETTER if self.delta > 0 else VERDICT_WORSE
        return VERDICT_NONE


def _t_quantile(q: float, df: float) -> float:
    return float(sps.norm.ppf(q)) if math.isinf(df) else float(sps.t.ppf(q, df))


def _welch_df(seed_var: float, test_var: float, n: int) -> float:
    """Satterthwaite df of ``seed_var + test_var`` when only ``seed_var`` is estimated from ``n`` values."""
    if seed_var <= 0:
        return math.inf
    return (seed_var + test_var) ** 2 / (seed_var ** 2 / (n - 1))


def power_of(effect: float, se: float, df: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided level-``alpha`` test of a true difference ``effect`` with standard error ``se``:
    P(|T| > t_crit) for T ~ noncentral t(df, effect / se) (normal when df is infinite)."""
    if se <= 0:
        return 1.0 if effect != 0 else alpha
    critical = _t_quantile(1 - alpha / 2, df)
    shift = abs(effect) / se
    if math.isinf(df):
        return float(sps.norm.sf(critical - shift) + sps.norm.cdf(-critical - shift))
    # the far lower tail is negligible for shift >= 0, and scipy's nct returns NaN for some of its tiny values
    return float(sps.nct.sf(critical, df, shift) + np.nan_to_num(sps.nct.cdf(-critical, df, shift)))


def minimum_detectable_effect(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The |delta| that a two-sided level-``alpha`` test with standard error ``se`` detects with ``power``."""
    if se <= 0:
        return 0.0
    high = _t_quantile(1 - alpha / 2, df) + 1.0
    while power_of(high, 1.0, df, alpha) < power:  # widen the bracket (heavy tails at df = 1 need a wide one)
        high *= 2
    shift = optimize.brentq(lambda x: power_of(x, 1.0, df, alpha) - power, 0.0, high)
    return float(shift * se)


def seeds_needed(target: float, seed_sd: float, test_var: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest number of seeds n >= 2 whose test (same test set, seed sd ``seed_sd``) detects ``target`` with
    ``power``; inf when even infinitely many seeds cannot, because the test set's own variance is too large."""
    if power_of(target, math.sqrt(test_var), math.inf, alpha) < power:
        return math.inf
    seed_var = seed_sd ** 2

    def enough(n: int) -> bool:
        se = math.sqrt(seed_var / n + test_var)
        return power_of(target, se, _welch_df(seed_var / n, test_var, n), alpha) >= power

    if not enough(MAX_SEEDS_SEARCHED):
        return math.inf
    low, high = 1, MAX_SEEDS_SEARCHED  # power grows with n: bisect for the first n that is enough
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return float(max(high, 2))


def paired_effect(method: Sequence[float], baseline: Sequence[float], test_variance: float | None = None,
                  alpha: float = ALPHA, power: float = POWER, target: float = TARGET_EFFECT) -> Effect:
    """The primary test: paired per-seed differences, their mean, CI, p-value, power (see the module docstring).

    Args:
        method: per-seed metric of the method.
        baseline: per-seed metric of the baseline, same seed order; pairs with a NaN are dropped.
        test_variance: variance of the mean difference from test-image sampling (``auc_difference_variance``);
            None when the test scores are unknown (the test is then the paired t-test over seeds).
        alpha, power, target: significance level, power and target effect of the power statements.

    With fewer than two seeds the effect has NaN p, CI and power and its verdict says "needs >= 2 seeds".
    """
    a = np.asarray(method, dtype=np.float64).ravel()
    b = np.asarray(baseline, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise CxrganError(f"a paired comparison needs one value per seed for both; got {a.size} and {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    diff = a[keep] - b[keep]
    n, nan = int(diff.size), float("nan")
    test_var = 0.0 if test_variance is None else max(float(test_variance), 0.0)
    test_se = nan if test_variance is None else math.sqrt(test_var)
    if n < 2:
        delta = float(diff.mean()) if n else nan
        return Effect(n, delta, nan, nan, nan, nan, test_se, nan, nan, nan)
    delta, seed_sd = float(diff.mean()), float(diff.std(ddof=1))
    seed_var = seed_sd ** 2 / n
    se = math.sqrt(seed_var + test_var)
    df = _welch_df(seed_var, test_var, n)
    if se == 0.0:  # identical runs: no difference at all, or a constant one with no test-set noise to weigh it
        p = 1.0 if delta == 0 else 0.0
        return Effect(n, delta, delta, delta, p, seed_sd, test_se, df, 0.0, 2.0)
    half = _t_quantile(1 - alpha / 2, df) * se
    p = float(2 * (sps.norm.sf(abs(delta) / se) if math.isinf(df) else sps.t.sf(abs(delta) / se, df)))
    return Effect(n, delta, delta - half, delta + half, p, seed_sd, test_se, df,
                  minimum_detectable_effect(se, df, alpha, power), seeds_needed(target, seed_sd, test_var, alpha, power))


def auc_difference_variance(y: np.ndarray, method_scores: np.ndarray, baseline_scores: np.ndarray) -> float:
    """DeLong variance, over test-image sampling, of ``mean_s AUC(method_s) - mean_s AUC(baseline_s)``.

    Args:
        y: (N,) 0/1 test labels (unknown rows already removed).
        method_scores: (n_seeds, N) scores of the method, one row per seed.
        baseline_scores: (n_seeds, N) scores of the baseline, same seed order.
    """
    a, b = np.atleast_2d(method_scores), np.atleast_2d(baseline_scores)
    if a.shape != b.shape:
        raise CxrganError(f"scores of the two methods differ in shape: {a.shape} and {b.shape}")
    n = a.shape[0]
    _, covariance = delong_covariance(y, np.vstack([a, b]))
    contrast = np.concatenate([np.full(n, 1.0 / n), np.full(n, -1.0 / n)])
    return float(contrast @ covariance @ contrast)


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


def format_p(p: float) -> str:
    """A p-value for a table: three decimals, "<0.001" below that, "n/a" when undefined."""
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def effect_cells(effect: Effect) -> dict[str, str]:
    """The columns every verdict table shows for one comparison, direction and size first."""
    if effect.n_seeds < 2:
        delta = "n/a" if math.isnan(effect.delta) else f"{effect.delta:+.3f}"
        return {"Δ [95% CI]": delta, "p": "n/a", "p (Holm)": "n/a", "verdict": effect.verdict,
                "min. detectable Δ": "n/a", f"seeds for Δ={TARGET_EFFECT:g}": "n/a"}
    needed = "unreachable" if math.isinf(effect.seeds_needed) else f"{effect.seeds_needed:.0f}"
    low, high = max(effect.ci_low, -1.0), min(effect.ci_high, 1.0)  # an AUC difference lies in [-1, 1]
    return {"Δ [95% CI]": f"{effect.delta:+.3f} [{low:+.3f}, {high:+.3f}]",
            "p": format_p(effect.p), "p (Holm)": format_p(effect.p_adjusted), "verdict": effect.verdict,
            "min. detectable Δ": f"{effect.mde:.3f}", f"seeds for Δ={TARGET_EFFECT:g}": needed}


def method_note(n_tests: int, with_test_variance: bool, metric: str = "ROC AUC") -> str:
    """The sentence under every verdict table saying which test made the verdicts."""
    variance = ("the variance adds the seed-to-seed spread of the differences and the test-image sampling "
                "variance of their mean (DeLong), with Welch-Satterthwaite degrees of freedom"
                if with_test_variance else
                "paired t-test over seeds (test scores unavailable, so test-image sampling is not included)")
    return (f"Δ = mean over seeds of ({metric} of the method - {metric} of the baseline), each seed pairing two runs "
            f"on the same split, initial weights and batch order; {variance}. p (Holm): Holm-adjusted over the "
            f"{n_tests} comparison(s) of this table; verdict at adjusted p < {ALPHA:g}. min. detectable Δ: smallest "
            f"difference this run detects with {POWER:.0%} power; seeds for Δ={TARGET_EFFECT:g}: seeds a "
            f"difference of {TARGET_EFFECT:g} would need with this test set ('unreachable': the test set itself "
            "is too small).")


# ---- comparisons of stored scores, and the verdict table -------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One row of a verdict table: what is compared, the effect (None when the AUC is not estimable), and DeLong
    on the seed-averaged scores, which describes these two ensembles on this test set, never the method."""

    row: dict[str, str]  # the row's identity, e.g. {"method": "dcgan"} or {"method": "gan", "finding": "Nodule"}
    effect: Effect | None
    ensemble_p: float = float("nan")
    note: str = ""  # why there is no effect, e.g. "not estimable: 4 test positives"


def compare_auc(row: dict[str, str], y: np.ndarray, method_scores: dict[int, np.ndarray],
                baseline_scores: dict[int, np.ndarray], minimum_positives: int = MIN_TEST_POSITIVES) -> Comparison:
    """The seed-level comparison of ROC AUC on one label column.

    Args:
        row: the row's identity in the table.
        y: (N,) real labels, NaN = unknown (those rows are left out).
        method_scores: seed -> (N,) scores of the method on the same rows.
        baseline_scores: seed -> (N,) scores of the baseline; seeds both have are paired.
        minimum_positives: fewer positives (or negatives) than this makes the AUC "not estimable".
    """
    y = np.asarray(y, dtype=np.float64)
    known = ~np.isnan(y)
    positives, negatives = int((y[known] == 1).sum()), int((y[known] == 0).sum())
    if min(positives, negatives) < minimum_positives:
        return Comparison(row, None, note=f"not estimable: {positives} test positives, {negatives} negatives "
                                          f"(fewer than {minimum_positives})")
    seeds = sorted(set(method_scores) & set(baseline_scores))
    if not seeds:
        return Comparison(row, None, note="no seed finished by both")
    y_known = y[known].astype(np.int64)
    a = np.stack([np.asarray(method_scores[s], np.float64)[known] for s in seeds])
    b = np.stack([np.asarray(baseline_scores[s], np.float64)[known] for s in seeds])
    aucs_a = [roc_auc_score(y_known, s) for s in a]
    aucs_b = [roc_auc_score(y_known, s) for s in b]
    effect = paired_effect(aucs_a, aucs_b, auc_difference_variance(y_known, a, b))
    return Comparison(row, effect, ensemble_p=delong_test(y_known, a.mean(axis=0), b.mean(axis=0)).p)


def compare_values(row: dict[str, str], method_values: dict[int, float], baseline_values: dict[int, float]) -> Comparison:
    """The seed-level comparison of a per-seed number without test scores (e.g. a mean over findings): paired t."""
    seeds = sorted(set(method_values) & set(baseline_values))
    if not seeds:
        return Comparison(row, None, note="no seed finished by both")
    return Comparison(row, paired_effect([method_values[s] for s in seeds], [baseline_values[s] for s in seeds]))


def verdict_table(comparisons: Sequence[Comparison]) -> pd.DataFrame:
    """One row per comparison with Holm applied across every testable row: the row keys, seeds, Δ [95% CI], raw
    and adjusted p, verdict, minimum detectable Δ, seeds for Δ = TARGET_EFFECT, and the DeLong p of ensembles."""
    testable = [i for i, c in enumerate(comparisons) if c.effect is not None]
    adjusted = adjust_holm([comparisons[i].effect for i in testable])
    effects: dict[int, Effect] = dict(zip(testable, adjusted))
    rows = []
    for i, comparison in enumerate(comparisons):
        row: dict[str, str] = dict(comparison.row)
        effect = effects.get(i)
        if effect is None:
            row.update({"seeds": "", "Δ [95% CI]": comparison.note, "verdict": "not tested"})
        else:
            row["seeds"] = str(effect.n_seeds)
            row.update(effect_cells(effect))
        row["DeLong p (ensembles, this test set)"] = format_p(comparison.ensemble_p)
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def adjusted_effects(comparisons: Sequence[Comparison]) -> list[Effect | None]:
    """The comparisons' effects with Holm-adjusted p (None where not estimable), in order, for JSON summaries."""
    testable = [i for i, c in enumerate(comparisons) if c.effect is not None]
    adjusted = dict(zip(testable, adjust_holm([comparisons[i].effect for i in testable])))
    return [adjusted.get(i) for i in range(len(comparisons))]


class Verdicts:
    """The comparisons of one table with Holm applied over all of them, looked up by their row keys."""

    def __init__(self, comparisons: Sequence[Comparison]):
        self.items = list(zip(comparisons, adjusted_effects(comparisons)))

    def cells(self, **row: str) -> tuple[str, str]:
        """(Δ [95% CI] or why there is none, verdict word) of the comparison whose row includes ``row``; ("", "")
        when the table has no such comparison (e.g. the baseline's own row)."""
        for comparison, effect in self.items:
            if all(comparison.row.get(key) == value for key, value in row.items()):
                if effect is None:
                    return comparison.note, "not tested"
                return effect_cells(effect)["Δ [95% CI]"], effect.verdict
        return "", ""
