"""Scores of one run -> metrics, and finished runs of several methods x seeds -> a metrics table with CIs."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.evaluate.metrics import multilabel_auc, threshold_report
from cxrgan.evaluate.inference import estimable
from cxrgan.evaluate.bootstrap import bootstrap_ci
from cxrgan.evaluate.stats import aggregate_seeds

# Columns of the binary table, in the order a clinician reads them; all threshold metrics at the Youden threshold.
BINARY_COLUMNS = {
    "roc_auc": "ROC AUC",
    "pr_auc": "PR AUC",
    "precision": "precision",
    "recall": "recall (sens.)",
    "specificity": "specificity",
    "f1": "F1",
    "accuracy": "accuracy",
}


def evaluate_scores(y_val: np.ndarray, s_val: np.ndarray, y_test: np.ndarray, s_test: np.ndarray,
                    names: Sequence[str], n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Test metrics of one trained model.

    Binary (K = 1): threshold metrics at the validation Youden threshold (plain names) and at 0.5 (``@0.5``
    suffix), ROC AUC with a stratified bootstrap 95% CI. Multi-label: per-finding ROC AUC and ``macro``.
    """
    if y_test.shape[1] > 1:
        return multilabel_auc(y_test, s_test, names)
    report = threshold_report(y_test[:, 0], s_test[:, 0], y_val[:, 0], s_val[:, 0])
    metrics = dict(report["youden"])
    metrics.update({f"{k}@0.5": v for k, v in report["default"].items() if k not in ("roc_auc", "pr_auc")})
    interval = bootstrap_ci(y_test[:, 0], s_test[:, 0], "roc_auc", n_boot=n_boot, random_state=seed)
    metrics["roc_auc_ci_low"], metrics["roc_auc_ci_high"] = interval.low, interval.high
    return metrics


def metrics_table(records: list[dict], y_test: np.ndarray, names: Sequence[str], methods: Sequence[str],
                  sites: Sequence[str] = ()) -> tuple[pd.DataFrame, str, dict]:
    """Every metric of every method as mean [95% CI over seeds], plus the ROC AUC on each external site; returns
    the table, its note and a JSON summary. The verdicts are a separate table (``verdicts.verdict_table``)."""
    binary = y_test.shape[1] == 1
    columns = BINARY_COLUMNS if binary else {n: n for n in [*names, "macro"]}
    columns = {**columns, **{f"roc_auc@{site}": f"ROC AUC @ {site}" for site in sites}}
    # a finding whose test split cannot estimate an AUC is said to be so, never printed as a number
    unestimable = {} if binary else {name: int(np.nansum(y_test[:, j] == 1)) for j, name in enumerate(names)
                                     if not estimable(y_test[:, j])}
    rows, summary = [], {}
    for method in methods:
        runs = sorted((r for r in records if r["method"] == method), key=lambda r: r["seed"])
        if not runs:
            continue
        stats = {key: aggregate_seeds([r["metrics"].get(key, np.nan) for r in runs]) for key in columns}
        rows.append({"method": method, "seeds": len(runs),
                     **{label: f"not estimable ({unestimable[key]} test +)" if key in unestimable
                        else seed_cell(stats[key]) for key, label in columns.items()}})
        summary[method] = {"metrics": stats, "seeds": [r["seed"] for r in runs],
                           "train_rows": runs[0]["train_rows"], "train_synthetic": runs[0]["train_synthetic"]}
    notes = "Cells: mean over seeds [95% t-interval over seeds]"
    notes += ("; threshold metrics at the threshold that maximises Youden's J on the validation split." if binary
              else "; per-finding test ROC AUC on known labels; macro = mean over the findings with both classes "
                   "in the test split (the rarest findings weigh as much as the others, and are noisy).")
    return pd.DataFrame(rows).fillna(""), notes, {"methods": summary}


def seed_cell(values: Sequence[float] | dict[str, float], bounds: tuple[float, float] = (0.0, 1.0)) -> str:
    """``mean [low, high]`` over seeds (Student t, :func:`aggregate_seeds`), the mean alone with one seed, or "n/a".

    ``values`` are per-seed values or their ``aggregate_seeds`` statistics. A t-interval over few seeds can overshoot
    the metric's range, so the shown interval is clipped to ``bounds`` ((-1, 1) for AUC differences).
    """
    stats = values if isinstance(values, dict) else aggregate_seeds(values)
    if stats["n"] == 0 or np.isnan(stats["mean"]):
        return "n/a"
    if stats["n"] < 2:
        return f"{stats['mean']:.3f}"
    low, high = max(stats["ci_low"], bounds[0]), min(stats["ci_high"], bounds[1])
    return f"{stats['mean']:.3f} [{low:.3f}, {high:.3f}]"
