"""cxrgan.evaluate.stats and .bootstrap: DeLong against brute force and pROC's aSAH results, bootstrap, seeds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import f1_score, roc_auc_score

from cxrgan.errors import CxrganError
from cxrgan.evaluate import (
    aggregate_seeds,
    bootstrap_ci,
    bootstrap_diff_ci,
    combine_pvalues,
    delong_ci,
    delong_covariance,
    delong_diff_ci,
    delong_test,
)

# pROC's placement values for the aSAH data (113 patients: 41 "Poor" outcome = cases, 72 "Good" = controls;
# Turck et al. 2010, Intensive Care Med 36:107-115), from pROC's test helper
# tests/testthat/helper-deLongPlacementsCpp-expected.R (Robin et al. 2011, BMC Bioinformatics 12:77), stored as
# integers: 2 * 72 * V10 per case and 2 * 41 * V01 per control, in data order.
ASAH_PLACEMENTS = {
    "wfns": (
        [117, 94, 128, 140, 140, 140, 140, 94, 140, 94, 37, 94, 140, 128, 128, 94, 140, 140, 140, 94, 140, 94, 140, 94,
         128, 140, 128, 128, 37, 128, 128, 94, 94, 140, 140, 94, 94, 140, 140, 140, 140],
        [80, 80, 80, 80, 18, 80, 66, 66, 80, 66, 66, 80, 80, 80, 66, 80, 66, 80, 80, 53, 44, 80, 44, 80, 18, 18, 80, 80,
         66, 44, 80, 80, 66, 66, 80, 66, 80, 66, 66, 80, 80, 80, 80, 66, 80, 66, 80, 80, 53, 66, 44, 66, 80, 44, 80, 80,
         18, 44, 66, 66, 80, 80, 80, 53, 80, 66, 66, 44, 44, 80, 80, 80],
    ),
    "s100b": (
        [81, 63, 103, 78, 130, 144, 140, 26, 123, 50, 26, 128, 126, 139, 144, 118, 144, 144, 144, 26, 144, 120, 0, 50,
         116, 144, 118, 144, 38, 118, 81, 63, 74, 116, 144, 88, 144, 121, 144, 144, 130],
        [58, 55, 66, 80, 28, 52, 66, 66, 80, 73, 80, 70, 63, 77, 52, 77, 63, 58, 52, 80, 53, 55, 36, 70, 24, 28, 53, 77,
         32, 28, 63, 73, 70, 73, 80, 58, 66, 55, 54, 80, 80, 70, 80, 70, 73, 53, 70, 73, 37, 63, 42, 77, 66, 39, 77, 80,
         48, 34, 66, 54, 73, 55, 66, 77, 80, 52, 54, 28, 52, 54, 24, 27],
    ),
    "ndka": (
        [116, 90, 98, 110, 6, 40, 74, 134, 140, 134, 134, 58, 104, 124, 24, 36, 102, 2, 144, 124, 62, 74, 80, 102, 128,
         93, 124, 36, 142, 109, 6, 49, 124, 6, 48, 134, 76, 104, 138, 74, 110],
        [82, 68, 72, 58, 74, 33, 74, 26, 42, 26, 28, 6, 66, 74, 48, 74, 74, 2, 46, 62, 62, 26, 80, 72, 74, 63, 44, 72,
         34, 8, 72, 74, 48, 66, 72, 44, 16, 18, 60, 50, 4, 74, 28, 62, 58, 58, 34, 80, 28, 48, 66, 58, 26, 58, 50, 72,
         62, 58, 16, 68, 48, 45, 8, 52, 48, 66, 16, 60, 38, 18, 74, 42],
    ),
}


def _rank_equivalent_scores(case_counts: list[int], control_counts: list[int]) -> np.ndarray:
    """Scores with exactly the case-vs-control comparisons that the placements encode.

    A case scores 2 * (controls below) + (controls tied); a control scores 2 * (controls strictly lower) +
    (controls tied with it), read off the control placements (a larger share of cases above means lower).
    Both are on the doubled "controls below" scale, so every case and control compare as in the data.
    """
    controls = np.asarray(control_counts)
    control_scores = [2 * (controls > c).sum() + (controls == c).sum() for c in controls]
    return np.concatenate([np.asarray(case_counts, float), np.asarray(control_scores, float)])


ASAH_Y = np.r_[np.ones(41), np.zeros(72)]
ASAH = {name: _rank_equivalent_scores(*counts) for name, counts in ASAH_PLACEMENTS.items()}


def _brute_delong_variance(y: np.ndarray, s1: np.ndarray, s2: np.ndarray) -> tuple[float, float, float]:
    """var(AUC1), var(AUC2), cov from the O(m n) kernel psi and DeLong's V10/V01 components (1988, eq. 4-5)."""
    components = []
    for s in (s1, s2):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        components.append((psi.mean(axis=1), psi.mean(axis=0)))
    m, n = int(y.sum()), int((y == 0).sum())

    def cov(a: np.ndarray, b: np.ndarray) -> float:
        return float(((a - a.mean()) * (b - b.mean())).sum() / (len(a) - 1))

    (v10_a, v01_a), (v10_b, v01_b) = components
    return (
        cov(v10_a, v10_a) / m + cov(v01_a, v01_a) / n,
        cov(v10_b, v10_b) / m + cov(v01_b, v01_b) / n,
        cov(v10_a, v10_b) / m + cov(v01_a, v01_b) / n,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_auc_and_covariance_match_sklearn_and_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    s1 = np.round(y + rng.normal(size=150), 1)  # rounded: many ties, within and across classes
    s2 = np.round(0.5 * s1 + 0.6 * y + rng.normal(size=150), 1)
    aucs, covariance = delong_covariance(y, np.vstack([s1, s2]))
    assert aucs == pytest.approx([roc_auc_score(y, s1), roc_auc_score(y, s2)], abs=1e-12)
    var1, var2, cov12 = _brute_delong_variance(y, s1, s2)
    assert covariance == pytest.approx(np.array([[var1, cov12], [cov12, var2]]), rel=1e-10)
    result = delong_test(y, s1, s2)
    assert result.z == pytest.approx((aucs[0] - aucs[1]) / np.sqrt(var1 + var2 - 2 * cov12), rel=1e-10)
    assert result.p == pytest.approx(2 * sps.norm.sf(abs(result.z)))


def _brute_obuchowski_covariance(y: np.ndarray, s1: np.ndarray, s2: np.ndarray, patients: np.ndarray) -> float:
    """Cov(AUC1, AUC2) by Obuchowski (1997), loop for loop: per patient the sums of its images' V10 (V01)
    components, S10 = I10 / ((I10 - 1) M) sum_i (X1_i - m_i A1)(X2_i - m_i A2), S01 likewise, S11 over all I
    patients with factor I / (I - 1), and Cov = S10/M + S01/N + (S11_12 + S11_21) / (M N)."""
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    parts = []
    for s in (s1, s2):
        psi = (s[positives][:, None] > s[negatives][None, :]) + 0.5 * (s[positives][:, None] == s[negatives][None, :])
        parts.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    big_m, big_n = len(positives), len(negatives)
    clusters = np.unique(patients)
    i_all, i_10, i_01 = len(clusters), len(np.unique(patients[positives])), len(np.unique(patients[negatives]))
    m = np.array([(patients[positives] == c).sum() for c in clusters])
    n = np.array([(patients[negatives] == c).sum() for c in clusters])
    x = [np.array([v10[patients[positives] == c].sum() for c in clusters]) for _, v10, _ in parts]
    z = [np.array([v01[patients[negatives] == c].sum() for c in clusters]) for _, _, v01 in parts]
    (a1, _, _), (a2, _, _) = parts
    s10 = i_10 / ((i_10 - 1) * big_m) * np.sum((x[0] - m * a1) * (x[1] - m * a2))
    s01 = i_01 / ((i_01 - 1) * big_n) * np.sum((z[0] - n * a1) * (z[1] - n * a2))
    s11_12 = i_all / (i_all - 1) * np.sum((x[0] - m * a1) * (z[1] - n * a2))
    s11_21 = i_all / (i_all - 1) * np.sum((x[1] - m * a2) * (z[0] - n * a1))
    return float(s10 / big_m + s01 / big_n + (s11_12 + s11_21) / (big_m * big_n))


def test_clustered_delong_is_obuchowski_1997_and_equals_delong_with_one_image_per_patient() -> None:
    rng = np.random.default_rng(11)
    patients = np.repeat(np.arange(90), rng.integers(1, 4, 90))  # 1-3 images per patient
    n_rows = len(patients)
    y = (rng.random(n_rows) < 0.4).astype(int)  # patients with both classes too
    patient_effect = rng.normal(size=90)[patients]
    s1 = np.round(y + patient_effect + rng.normal(size=n_rows), 1)
    s2 = np.round(0.7 * y + patient_effect + rng.normal(size=n_rows), 1)
    _, covariance = delong_covariance(y, np.vstack([s1, s2]), groups=patients.astype(str))
    for (i, a), (j, b) in [((0, s1), (0, s1)), ((0, s1), (1, s2)), ((1, s2), (1, s2))]:
        assert covariance[i, j] == pytest.approx(_brute_obuchowski_covariance(y, a, b, patients), rel=1e-10)
    clustered = delong_test(y, s1, s2, groups=patients)
    assert clustered.z == pytest.approx((clustered.auc1 - clustered.auc2) / np.sqrt(
        covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]), rel=1e-10)
    # one image per patient (and rows without an id, each its own patient): exactly DeLong
    singles = np.array([f"p{k}" for k in range(n_rows)])
    singles[::7] = ""
    _, unclustered = delong_covariance(y, np.vstack([s1, s2]))
    assert delong_covariance(y, np.vstack([s1, s2]), groups=singles)[1] == pytest.approx(unclustered, rel=1e-10)
    assert delong_ci(y, s1, groups=singles).variance == pytest.approx(delong_ci(y, s1).variance, rel=1e-10)
    assert delong_diff_ci(y, s1, s2, groups=np.arange(n_rows)).low == pytest.approx(delong_diff_ci(y, s1, s2).low)


def test_clustered_delong_needs_two_patients_per_class() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    with pytest.raises(CxrganError, match="at least 2 patients each; got 1 and 3"):
        delong_covariance(y, np.arange(6.0), groups=np.array(["a", "a", "a", "b", "c", "d"]))


def test_rank_reconstruction_preserves_every_case_control_comparison() -> None:
    """The aSAH check below rebuilds scores from placements; verify that rebuild on random tied data."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        cases, controls = rng.integers(0, 6, rng.integers(1, 12)), rng.integers(0, 6, rng.integers(1, 12))
        psi = (cases[:, None] > controls[None, :]) + 0.5 * (cases[:, None] == controls[None, :])
        rebuilt = _rank_equivalent_scores(
            np.round(2 * len(controls) * psi.mean(axis=1)), np.round(2 * len(cases) * psi.mean(axis=0))
        )
        x, y = rebuilt[: len(cases)], rebuilt[len(cases):]
        assert np.array_equal(psi, (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :]))


def test_delong_reproduces_proc_published_asah_results() -> None:
    """Numbers from pROC's own tests (tests/testthat/test-var.R, test-roc.test.R) on the aSAH data."""
    assert delong_ci(ASAH_Y, ASAH["wfns"]).auc == pytest.approx(0.823678861788618, abs=1e-12)
    assert delong_ci(ASAH_Y, ASAH["s100b"]).auc == pytest.approx(0.731368563685637, abs=1e-12)
    assert delong_ci(ASAH_Y, ASAH["ndka"]).auc == pytest.approx(0.611957994579946, abs=1e-12)
    assert delong_ci(ASAH_Y, ASAH["wfns"]).variance == pytest.approx(0.00146991470882363, rel=1e-9)
    assert delong_ci(ASAH_Y, ASAH["ndka"]).variance == pytest.approx(0.0031908105493913, rel=1e-9)
    assert delong_ci(ASAH_Y, ASAH["s100b"]).variance == pytest.approx(0.00266868245717244, rel=1e-9)
    expected = {  # roc.test(first, second): Z, p, 95% CI of AUC1 - AUC2
        ("wfns", "s100b"): (2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
        ("wfns", "ndka"): (2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
        ("ndka", "s100b"): (-1.39077002573558, 0.164295175223054, -0.2876917446341914, 0.0488706064228094),
    }
    for (first, second), (z, p, low, high) in expected.items():
        result = delong_test(ASAH_Y, ASAH[first], ASAH[second])
        assert (result.z, result.p) == pytest.approx((z, p), rel=1e-9)
        interval = delong_diff_ci(ASAH_Y, ASAH[first], ASAH[second])
        assert (interval.low, interval.high) == pytest.approx((low, high), rel=1e-9)
        swapped = delong_test(ASAH_Y, ASAH[second], ASAH[first])
        assert swapped.z == pytest.approx(-z, rel=1e-9) and swapped.p == pytest.approx(p, rel=1e-9)
    # pROC's documented ci.auc(aSAH$outcome, aSAH$s100b): 95% CI 0.6301-0.8326 (DeLong).
    s100b = delong_ci(ASAH_Y, ASAH["s100b"])
    assert (round(s100b.low, 4), round(s100b.high, 4)) == (0.6301, 0.8326)


def test_delong_identical_and_degenerate_scorers_need_no_division_by_zero() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    s = y + rng.normal(size=80)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = delong_test(y, s, s.copy())
        perfect_vs_constant = delong_test(y, y.astype(float), np.zeros(80))
        monotone = delong_test(y, s, np.exp(s))  # same ranks, so the same AUC and placements
    assert (same.z, same.p) == (0.0, 1.0) and same.auc1 == same.auc2
    assert (monotone.z, monotone.p) == (0.0, 1.0)
    # AUC 1 and AUC 0.5 with constant placements: zero variance, a certain difference.
    assert perfect_vs_constant.auc1 == 1.0 and perfect_vs_constant.auc2 == 0.5
    assert perfect_vs_constant.z == np.inf and perfect_vs_constant.p == 0.0


def test_delong_pvalues_are_uniform_under_the_null() -> None:
    """Two independent noisy scorers of equal quality: P(p < 0.05) ~ 0.05 and p ~ U(0, 1)."""
    rng = np.random.default_rng(2024)
    pvalues = []
    for _ in range(600):
        y = (rng.random(120) < 0.3).astype(int)
        pvalues.append(delong_test(y, y + rng.normal(size=120), y + rng.normal(size=120)).p)
    pvalues = np.array(pvalues)
    assert 0.025 <= (pvalues < 0.05).mean() <= 0.085
    assert sps.kstest(pvalues, "uniform").pvalue > 0.01


def test_delong_rejects_too_few_rows_per_class() -> None:
    with pytest.raises(CxrganError, match="at least 2 positives and 2 negatives; got 1 and 3"):
        delong_test(np.array([1, 0, 0, 0]), np.arange(4.0), np.arange(4.0))
    with pytest.raises(CxrganError, match="second scores: 4 labels but 3 scores"):
        delong_test(np.array([1, 1, 0, 0]), np.arange(4.0), np.arange(3.0))


def test_bootstrap_ci_is_stratified_and_reproducible() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.2).astype(int)
    s = y + rng.normal(size=200)
    seen = []

    def counting_auc(y_boot: np.ndarray, s_boot: np.ndarray) -> float:
        seen.append(int(y_boot.sum()))
        return roc_auc_score(y_boot, s_boot)

    generic = bootstrap_ci(y, s, counting_auc, n_boot=300, random_state=7)
    assert len(seen) == 301 and set(seen) == {int(y.sum())}  # full data, then resamples with the same class counts
    fast = bootstrap_ci(y, s, "roc_auc", n_boot=300, random_state=7)
    assert fast == pytest.approx(generic, abs=1e-12)  # vectorised AUC path, same resamples, same answer
    assert fast.estimate == pytest.approx(roc_auc_score(y, s))
    assert fast.low < fast.estimate < fast.high
    assert bootstrap_ci(y, s, "roc_auc", n_boot=300, random_state=7) == fast
    assert bootstrap_ci(y, s, "roc_auc", n_boot=300, random_state=8) != fast
    f1_interval = bootstrap_ci(y, s, "f1", n_boot=200, random_state=0, threshold=0.5)
    assert f1_interval.estimate == pytest.approx(f1_score(y, s >= 0.5))
    with pytest.raises(CxrganError, match="both classes"):
        bootstrap_ci(np.zeros(10), s[:10], "roc_auc")
    with pytest.raises(CxrganError, match="alpha"):
        bootstrap_ci(y, s, "roc_auc", alpha=1.5)


def test_bootstrap_and_delong_agree_on_real_kermany_test_labels(kermany) -> None:
    """Real test-split labels (234 normal / 390 pneumonia) with a synthetic scorer: two independent intervals."""
    y = kermany.split("test").binary_targets()
    rng = np.random.default_rng(0)
    s = 1.3 * y + rng.normal(size=len(y))
    boot = bootstrap_ci(y, s, "roc_auc", n_boot=2000, random_state=0)
    analytic = delong_ci(y, s)
    assert boot.estimate == pytest.approx(analytic.auc)
    assert boot.low == pytest.approx(analytic.low, abs=0.01) and boot.high == pytest.approx(analytic.high, abs=0.01)


def test_bootstrap_diff_ci() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 150)
    strong, weak = 2 * y + rng.normal(size=150), 0.3 * y + rng.normal(size=150)
    assert tuple(bootstrap_diff_ci(y, strong, strong, "roc_auc", n_boot=100, random_state=0)) == (0.0, 0.0, 0.0)
    diff = bootstrap_diff_ci(y, strong, weak, "roc_auc", n_boot=300, random_state=0)
    assert diff.estimate == pytest.approx(roc_auc_score(y, strong) - roc_auc_score(y, weak))
    assert 0 < diff.low < diff.estimate < diff.high
    generic = bootstrap_diff_ci(y, strong, weak, roc_auc_score, n_boot=300, random_state=0)
    assert diff == pytest.approx(generic, abs=1e-12)  # vectorised AUC path, same resamples
    f1_diff = bootstrap_diff_ci(y, strong, weak, "f1", n_boot=100, random_state=0, threshold=0.5)
    assert f1_diff.estimate == pytest.approx(f1_score(y, strong >= 0.5) - f1_score(y, weak >= 0.5))


def test_aggregate_seeds_t_interval() -> None:
    values = [0.81, 0.84, 0.79, 0.86, 0.83]
    result = aggregate_seeds(values)
    low, high = sps.t.interval(0.95, df=4, loc=np.mean(values), scale=sps.sem(values))
    assert result["n"] == 5 and result["mean"] == pytest.approx(np.mean(values))
    assert result["sd"] == pytest.approx(np.std(values, ddof=1))
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high))
    assert aggregate_seeds([*values, np.nan]) == result  # a seed where the metric is undefined is left out
    single = aggregate_seeds([0.8])
    assert single["n"] == 1 and single["mean"] == 0.8 and np.isnan(single["ci_low"])
    assert aggregate_seeds([])["n"] == 0


def test_combine_pvalues_formulas() -> None:
    p = np.array([0.04, 0.20, 0.01, 0.50])
    assert combine_pvalues(p, "bonferroni") == pytest.approx(0.04)
    assert combine_pvalues(p, "fisher") == pytest.approx(sps.chi2.sf(-2 * np.log(p).sum(), df=8))
    assert combine_pvalues(p, "stouffer") == pytest.approx(sps.norm.sf(sps.norm.isf(p).sum() / 2))
    assert combine_pvalues([0.3, 0.9], "bonferroni") == 0.6 and combine_pvalues([0.6, 0.9]) == 1.0
    assert 0.0 <= combine_pvalues([0.0, 1.0], "stouffer") < 0.5  # p = 0 and p = 1 are clipped: no NaN
    assert combine_pvalues([0.0, 0.3], "fisher") < 1e-200
    with pytest.raises(CxrganError, match="number 1 is 1.2"):
        combine_pvalues([0.1, 1.2])
    with pytest.raises(CxrganError, match="unknown p-value combination 'tippett'"):
        combine_pvalues([0.1], "tippett")


def test_seed_cell_clips_the_t_interval_to_the_metric_range():
    from cxrgan.evaluate.summary import seed_cell

    # mean 0.963, t-interval [0.827, 1.099] before clipping
    assert seed_cell([0.9, 0.99, 0.999]) == "0.963 [0.827, 1.000]"
    assert seed_cell([0.05, -0.04]) == "0.005 [0.000, 0.577]"
    # AUC differences keep their negative side
    assert seed_cell([0.05, -0.04], bounds=(-1.0, 1.0)) == "0.005 [-0.567, 0.577]"
    assert seed_cell([0.8]) == "0.800"
    assert seed_cell([]) == "n/a" and seed_cell([float("nan")]) == "n/a"
