"""Null calibration of the "method vs baseline" tests: one method as two arms on disjoint seeds.

When both arms are the same method trained with different seeds, every "significant" difference is a false
positive. Splitting n seeds' test scores into two arms of n/2 in every possible way (each split once) and testing
arm A against arm B gives the false-positive rate of each test at level 0.05: the primary seed-level test of
``cxrgan.evaluate.inference`` should stay at or below 5 %; DeLong on one pair of models does not, because it
ignores the seed-to-seed training noise.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from cxrgan.errors import CxrganError
from cxrgan.evaluate.inference import auc_difference_variance, paired_effect
from cxrgan.evaluate.stats import combine_pvalues, delong_test

TESTS = {
    "primary": "seed-level paired test (seed + test-image variance)",
    "paired_t": "paired t over seeds (seed variance only)",
    "delong_ensemble": "DeLong, seed-averaged scores of each arm",
    "delong_bonferroni": "DeLong per seed pair, Bonferroni-combined",
}


@dataclass(frozen=True)
class NullCalibration:
    """False-positive rates of each test over the null splits of one set of seeds."""

    n_seeds: int  # seeds in all
    n_splits: int  # distinct splits into two arms of n_seeds // 2
    pvalues: dict[str, np.ndarray]  # test -> (n_splits,) p-values
    alpha: float

    def false_positive_rate(self, test: str) -> float:
        return float(np.mean(self.pvalues[test] < self.alpha))


def null_splits(seeds: list[int], max_splits: int | None = None, random_state: int = 0) -> list[tuple[tuple, tuple]]:
    """Every split of ``seeds`` into two equal arms, each unordered split once (at most ``max_splits``, drawn at
    random when there are more)."""
    if len(seeds) < 4 or len(seeds) % 2:
        raise CxrganError(f"null calibration needs an even number of at least 4 seeds, got {len(seeds)}")
    half = len(seeds) // 2
    splits = [(arm, tuple(s for s in seeds if s not in arm)) for arm in itertools.combinations(seeds, half)
              if seeds[0] in arm]  # fixing the first seed in arm A lists each unordered split once
    if max_splits is not None and len(splits) > max_splits:
        chosen = np.random.default_rng(random_state).choice(len(splits), max_splits, replace=False)
        splits = [splits[i] for i in sorted(chosen)]
    return splits


def calibrate(y: np.ndarray, scores: dict[int, np.ndarray], alpha: float = 0.05,
              max_splits: int | None = None) -> NullCalibration:
    """Test arm A against arm B for every null split of ``scores`` (seed -> (N,) test scores of one method).

    Arm A's i-th seed is paired with arm B's i-th seed, as a real comparison pairs the two methods' runs of one seed.
    """
    y = np.asarray(y).astype(np.int64)
    seeds = sorted(scores)
    aucs = {s: roc_auc_score(y, scores[s]) for s in seeds}
    splits = null_splits(seeds, max_splits)
    pvalues: dict[str, list[float]] = {name: [] for name in TESTS}
    for arm_a, arm_b in splits:
        a, b = np.stack([scores[s] for s in arm_a]), np.stack([scores[s] for s in arm_b])
        auc_a, auc_b = [aucs[s] for s in arm_a], [aucs[s] for s in arm_b]
        pvalues["primary"].append(paired_effect(auc_a, auc_b, auc_difference_variance(y, a, b)).p)
        pvalues["paired_t"].append(paired_effect(auc_a, auc_b).p)
        pvalues["delong_ensemble"].append(delong_test(y, a.mean(axis=0), b.mean(axis=0)).p)
        pvalues["delong_bonferroni"].append(combine_pvalues([delong_test(y, a[i], b[i]).p for i in range(len(a))]))
    return NullCalibration(len(seeds), len(splits), {k: np.array(v) for k, v in pvalues.items()}, alpha)
