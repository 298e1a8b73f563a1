"""The primary seed-level test, Holm adjustment and power, each against an independent computation."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score
from statsmodels.stats.power import TTestPower

from cxrgan.evaluate.inference import (
    adjust_holm,
    auc_difference_variance,
    estimable,
    minimum_detectable_effect,
    paired_effect,
    power_of,
    seeds_needed,
)
from cxrgan.evaluate.stats import _paired_delong


def test_without_test_variance_it_is_the_paired_t_test_of_scipy():
    a = np.array([0.931, 0.925, 0.940, 0.918, 0.935])
    b = np.array([0.924, 0.927, 0.930, 0.915, 0.921])
    effect = paired_effect(a, b)
    reference = sps.ttest_rel(a, b)
    assert effect.p == pytest.approx(reference.pvalue, rel=1e-12)
    assert effect.df == pytest.approx(4)
    interval = reference.confidence_interval(0.95)
    assert (effect.ci_low, effect.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-12)
    assert effect.delta == pytest.approx(np.mean(a - b))
    assert math.isnan(effect.test_se)


def test_test_variance_enters_by_hand_worked_example():
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, seed variance of the mean 0.0001 / 3
    a, b = [0.91, 0.92, 0.93], [0.90, 0.90, 0.90]
    test_var = 1e-4
    effect = paired_effect(a, b, test_variance=test_var)
    seed_var = 1e-4 / 3
    se = math.sqrt(seed_var + test_var)  # 0.011547
    df = (seed_var + test_var) ** 2 / (seed_var ** 2 / 2)  # 32.0
    assert effect.df == pytest.approx(df) and df == pytest.approx(32.0)
    assert effect.p == pytest.approx(2 * sps.t.sf(0.02 / se, df))
    assert effect.ci_high - effect.delta == pytest.approx(sps.t.ppf(0.975, df) * se)
    assert effect.test_se == pytest.approx(0.01)
    # the seed-only test is more confident than the one that also counts the test images
    assert paired_effect(a, b).p < effect.p


def test_one_seed_gives_no_fake_p_value():
    effect = paired_effect([0.93], [0.91], test_variance=1e-4)
    assert effect.n_seeds == 1 and math.isnan(effect.p) and math.isnan(effect.ci_low)
    assert effect.verdict == "needs >= 2 seeds"
    assert paired_effect([np.nan, 0.9], [0.8, np.nan]).n_seeds == 0


def test_auc_difference_variance_with_one_seed_is_the_paired_delong_variance():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s1, s2 = y + rng.normal(size=300), 0.6 * y + rng.normal(size=300)
    assert auc_difference_variance(y, s1[None], s2[None]) == pytest.approx(_paired_delong(y, s1, s2)[2], rel=1e-12)


def test_auc_difference_variance_of_seed_means_matches_a_bootstrap_over_test_images():
    rng = np.random.default_rng(1)
    n_test, n_seeds = 400, 4
    y = rng.integers(0, 2, n_test)
    common = rng.normal(size=n_test)  # what every model sees in an image
    a = np.stack([1.0 * y + common + 0.5 * rng.normal(size=n_test) for _ in range(n_seeds)])
    b = np.stack([0.8 * y + common + 0.5 * rng.normal(size=n_test) for _ in range(n_seeds)])
    analytic = auc_difference_variance(y, a, b)
    # bootstrap of the same statistic: the mean over seeds of the per-seed AUC differences
    boot_rng = np.random.default_rng(2)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    values = []
    for _ in range(400):
        rows = np.concatenate([boot_rng.choice(positives, len(positives)), boot_rng.choice(negatives, len(negatives))])
        values.append(np.mean([roc_auc_score(y[rows], a[s, rows]) - roc_auc_score(y[rows], b[s, rows])
                               for s in range(n_seeds)]))
    assert analytic == pytest.approx(np.var(values, ddof=1), rel=0.2)


def test_holm_adjustment_by_hand():
    effects = [paired_effect([1, 2, 3], [0, 0, 0]) for _ in range(4)]
    effects = [replace(e, p=p) for e, p in zip(effects, [0.01, 0.04, 0.03, 0.005])]
    effects.append(paired_effect([1], [0]))  # untestable: left out of the family
    adjusted = [e.p_adjusted for e in adjust_holm(effects)]
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert adjusted[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[4])


def test_verdict_words_follow_direction_and_adjusted_p():
    better = paired_effect([0.95, 0.96, 0.955, 0.957], [0.90, 0.91, 0.905, 0.903])
    worse = paired_effect([0.90, 0.91, 0.905, 0.903], [0.95, 0.96, 0.955, 0.957])
    noise = paired_effect([0.90, 0.92, 0.91, 0.93], [0.91, 0.90, 0.93, 0.92])
    assert (better.verdict, worse.verdict, noise.verdict) == ("better", "worse", "no detectable difference")
    # a large raw-p family: the same effect can lose its verdict after Holm
    family = adjust_holm([paired_effect([0.93, 0.95, 0.94], [0.92, 0.935, 0.925])] + [noise] * 9)
    assert family[0].p < 0.05 and family[0].p_adjusted > family[0].p


def test_minimum_detectable_effect_matches_statsmodels_power_for_the_t_test():
    s, n = 0.008, 5
    effect = paired_effect([0.9 + s * x for x in (1.26, -0.63, 0.0, 0.63, -1.26)], [0.9] * 5)
    d = TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8, alternative="two-sided")
    assert effect.mde == pytest.approx(d * effect.seed_sd, rel=1e-6)
    # normal limit: (z_0.975 + z_0.8) * se
    assert minimum_detectable_effect(0.01, math.inf) == pytest.approx(0.01 * (1.959964 + 0.841621), rel=1e-5)
    assert power_of(0.0, 0.01, math.inf) == pytest.approx(0.05)


def test_seeds_needed_matches_statsmodels_and_says_when_the_test_set_is_too_small():
    sd = 0.012
    expected = math.ceil(TTestPower().solve_power(effect_size=0.01 / sd, alpha=0.05, power=0.8))
    assert seeds_needed(0.01, sd, 0.0) == expected
    assert seeds_needed(0.01, sd, test_var=0.005 ** 2) > expected  # a finite test set needs more seeds
    assert math.isinf(seeds_needed(0.01, sd, test_var=0.004 ** 2))  # 0.01 / 0.004 < z_0.975 + z_0.8


def test_estimable_needs_ten_of_each_class():
    assert estimable(np.r_[np.ones(10), np.zeros(10)])
    assert not estimable(np.r_[np.ones(9), np.zeros(50), [np.nan] * 5])


def test_the_primary_test_holds_its_level_under_simulated_null():
    """Two arms of the same method: seed noise plus one shared test set; p < 0.05 in about 5 % or fewer."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    false_positives = 0
    trials = 200
    for _ in range(trials):
        image_effect = rng.normal(size=200)
        arms = [np.stack([y + image_effect + 0.8 * rng.normal(size=200) for _ in range(3)]) for _ in range(2)]
        aucs = [[roc_auc_score(y, s) for s in arm] for arm in arms]
        effect = paired_effect(aucs[0], aucs[1], auc_difference_variance(y, arms[0], arms[1]))
        false_positives += effect.p < 0.05
    assert false_positives / trials <= 0.08


def test_a_table_of_eight_rows_prints_holm_adjusted_p_and_the_minimum_detectable_effect():
    from cxrgan.evaluate.inference import compare_auc, verdict_table

    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300).astype(float)
    base = {s: y + rng.normal(size=300) for s in range(5)}
    comparisons = []
    for k in range(8):  # eight methods, the last clearly better than the baseline
        shift = 1.5 if k == 7 else 0.0
        mine = {s: (1 + shift) * y + rng.normal(size=300) for s in range(5)}
        comparisons.append(compare_auc({"method": f"m{k}"}, y, mine, base))
    table = verdict_table(comparisons)
    assert len(table) == 8
    assert {"Δ [95% CI]", "p", "p (Holm)", "verdict", "min. detectable Δ", "seeds for Δ=0.01"} <= set(table.columns)
    raw = table["p"].replace("<0.001", "0.0005").astype(float)
    holm = table["p (Holm)"].replace("<0.001", "0.0005").astype(float)
    assert (holm >= raw).all() and (holm > raw).any()
    assert table["verdict"].iloc[7] == "better"
    assert table["min. detectable Δ"].astype(float).gt(0).all()
