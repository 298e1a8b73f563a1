"""The primary seed-level test (Obuchowski-Rockette / Hillis over seeds), Holm adjustment and power, each against an
independent computation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.power import TTestPower

from cxrgan.evaluate.calibration import NullSimulation, simulate_null_scores
from cxrgan.evaluate.inference import (adjust_holm, effect_from_parts, ensemble_delong_p, estimable,
                                       minimum_detectable_effect, power_of, seed_level_test, seeds_needed)
from cxrgan.evaluate.verdicts import compare_auc, compare_macro_auc, effect_cells, method_note, verdict_table
from cxrgan.evaluate.stats import delong_covariance, delong_placements, delong_test


def _arms(rng: np.random.Generator, n_seeds: int = 4, n_test: int = 300, method_image_sd: float = 0.0):
    """Labels and two arms' scores that share an image effect, with a seed x image interaction."""
    y = rng.integers(0, 2, n_test).astype(float)
    common = rng.normal(size=n_test)
    method_image = method_image_sd * rng.normal(size=n_test)
    a = np.stack([1.0 * y + common + method_image + 0.5 * rng.normal(size=n_test) for _ in range(n_seeds)])
    b = np.stack([0.9 * y + common + 0.5 * rng.normal(size=n_test) for _ in range(n_seeds)])
    return y, a, b


def test_without_a_test_image_term_it_is_the_paired_t_test_of_scipy():
    a = np.array([0.931, 0.925, 0.940, 0.918, 0.935])
    b = np.array([0.924, 0.927, 0.930, 0.915, 0.921])
    effect = effect_from_parts(a - b)
    reference = sps.ttest_rel(a, b)
    assert effect.p == pytest.approx(reference.pvalue, rel=1e-12)
    assert effect.df == pytest.approx(4) and effect.df_method == "paired t (n - 1)"
    interval = reference.confidence_interval(0.95)
    assert (effect.ci_low, effect.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-12)
    assert effect.delta == pytest.approx(np.mean(a - b))
    assert math.isnan(effect.test_se) and math.isnan(effect.kappa)


def test_the_test_image_term_and_hillis_df_by_hand_worked_example():
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, seed part of the variance 0.0001 / 3; kappa = 1e-4
    effect = effect_from_parts([0.01, 0.02, 0.03], kappa=1e-4)
    seed_var = 1e-4 / 3
    se = math.sqrt(seed_var + 1e-4)
    df = (seed_var + 1e-4) ** 2 / (seed_var ** 2 / 2)  # Hillis (2007): 32.0
    assert effect.df == pytest.approx(df) and df == pytest.approx(32.0) and effect.df_method == "Hillis 2007"
    assert effect.p == pytest.approx(2 * sps.t.sf(0.02 / se, df))
    assert effect.ci_high - effect.delta == pytest.approx(sps.t.ppf(0.975, df) * se)
    assert effect.test_se == pytest.approx(0.01) and effect.variance == pytest.approx(se ** 2)
    # a negative estimate of kappa adds nothing: the paired t over seeds (df = n - 1)
    negative = effect_from_parts([0.01, 0.02, 0.03], kappa=-1e-4)
    assert negative.p == pytest.approx(sps.ttest_1samp([0.01, 0.02, 0.03], 0).pvalue) and negative.df == 2
    # more seeds shrink only the seed part: the variance tends to the kappa floor
    assert effect.variance_at(10_000) == pytest.approx(1e-4, rel=1e-3) and effect.df_at(3) == pytest.approx(df)
    assert effect.mde_at(3) == pytest.approx(effect.mde) and effect.mde_at(30) < effect.mde
    assert effect.mde_at(10_000) == pytest.approx(0.01 * (1.959964 + 0.841621), rel=1e-3)  # the floor's own MDE


def test_one_seed_gives_no_fake_p_value():
    effect = effect_from_parts([0.02], kappa=1e-4)
    assert effect.n_seeds == 1 and math.isnan(effect.p) and math.isnan(effect.ci_low)
    assert effect.verdict == "needs >= 2 seeds"
    assert effect_from_parts([np.nan, np.nan]).n_seeds == 0


def _obuchowski_rockette(aucs_a: np.ndarray, aucs_b: np.ndarray, covariance: np.ndarray) -> tuple[float, float, float]:
    """(F, ddf_H, p) of the OR analysis in its ANOVA form for t = 2 tests and r readers (Hillis 2007; the
    textbook computation from MS(T), MS(T x R) and Cov2, Cov3 averaged over the blocks of the 2r x 2r covariance)."""
    theta = np.stack([aucs_a, aucs_b])
    r = theta.shape[1]
    ms_t = r * np.var(theta.mean(axis=1), ddof=1)
    interaction = theta - theta.mean(axis=1, keepdims=True) - theta.mean(axis=0, keepdims=True) + theta.mean()
    ms_tr = (interaction ** 2).sum() / (r - 1)
    off = ~np.eye(r, dtype=bool)
    cov2 = np.mean([covariance[:r, :r][off].mean(), covariance[r:, r:][off].mean()])
    cov3 = covariance[:r, r:][off].mean()
    denominator = ms_tr + max(r * (cov2 - cov3), 0.0)
    f = ms_t / denominator
    ddf = denominator ** 2 / (ms_tr ** 2 / (r - 1))
    return f, ddf, float(sps.f.sf(f, 1, ddf))


def test_seed_level_test_is_the_obuchowski_rockette_hillis_test():
    rng = np.random.default_rng(0)
    y, a, b = _arms(rng, n_seeds=5, method_image_sd=0.3)
    effect = seed_level_test(y, a, b)
    aucs, covariance = delong_covariance(y, np.vstack([a, b]))
    f, ddf, p = _obuchowski_rockette(aucs[:5], aucs[5:], covariance)
    assert effect.kappa > 0  # the method x image term is shared by the seeds: a real test-image floor
    assert (effect.delta / math.sqrt(effect.variance)) ** 2 == pytest.approx(f, rel=1e-10)
    assert effect.df == pytest.approx(ddf, rel=1e-10) and effect.p == pytest.approx(p, rel=1e-8)
    # kappa: the mean DeLong covariance of distinct seeds' differences
    contrast = np.hstack([np.eye(5), -np.eye(5)])
    between = contrast @ covariance @ contrast.T
    assert effect.kappa == pytest.approx(between[~np.eye(5, dtype=bool)].mean(), rel=1e-10)
    assert effect.seed_test_var == pytest.approx(np.trace(between) / 5, rel=1e-10)


def test_the_variance_is_unbiased_over_seeds_and_test_sets():
    """Over drawn test sets and trainings, the mean of s_d^2/n + kappa equals the variance of delta (it counts no
    term twice); the seed-only variance misses the shared test-image part."""
    rng = np.random.default_rng(1)
    estimates, seed_only, deltas = [], [], []
    for _ in range(250):
        y, patients, a, b = simulate_null_scores("test-set", 4, NullSimulation(), rng)
        effect = seed_level_test(y, a, b, patients)
        deltas.append(effect.delta)
        estimates.append(effect.seed_sd ** 2 / 4 + effect.kappa)
        seed_only.append(effect.seed_sd ** 2 / 4)
    empirical = np.var(deltas, ddof=1)
    assert np.mean(estimates) == pytest.approx(empirical, rel=0.2)
    assert np.mean(seed_only) < 0.6 * empirical


def test_one_image_per_patient_gives_the_unclustered_test():
    rng = np.random.default_rng(2)
    y, a, b = _arms(rng)
    unclustered = seed_level_test(y, a, b)
    singletons = seed_level_test(y, a, b, groups=np.array([f"p{i}" for i in range(len(y))]))
    assert singletons.clustered and not unclustered.clustered
    for field in ("delta", "p", "kappa", "seed_test_var", "df", "mde", "ci_low"):
        assert getattr(singletons, field) == pytest.approx(getattr(unclustered, field), rel=1e-10), field
    assert ensemble_delong_p(y, a, b, np.arange(len(y))) == pytest.approx(
        delong_test(y, a.mean(axis=0), b.mean(axis=0)).p, rel=1e-10)


def test_patient_clusters_widen_the_test_image_term():
    """Pairs of near-duplicate images (one patient, two views): counted as independent, their shared error looks
    like twice the evidence; clustered, the floor kappa is larger."""
    rng = np.random.default_rng(3)
    y, a, b = _arms(rng, n_test=200, method_image_sd=0.4)
    jitter = lambda s: s + 0.05 * rng.normal(size=s.shape)  # noqa: E731
    twice_y, twice_a, twice_b = np.r_[y, y], np.hstack([a, jitter(a)]), np.hstack([b, jitter(b)])
    patients = np.r_[np.arange(200), np.arange(200)]
    clustered = seed_level_test(twice_y, twice_a, twice_b, patients)
    independent = seed_level_test(twice_y, twice_a, twice_b)
    assert clustered.kappa > 1.6 * independent.kappa
    assert clustered.kappa == pytest.approx(seed_level_test(y, a, b).kappa, rel=0.25)


def test_macro_of_copies_is_the_single_finding_and_cross_findings_match_a_patient_bootstrap():
    rng = np.random.default_rng(4)
    y, a, b = _arms(rng, n_seeds=3, method_image_sd=0.3)
    single = seed_level_test(y, a, b)
    copies = seed_level_test(np.stack([y, y], axis=1), np.stack([a, a], axis=2), np.stack([b, b], axis=2))
    assert copies.kappa == pytest.approx(single.kappa, rel=1e-10) and copies.p == pytest.approx(single.p, rel=1e-10)

    # Two findings on the same 300 images of 150 patients, a few unknown labels: the DeLong-Obuchowski covariance of
    # the macro contrasts against a bootstrap of patients.
    n_test, n_seeds = 300, 3
    patients = np.repeat(np.arange(150), 2)
    patient_effect = rng.normal(size=150)[patients]
    labels = np.stack([rng.integers(0, 2, n_test), rng.integers(0, 2, n_test)], axis=1).astype(float)
    labels[rng.choice(n_test, 20, replace=False), 1] = np.nan
    shared = rng.normal(size=(n_test, 2)) + patient_effect[:, None]
    method_part = 0.4 * rng.normal(size=(n_test, 2))
    a = np.stack([np.nan_to_num(labels) + shared + method_part + 0.5 * rng.normal(size=(n_test, 2))
                  for _ in range(n_seeds)])
    b = np.stack([np.nan_to_num(labels) + shared + 0.5 * rng.normal(size=(n_test, 2)) for _ in range(n_seeds)])
    effect = seed_level_test(labels, a, b, patients)

    def macro_differences(rows: np.ndarray) -> np.ndarray:
        per_finding = []
        for f in range(2):
            keep = rows[~np.isnan(labels[rows, f])]
            aucs = delong_placements(labels[keep, f], np.concatenate([a[:, keep, f], b[:, keep, f]]))[0]
            per_finding.append(aucs[:n_seeds] - aucs[n_seeds:])
        return np.mean(per_finding, axis=0)

    boot_rng = np.random.default_rng(5)
    draws = []  # resampling patients with replacement, each drawn patient with all its rows
    for _ in range(300):
        chosen = boot_rng.integers(0, 150, 150)
        draws.append(macro_differences(np.concatenate([np.flatnonzero(patients == c) for c in chosen])))
    boot_cov = np.cov(np.array(draws).T)
    off = ~np.eye(n_seeds, dtype=bool)
    assert effect.kappa == pytest.approx(boot_cov[off].mean(), rel=0.3)
    assert effect.seed_test_var == pytest.approx(np.trace(boot_cov) / n_seeds, rel=0.25)


def test_identical_arms_and_a_constant_difference_are_not_testable():
    rng = np.random.default_rng(6)
    y, a, _ = _arms(rng, n_seeds=3)
    same = seed_level_test(y, a, a.copy())
    assert same.delta == 0 and math.isnan(same.p) and same.untestable
    cells = effect_cells(same)
    assert cells["min. detectable Δ"] == "n/a" and cells["seeds for Δ=0.01"] == "n/a" and cells["p"] == "n/a"
    assert cells["verdict"].startswith("n/a: identical")
    constant = effect_from_parts([0.01, 0.01, 0.01], kappa=0.0)
    assert math.isnan(constant.p) and constant.verdict.startswith("n/a: the same Δ on every seed")
    assert adjust_holm([same, constant])[0].p_adjusted != 0  # left out of the Holm family (NaN p)


def test_holm_adjustment_by_hand():
    effects = [effect_from_parts([1, 2, 3]) for _ in range(4)]
    effects = [replace(e, p=p) for e, p in zip(effects, [0.01, 0.04, 0.03, 0.005])]
    effects.append(effect_from_parts([1]))  # untestable: left out of the family
    adjusted = [e.p_adjusted for e in adjust_holm(effects)]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])


def test_verdict_words_follow_direction_and_adjusted_p():
    differences = np.array([0.05, 0.05, 0.05, 0.054])
    better, worse = effect_from_parts(differences), effect_from_parts(-differences)
    noise = effect_from_parts([-0.01, 0.02, -0.02, 0.01])
    assert (better.verdict, worse.verdict, noise.verdict) == ("better", "worse", "no detectable difference")
    # a large raw-p family: the same effect can lose its verdict after Holm
    family = adjust_holm([effect_from_parts([0.01, 0.015, 0.015])] + [noise] * 9)
    assert family[0].p < 0.05 and family[0].p_adjusted > family[0].p


def test_minimum_detectable_effect_matches_statsmodels_power_for_the_t_test():
    s, n = 0.008, 5
    effect = effect_from_parts([s * x for x in (1.26, -0.63, 0.0, 0.63, -1.26)])
    d = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert effect.mde == pytest.approx(d * effect.seed_sd, rel=1e-6)
    # normal limit: (z_0.975 + z_0.8) * se
    assert minimum_detectable_effect(0.01, math.inf) == pytest.approx(0.01 * (1.959964 + 0.841621), rel=1e-5)
    assert power_of(0.0, 0.01, math.inf) == pytest.approx(0.05)


def test_seeds_needed_has_kappa_as_its_floor():
    sd = 0.012
    expected = math.ceil(TTestPower().solve_power(effect_size=0.01 / sd, alpha=0.05, power=0.8))
    assert seeds_needed(0.01, sd, 0.0) == expected
    assert seeds_needed(0.01, sd, kappa=-1e-5) == expected  # an estimate below zero is no floor
    assert seeds_needed(0.01, sd, kappa=0.002 ** 2) > expected  # a shared test-image part needs more seeds
    assert math.isinf(seeds_needed(0.01, sd, kappa=0.004 ** 2))  # 0.01 / 0.004 < z_0.975 + z_0.8: no seeds suffice


def test_seeds_needed_is_reachable_when_the_true_floor_is_zero():
    """The issue's finding: with the test-image term held at its 3-seed size, 95 % of simulated same-method runs
    (true floor zero) said "unreachable". With kappa as the floor almost none do."""
    rng = np.random.default_rng(7)
    needed = [seed_level_test(y, a, b, patients).seeds_needed
              for y, patients, a, b in (simulate_null_scores("same-method", 3, NullSimulation(), rng)
                                        for _ in range(60))]
    assert np.mean(np.isinf(needed)) < 0.1


def test_estimable_needs_ten_of_each_class():
    assert estimable(np.r_[np.ones(10), np.zeros(10)])
    assert not estimable(np.r_[np.ones(9), np.zeros(50), [np.nan] * 5])


def test_a_table_of_eight_rows_prints_holm_adjusted_p_and_the_minimum_detectable_effect():
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 300).astype(float)
    patients = np.arange(300) // 2
    base = {s: y + rng.normal(size=300) for s in range(5)}
    comparisons = []
    for k in range(8):  # eight methods, the last clearly better than the baseline
        shift = 1.5 if k == 7 else 0.0
        mine = {s: (1 + shift) * y + rng.normal(size=300) for s in range(5)}
        comparisons.append(compare_auc({"method": f"m{k}"}, y, mine, base, patients))
    comparisons.append(compare_auc({"method": "same"}, y, dict(base), base, patients))  # identical arms
    table = verdict_table(comparisons)
    assert len(table) == 9
    assert {"Δ [95% CI]", "p", "p (Holm)", "verdict", "min. detectable Δ", "seeds for Δ=0.01"} <= set(table.columns)
    tested = table.iloc[:8]
    raw = tested["p"].replace("<0.001", "0.0005").astype(float)
    holm = tested["p (Holm)"].replace("<0.001", "0.0005").astype(float)
    assert (holm >= raw).all() and (holm > raw).any()
    assert tested["verdict"].iloc[7] == "better"
    assert tested["min. detectable Δ"].astype(float).gt(0).all()
    assert table["verdict"].iloc[8].startswith("n/a") and table["min. detectable Δ"].iloc[8] == "n/a"
    note = method_note(comparisons)
    assert "over the 8 comparison(s)" in note and "one cluster" in note and "not Holm-adjusted" in note
    # a run directory without patient ids: the note says its test images were taken as independent
    assert "independent" in method_note([compare_auc({"method": "m7"}, y, mine, base)])


def test_macro_comparison_averages_only_estimable_findings():
    rng = np.random.default_rng(9)
    n_test = 200
    labels = np.stack([rng.integers(0, 2, n_test), rng.integers(0, 2, n_test), np.r_[np.ones(5), np.zeros(195)]],
                      axis=1).astype(float)
    mine = {s: labels + rng.normal(size=labels.shape) for s in range(3)}
    base = {s: labels + rng.normal(size=labels.shape) for s in range(3)}
    macro = compare_macro_auc({"finding": "macro"}, labels, mine, base)
    first_two = seed_level_test(labels[:, :2], np.stack(list(mine.values()))[:, :, :2],
                                np.stack(list(base.values()))[:, :, :2])
    assert macro.effect.delta == pytest.approx(first_two.delta) and macro.effect.p == pytest.approx(first_two.p)
    assert compare_macro_auc({"finding": "macro"}, labels, mine, base, columns=[2]).effect is None
