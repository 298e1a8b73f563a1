"""The arithmetic of the multi-label rebalancers, without models: which rare findings to augment, how many rows
each needs, and which real label vectors (Sundaram & Hulkund's L_p draws) the added rows carry. The balancers in
``cxrgan.balance.multilabel`` and the recipes use them."""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError

DEFAULT_THRESHOLD = 0.15  # Sundaram & Hulkund: most CheXpert findings are present in 5-26 % of images
DEFAULT_MIN_POSITIVES = 16  # = generators.base.MIN_TRAIN_IMAGES, so method B can train a DCGAN per finding


def choose_rare_findings(train: CXRDataset, n_findings: int = 3, min_positives: int = DEFAULT_MIN_POSITIVES
                         ) -> tuple[str, ...]:
    """The ``n_findings`` least frequent findings of ``train`` that have at least ``min_positives`` positives.

    Chosen from training counts alone: looking at the test split to choose what to report would select findings
    by the data that scores them. A chosen finding with too few test positives is reported as not estimable.

    Args:
        train: the training rows (multi-label).
        n_findings: how many findings to choose (fewer if fewer qualify).
        min_positives: floor on training positives (a generator needs real examples of the finding).

    Returns the names ordered from rarest; ties keep the column order.
    """
    if train.is_binary:
        raise CxrganError("rare-finding augmentation needs multi-label data (load with target='findings')")
    if n_findings < 1:
        raise CxrganError(f"--n-findings must be at least 1, got {n_findings}")
    positives = train.positives()
    eligible = positives >= min_positives
    order = [j for j in np.argsort(positives, kind="stable") if eligible[j]][:n_findings]
    if not order:
        raise CxrganError(f"no finding has >= {min_positives} training positives; training positives: "
                          f"{dict(zip(train.label_names, positives.tolist()))}")
    return tuple(train.label_names[j] for j in order)


def minimum_synthetic_count(n_rows: int, n_positive: int, threshold: float) -> int:
    """Fewest images that all carry a finding so it reaches ``threshold`` of the combined set (one finding).

    Adding n positive images to N rows with c positives gives (c + n) / (N + n) >= t  <=>  n >= (tN - c) / (1 - t),
    so n = max(0, ceil((tN - c) / (1 - t))). Computed with exact fractions (0.15 is not a binary float).
    """
    t = Fraction(str(threshold))
    if not 0 < t < 1:
        raise CxrganError(f"threshold must lie in (0, 1), got {threshold}")
    return max(0, math.ceil((t * n_rows - n_positive) / (1 - t)))


def finding_deficit(labels: np.ndarray, ratio: float = 1.0) -> int:
    """Images method B adds for a finding with training labels ``labels`` (one column, NaN unknown):
    ``max(0, ceil(ratio * negatives) - positives)``."""
    return max(0, math.ceil(ratio * int((labels == 0).sum())) - int((labels == 1).sum()))


def sample_label_rows(labels: np.ndarray, column: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` rows drawn uniformly with replacement from those with ``column`` positive (L_p)."""
    rows = np.flatnonzero(labels[:, column] == 1)
    if len(rows) == 0:
        raise CxrganError(f"no training row has finding column {column} present; L_p is empty")
    return rows[rng.integers(0, len(rows), size=n)]


def sample_label_vectors(labels: np.ndarray, column: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rows of ``labels`` drawn uniformly with replacement from those with ``column`` positive (L_p)."""
    return labels[sample_label_rows(labels, column, n, rng)].copy()


def plan_label_vectors(labels: np.ndarray, columns: Sequence[int], threshold: float,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The label vectors to generate so every finding in ``columns`` is >= ``threshold`` of the combined set: the
    vectors of the rows :func:`plan_label_rows` draws, and the finding column each was drawn for."""
    rows, drawn_for = plan_label_rows(labels, columns, threshold, rng)
    return labels[rows].reshape(len(rows), labels.shape[1]).copy(), drawn_for


def plan_label_rows(labels: np.ndarray, columns: Sequence[int], threshold: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The real rows whose label vectors to generate so every finding in ``columns`` is >= ``threshold`` of the
    combined set.

    Greedy: while some chosen finding q has count_q < t * (N + M) (M images planned so far), draw one vector
    uniformly from L_q of the finding with the largest deficit t * (N + M) - count_q and credit every finding it
    carries. A finding that is already at the threshold never gets a draw of its own.

    Minimality. Let need_q(M) = max(0, ceil(t (N + M) - c_q)), nondecreasing in M. When no drawn vector carries
    a second chosen finding (always true for one finding, where the result is :func:`minimum_synthetic_count`),
    a set of M images is feasible iff sum_q need_q(M) <= M, and the smallest such M is the optimum. The greedy
    gives q a draw only while n_q < need_q(M') <= need_q(M), so n_q <= need_q(M) at every step; at the first
    feasible M, sum_q n_q = M >= sum_q need_q(M) forces n_q = need_q(M) for all q: every finding is at the
    threshold and the greedy stops exactly there. When vectors carry several chosen findings the credited
    co-occurrences only lower the counts needed; the result is then minimal given the drawn vectors up to the
    order in which findings are served (an integer programme we do not solve).

    Args:
        labels: (N, K) real training labels (NaN unknown; counts as not present).
        columns: chosen finding columns.
        threshold: required share of the combined set, in (0, 1); ``len(columns) * threshold`` must be < 1 so
            the findings can all reach it even without co-occurrence.
        rng: the random generator of the draws.

    Returns ``(row indices into labels (M,), finding column each row was drawn for (M,))``.
    """
    t = Fraction(str(threshold))
    columns = [int(c) for c in columns]
    if not 0 < t < 1:
        raise CxrganError(f"threshold must lie in (0, 1), got {threshold}")
    if len(columns) * t >= 1:
        raise CxrganError(f"{len(columns)} findings cannot each reach {float(t):.0%} of the set; choose fewer findings "
                          "or a lower threshold")
    present = np.nan_to_num(labels, nan=0.0) == 1
    pools = {c: np.flatnonzero(present[:, c]) for c in columns}
    empty = [c for c, rows in pools.items() if len(rows) == 0]
    if empty:
        raise CxrganError(f"finding column(s) {empty} have no positive training row, so L_p is empty")
    counts = present[:, columns].sum(axis=0).astype(np.int64)
    total = len(labels)
    drawn_rows, drawn_for = [], []
    while True:
        deficits = [t * total - int(c) for c in counts]
        worst = int(np.argmax([float(d) for d in deficits]))  # first maximum: column order breaks ties
        if deficits[worst] <= 0:
            break
        pool = pools[columns[worst]]
        row = int(pool[rng.integers(0, len(pool))])
        drawn_rows.append(row)
        drawn_for.append(columns[worst])
        counts += present[row, columns]
        total += 1
    return np.asarray(drawn_rows, dtype=np.int64), np.asarray(drawn_for, dtype=np.int64)


def finding_table(real: CXRDataset, combined: CXRDataset, columns: Sequence[int], drawn_for: np.ndarray) -> pd.DataFrame:
    """Per chosen finding: real positives and share, images drawn for it, combined positives and share (Table 1)."""
    rows = []
    real_pos, combined_pos = real.positives(), combined.positives()
    for c in columns:
        rows.append({"finding": real.label_names[c], "real positives": int(real_pos[c]),
                     "real %": round(100 * real_pos[c] / len(real), 2), "generated for it": int((drawn_for == c).sum()),
                     "combined positives": int(combined_pos[c]),
                     "combined %": round(100 * combined_pos[c] / len(combined), 2)})
    rows.append({"finding": "all rows", "real positives": len(real), "real %": 100.0, "generated for it": len(drawn_for),
                 "combined positives": len(combined), "combined %": 100.0})
    return pd.DataFrame(rows)
