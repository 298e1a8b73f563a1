"""Null calibration of the "method vs baseline" tests: one method as two arms on real runs, and simulated nulls.

Real runs: when both arms are the same method trained with different seeds, every "significant" difference is a
false positive. Splitting n seeds' test scores into two arms of n/2 in every possible way (each split once) and
testing arm A against arm B gives each test's false-positive rate at level 0.05 on this one test set.

Simulated nulls (:func:`simulated_null`, seconds) also redraw the test set, which real runs cannot: scores are built
from a label signal, a patient effect and an image effect shared by every run, a seed effect on the signal, a seed
x image interaction, and optionally a method x image interaction shared by all seeds of one method.

* ``"same-method"``: both arms are one method (no method x image term). Paired seeds share part of their seed
  effects, as seed s of two methods shares its initial weights and batch order.
* ``"test-set"``: the arms differ by a method x image interaction, so on the drawn test set one method is better,
  but over test sets neither is (zero difference in expectation). A test that conditions on the test set (the
  paired t over seeds) calls that difference real; the primary test must not, more often than its level.

The primary seed-level test of ``cxrgan.evaluate.inference`` should reject about 5 % in both; DeLong on one pair of
models (or the seed-averaged scores) ignores the seed-to-seed training noise and rejects far more.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from cxrgan.errors import CxrganError
from cxrgan.evaluate.inference import effect_from_parts, ensemble_delong_p, seed_level_test
from cxrgan.evaluate.stats import combine_pvalues, delong_placements, delong_test

TESTS = {
    "primary": "seed-level test (Obuchowski-Rockette / Hillis, clustered)",
    "primary_unclustered": "seed-level test, test images as independent",
    "paired_t": "paired t over seeds (this test set only)",
    "delong_ensemble": "DeLong, seed-averaged scores of each arm",
    "delong_bonferroni": "DeLong per seed pair, Bonferroni-combined",
}
NULLS = ("same-method", "test-set")


@dataclass(frozen=True)
class NullCalibration:
    """False-positive rates of each test over the null comparisons of one set of seeds."""

    n_seeds: int  # seeds in all (both arms)
    n_splits: int  # null comparisons: distinct splits of real seeds into two arms, or simulated replicates
    pvalues: dict[str, np.ndarray]  # test -> (n_splits,) p-values (the tests this calibration ran)
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


def _paired_t_p(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Paired t over seeds of the per-seed AUCs, the test that conditions on the test set (no test-image term;
    the same p as scipy's ``ttest_rel``)."""
    aucs = delong_placements(y, np.concatenate([a, b]))[0]
    return effect_from_parts(aucs[:len(a)] - aucs[len(a):]).p


TEST_P_VALUES = {  # test -> p(labels, patient ids or None, (n, N) scores of arm A, of arm B)
    "primary": lambda y, patients, a, b: seed_level_test(y, a, b, patients).p,
    "primary_unclustered": lambda y, patients, a, b: seed_level_test(y, a, b).p,
    "paired_t": lambda y, patients, a, b: _paired_t_p(y, a, b),
    "delong_ensemble": lambda y, patients, a, b: ensemble_delong_p(y, a, b, patients),
    "delong_bonferroni": lambda y, patients, a, b: combine_pvalues([delong_test(y, a[i], b[i], patients).p
                                                                   for i in range(len(a))]),
}
SIMULATED_TESTS = ("primary", "primary_unclustered", "paired_t", "delong_ensemble")  # what the benchmark prints


def calibrate(y: np.ndarray, scores: dict[int, np.ndarray], groups: np.ndarray | None = None, alpha: float = 0.05,
              max_splits: int | None = None) -> NullCalibration:
    """Test arm A against arm B for every null split of ``scores`` (seed -> (N,) test scores of one method).

    Arm A's i-th seed is paired with arm B's i-th seed, as a real comparison pairs the two methods' runs of one seed.
    ``groups``: (N,) patient ids of the test rows (None: images independent).
    """
    y = np.asarray(y).astype(np.int64)
    seeds = sorted(scores)
    splits = null_splits(seeds, max_splits)
    pvalues: dict[str, list[float]] = {name: [] for name in TESTS}
    for arm_a, arm_b in splits:
        a, b = np.stack([scores[s] for s in arm_a]), np.stack([scores[s] for s in arm_b])
        for name in TESTS:
            pvalues[name].append(TEST_P_VALUES[name](y, groups, a, b))
    return NullCalibration(len(seeds), len(splits), {k: np.array(v) for k, v in pvalues.items()}, alpha)


# ---- simulated nulls -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NullSimulation:
    """How simulated test scores are drawn (latent normal scores). The defaults give a test AUC of about 0.88 with a
    seed-to-seed sd of about 0.013, and positives clustered like Kermany's test split: 46 % of the positive images
    belong to patients with 2-5 images (Kermany: 45 % of all test images)."""

    n_images: int = 600  # test images
    n_positive: int = 150  # positive test images
    signal: float = 2.0  # mean score of a positive minus a negative
    patient_sd: float = 0.5  # patient effect, shared by every run and by the patient's images
    image_sd: float = 1.0  # image effect, shared by every run (what makes an image easy or hard)
    seed_signal_sd: float = 0.03  # seed effect: a run's signal is signal + this sd x N(0, 1)
    interaction_sd: float = 0.5  # seed x image interaction: a run's own noise on each image
    paired_share: float = 0.5  # share of the seed effect and interaction that seed s of both arms has in common
    method_image_sd: float = 0.4  # method x image interaction of the "test-set" null (0 in "same-method")
    method_patient_share: float = 0.5  # share of that interaction's variance common to a patient's images
    multi_image_share: float = 0.45  # share of positive images whose patient has 2-5 images (Kermany test: 0.45)


def simulated_patients(settings: NullSimulation, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(N,) 0/1 labels and (N,) patient ids: negatives one image each, positives in patients of 1-5 images so that
    about ``multi_image_share`` of the positive images share their patient."""
    sizes, clustered, total = [], 0, 0
    target = settings.multi_image_share * settings.n_positive
    while total < settings.n_positive:
        size = min(int(rng.integers(2, 6)) if clustered < target else 1, settings.n_positive - total)
        clustered += size if size > 1 else 0
        total += size
        sizes.append(size)
    n_negative = settings.n_images - settings.n_positive
    patients = np.concatenate([np.repeat(np.arange(len(sizes)), sizes), len(sizes) + np.arange(n_negative)])
    y = np.r_[np.ones(settings.n_positive), np.zeros(n_negative)]
    return y, patients


def simulate_null_scores(null: str, n_seeds: int, settings: NullSimulation,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One drawn test set and two arms' scores under ``null`` ("same-method" or "test-set"): labels (N,),
    patient ids (N,), and (n_seeds, N) scores of arm A and of arm B, seed s of both paired."""
    if null not in NULLS:
        raise CxrganError(f"unknown null {null!r}; expected one of {list(NULLS)}")
    y, patients = simulated_patients(settings, rng)
    n = len(y)
    shared = settings.patient_sd * rng.normal(size=patients.max() + 1)[patients] + settings.image_sd * rng.normal(
        size=n)
    common, own = np.sqrt(settings.paired_share), np.sqrt(1 - settings.paired_share)
    seed_common = rng.normal(size=(n_seeds, 1))
    interaction_common = rng.normal(size=(n_seeds, n))
    method_sd = settings.method_image_sd if null == "test-set" else 0.0
    arms = []
    for _ in range(2):
        seed_effect = settings.seed_signal_sd * (common * seed_common + own * rng.normal(size=(n_seeds, 1)))
        interaction = settings.interaction_sd * (common * interaction_common + own * rng.normal(size=(n_seeds, n)))
        # the same for every seed of this arm; partly per patient (a method reads a patient's anatomy alike)
        method_image = method_sd * (np.sqrt(settings.method_patient_share) * rng.normal(size=patients.max() + 1)[
            patients] + np.sqrt(1 - settings.method_patient_share) * rng.normal(size=n))
        arms.append((settings.signal + seed_effect) * y + shared + method_image + interaction)
    return y, patients, arms[0], arms[1]


def simulated_null(null: str, n_seeds: int, replicates: int, settings: NullSimulation = NullSimulation(),
                   alpha: float = 0.05, random_state: int | np.random.Generator | None = 0,
                   tests: tuple[str, ...] = SIMULATED_TESTS) -> NullCalibration:
    """Rejection rates at ``alpha`` of ``tests`` (default: the primary test, the paired t over seeds and DeLong on
    the seed-averaged scores) over ``replicates`` simulated test sets and trainings of two arms of ``n_seeds``
    seeds each."""
    unknown = [t for t in tests if t not in TEST_P_VALUES]
    if unknown:
        raise CxrganError(f"unknown test(s) {unknown}; expected some of {list(TEST_P_VALUES)}")
    rng = np.random.default_rng(random_state)
    pvalues: dict[str, list[float]] = {name: [] for name in tests}
    for _ in range(replicates):
        drawn = simulate_null_scores(null, n_seeds, settings, rng)
        for name in tests:
            pvalues[name].append(TEST_P_VALUES[name](*drawn))
    return NullCalibration(2 * n_seeds, replicates, {k: np.array(v) for k, v in pvalues.items()}, alpha)
