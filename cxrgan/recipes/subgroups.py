"""Descriptive tables the recipes share: ROC AUC within the subgroups of an external site (view, age band, sex) and
the label imbalance of each method's training rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cxrgan.data.label_imbalance import irlbl, mean_ir
from cxrgan.engine import Results
from cxrgan.evaluate.metrics import roc_auc
from cxrgan.evaluate.summary import seed_cell


def label_imbalance_table(results: Results, methods: tuple[str, ...], seed: int) -> pd.DataFrame | None:
    """Per label, IRLbl of every method's training rows, then MeanIR and the row count (multi-label runs)."""
    runs = {m: results.where(method=m, seed=seed) for m in methods}
    runs = {m: r[0]["label_rows"] for m, r in runs.items() if r and "label_rows" in r[0]}
    if not runs:
        return None
    names = list(next(iter(runs.values())))
    table = pd.DataFrame({"label": [*names, "MeanIR", "rows"]})
    for method, rows in runs.items():
        counts = np.array([rows[n] for n in names])
        table[method] = [*(f"{r:.2f}" if np.isfinite(r) else "n/a" for r in irlbl(counts)), f"{mean_ir(counts):.2f}",
                         str(results.where(method=method, seed=seed)[0]["train_rows"])]
    return table


SUBGROUP_NOTE = ("ROC AUC within each subgroup of an external site, mean [95% CI over seeds]; n = rows, + = "
                 "positives. A view or age shortcut shows as a large gap between subgroups. Descriptive, not tested.")


def subgroup_table(results: Results, columns: dict[str, dict]) -> pd.DataFrame:
    """Per evaluation set with subgroups (external sites; view, age band, sex) and per subgroup: the ROC AUC over
    seeds of each column's cells (``columns``: column name -> the cells' coordinates, e.g. {"dcgan": {"method":
    "dcgan"}})."""
    rows = []
    for site, groups in results.subgroups.items():
        y = results.labels[site][:, 0]
        for group, mask in groups.items():
            row = {"site": site, "subgroup": group, "n": int(mask.sum()), "+": int(y[mask].sum())}
            for name, coords in columns.items():
                runs = results.seed_scores(site, **coords)
                if runs:
                    values = [roc_auc(y[mask], s[mask, 0]) if 0 < y[mask].sum() < mask.sum() else np.nan
                              for s in runs.values()]
                    row[name] = seed_cell(values)
            rows.append(row)
    return pd.DataFrame(rows)
