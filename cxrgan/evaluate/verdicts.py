"""Comparisons of stored per-seed scores against a baseline, and the verdict tables every recipe prints: the test of
``cxrgan.evaluate.inference`` per row, Holm over the table, and the sentences saying how the verdicts were made."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.evaluate.inference import (
    ALPHA,
    DF_HILLIS,
    Effect,
    MIN_TEST_POSITIVES,
    POWER,
    TARGET_EFFECT,
    adjust_holm,
    ensemble_delong_p,
    estimable,
    seed_level_test,
)


def format_p(p: float) -> str:
    """A p-value for a table: three decimals, "<0.001" below that, "n/a" when undefined."""
    return "n/a" if math.isnan(p) else ("<0.001" if p < 0.001 else f"{p:.3f}")


def effect_cells(effect: Effect) -> dict[str, str]:
    """The columns every verdict table shows for one comparison, direction and size first."""
    seeds_column = f"seeds for Δ={TARGET_EFFECT:g}"
    if effect.n_seeds < 2 or effect.untestable:
        delta = "n/a" if math.isnan(effect.delta) else f"{effect.delta:+.3f}"
        return {"Δ [95% CI]": delta, "p": "n/a", "p (Holm)": "n/a", "verdict": effect.verdict,
                "min. detectable Δ": "n/a", seeds_column: "n/a"}
    needed = "unreachable" if math.isinf(effect.seeds_needed) else f"{effect.seeds_needed:.0f}"
    low, high = max(effect.ci_low, -1.0), min(effect.ci_high, 1.0)  # an AUC difference lies in [-1, 1]
    return {"Δ [95% CI]": f"{effect.delta:+.3f} [{low:+.3f}, {high:+.3f}]",
            "p": format_p(effect.p), "p (Holm)": format_p(effect.p_adjusted), "verdict": effect.verdict,
            "min. detectable Δ": f"{effect.mde:.3f}", seeds_column: needed}


def method_note(comparisons: Sequence[Comparison], metric: str = "ROC AUC") -> str:
    """The sentences under every verdict table saying which test made the verdicts, over which family, and
    whether the test images were clustered by patient."""
    effects = [c.effect for c in comparisons if c.effect is not None]
    n_tests = sum(not math.isnan(e.p) for e in effects)
    with_test = [e for e in effects if e.df_method == DF_HILLIS]
    unclustered = sum(not e.clustered for e in with_test)
    if not with_test:
        clusters = ""
    elif not unclustered:
        clusters = " A patient's test images count as one cluster in the DeLong covariances (Obuchowski 1997)."
    else:
        clusters = (f" {unclustered} of {len(with_test)} tested row(s) count test images as independent: this run "
                    "directory stores no patient ids for their evaluation set (written before they were kept), so "
                    "where patients have several images their variance is too small.")
    return (f"Δ = mean over seeds of ({metric} of the method - {metric} of the baseline), each seed pairing two runs "
            "on the same split, initial weights and batch order. Test: Obuchowski-Rockette with seeds as readers "
            "and test images as cases, variance s_d²/n + max(κ, 0) (s_d: spread of the per-seed differences; κ: "
            "mean DeLong covariance between different seeds' differences, the test-image part all seeds share), "
            f"Hillis (2007) degrees of freedom.{clusters} Inference is conditional on the one training/validation "
            f"split every seed shares. p (Holm): Holm-adjusted over the {n_tests} comparison(s) of this table; "
            f"verdict at adjusted p < {ALPHA:g}; the 95% CI is not Holm-adjusted. min. detectable Δ: smallest "
            f"difference this run detects with {POWER:.0%} power; seeds for Δ={TARGET_EFFECT:g}: seeds a "
            f"difference of {TARGET_EFFECT:g} would need on this test set ('unreachable': the test-image part κ "
            "alone is too large, whatever the number of seeds). n/a: a cell with no variance to test (e.g. "
            "identical arms) says why.")


# ---- comparisons of stored scores, and the verdict table -------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """One row of a verdict table: what is compared, the effect (None when the AUC is not estimable), and DeLong
    on the seed-averaged scores, which describes these two ensembles on this test set, never the method."""

    row: dict[str, str]  # the row's identity, e.g. {"method": "dcgan"} or {"method": "gan", "finding": "Nodule"}
    effect: Effect | None
    ensemble_p: float = float("nan")
    note: str = ""  # why there is no effect, e.g. "not estimable: 4 test positives"


def _paired_seeds(method_scores: dict[int, np.ndarray],
                  baseline_scores: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray] | None:
    """Both methods' scores stacked over the seeds both have, in seed order (None when there are none)."""
    seeds = sorted(set(method_scores) & set(baseline_scores))
    if not seeds:
        return None
    return (np.stack([np.asarray(method_scores[s], np.float64) for s in seeds]),
            np.stack([np.asarray(baseline_scores[s], np.float64) for s in seeds]))


def compare_auc(row: dict[str, str], y: np.ndarray, method_scores: dict[int, np.ndarray],
                baseline_scores: dict[int, np.ndarray], groups: np.ndarray | None = None,
                minimum_positives: int = MIN_TEST_POSITIVES) -> Comparison:
    """The seed-level comparison of ROC AUC on one label column (:func:`seed_level_test`).

    Args:
        row: the row's identity in the table.
        y: (N,) real labels, NaN = unknown (those rows are left out).
        method_scores: seed -> (N,) scores of the method on the same rows.
        baseline_scores: seed -> (N,) scores of the baseline; seeds both have are paired.
        groups: (N,) patient ids of the rows, or None when the run did not store them.
        minimum_positives: fewer positives (or negatives) than this makes the AUC "not estimable".
    """
    y = np.asarray(y, dtype=np.float64)
    known = y[~np.isnan(y)]
    positives, negatives = int((known == 1).sum()), int((known == 0).sum())
    if min(positives, negatives) < minimum_positives:
        return Comparison(row, None, note=f"not estimable: {positives} test positives, {negatives} negatives "
                                          f"(fewer than {minimum_positives})")
    paired = _paired_seeds(method_scores, baseline_scores)
    if paired is None:
        return Comparison(row, None, note="no seed finished by both")
    a, b = paired
    return Comparison(row, seed_level_test(y, a, b, groups), ensemble_p=ensemble_delong_p(y, a, b, groups))


def compare_macro_auc(row: dict[str, str], labels: np.ndarray, method_scores: dict[int, np.ndarray],
                      baseline_scores: dict[int, np.ndarray], groups: np.ndarray | None = None,
                      columns: Sequence[int] | None = None,
                      minimum_positives: int = MIN_TEST_POSITIVES) -> Comparison:
    """The seed-level comparison of the macro ROC AUC over the estimable label columns (:func:`seed_level_test`
    with (N, F) labels: the test-image term covers the findings' shared images).

    Args:
        row: the row's identity in the table.
        labels: (N, K) real labels, NaN = unknown.
        method_scores, baseline_scores: seed -> (N, K) scores.
        groups: (N,) patient ids, or None.
        columns: the label columns to average (default all); of them only the estimable ones are averaged.
        minimum_positives: as in :func:`compare_auc`.
    """
    labels = np.asarray(labels, dtype=np.float64)
    columns = list(range(labels.shape[1]) if columns is None else columns)
    counted = [j for j in columns if estimable(labels[:, j], minimum_positives)]
    if not counted:
        return Comparison(row, None, note=f"not estimable: none of the {len(columns)} findings has "
                                          f"{minimum_positives} test positives and negatives")
    paired = _paired_seeds(method_scores, baseline_scores)
    if paired is None:
        return Comparison(row, None, note="no seed finished by both")
    a, b = (scores[:, :, counted] for scores in paired)
    return Comparison(row, seed_level_test(labels[:, counted], a, b, groups),
                      ensemble_p=ensemble_delong_p(labels[:, counted], a, b, groups))


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
