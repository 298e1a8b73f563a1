"""Label imbalance of (multi-)label data: Charte et al.'s IRLbl and MeanIR, per-label counts, and ML-ROS / ML-RUS.

Charte, Rivera, del Jesus and Herrera (2015), "Addressing imbalance in multilabel classification: Measures and
random resampling algorithms", Neurocomputing 163, 3-16:

* IRLbl(y) = max_{y'} |D_{y'}| / |D_y|, with |D_y| the number of rows carrying label y, so the commonest
  label has IRLbl 1 and a label carried by 1 row in 100 has IRLbl 100;
* MeanIR = the mean of IRLbl over the labels. A label is a *minority* label when IRLbl > MeanIR and a
  *majority* label when IRLbl < MeanIR;
* ML-ROS (their pseudo-code of it) clones random rows of the minority labels' bags, one bag after the other, re-checking
  each bag's IRLbl after each of its clones, until P % of |D| rows are added or no minority bag is left;
* ML-RUS (likewise) removes random rows of the majority labels' bags the same way, until P % of |D| rows
  are removed or no majority bag is left.

The label set. Charte's measures count the labels a row carries. For chest X-rays the label set is the K findings
plus "no finding" (rows without a positive finding), as in NIH's own 15 labels and Holste et al.'s NIH-CXR-LT
(2022); without it the normal rows, most of a CXR set, belong to no bag and no resampler can touch them. For a
binary task the two labels are the two classes (the same rule with K = 1). Unknown (NaN) entries count as not
carried. A label no row carries has no IRLbl (NaN) and is left out of MeanIR.

Pure NumPy on label arrays (no images), so ``cxrgan data info`` can print the measures before and after resampling
without decoding a pixel; ``cxrgan.balance.multilabel_resample`` wraps the row choices into balancers.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.errors import CxrganError

NO_FINDING = "no finding"
DEFAULT_PERCENTAGE = 25.0  # Charte et al. 2015 resample 25 % of the rows in their experiments


def as_columns(labels: np.ndarray) -> np.ndarray:
    """Labels as an (N, K) float32 array; a 1-D array is one column."""
    labels = np.asarray(labels, dtype=np.float32)
    return labels[:, None] if labels.ndim == 1 else labels


def label_sets(labels: np.ndarray, label_names: Sequence[str], no_finding: bool = True,
               negative_name: str | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The (N, L) boolean matrix of the labels each row carries, and the L label names.

    Args:
        labels: (N, K) labels, 1 positive, 0 negative, NaN unknown (not carried).
        label_names: the K column names.
        no_finding: append the "no finding" label (rows with no positive entry), unless a column already has that
            name. Always on for a binary task (K = 1), whose negative class is one of its two labels.
        negative_name: name of the appended label (a binary task's negative class name, e.g. "normal").

    Returns ``(matrix, names)``: the K findings first, then "no finding" when appended.
    """
    labels = as_columns(labels)
    carried = labels == 1  # NaN == 1 is False: unknown is not carried
    names = tuple(str(n) for n in label_names)
    has_own = NO_FINDING in (n.lower() for n in names)  # e.g. CheXpert's "No Finding" observation
    if (no_finding and not has_own) or labels.shape[1] == 1:
        carried = np.concatenate([carried, ~carried.any(axis=1, keepdims=True)], axis=1)
        names = (*names, negative_name or NO_FINDING)
    return carried, names


def label_counts(labels: np.ndarray) -> np.ndarray:
    """Per label column, the (negatives, positives) among known entries: an (K, 2) int64 array."""
    labels = as_columns(labels)
    return np.stack([(labels == 0).sum(axis=0), (labels == 1).sum(axis=0)], axis=1).astype(np.int64)


def irlbl(counts: np.ndarray) -> np.ndarray:
    """IRLbl per label from the per-label row counts (Charte et al. 2015); NaN for a label with no row."""
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, counts.max(initial=0.0) / counts, np.nan)


def mean_ir(counts: np.ndarray) -> float:
    """MeanIR: the mean IRLbl over the labels carried by at least one row (Charte et al. 2015); NaN if none is."""
    ratios = irlbl(counts)
    return float(np.nanmean(ratios)) if np.isfinite(ratios).any() else float("nan")


def check_percentage(percentage: float, method: str) -> float:
    """The resampling percentage P, which must lie in (0, 100]."""
    try:
        value = float(percentage)
    except (TypeError, ValueError):
        value = float("nan")
    if not 0 < value <= 100:  # NaN fails too
        raise CxrganError(f"{method}: the resampling percentage must lie in (0, 100], got {percentage}")
    return value


def row_budget(n_rows: int, percentage: float) -> int:
    """Rows to add or remove, floor(|D| P / 100): at most P % of the rows, as the authors' R package mldr.resampling
    and mulan's ML-ROS / ML-RUS count (the paper's loop ``while samplesToClone > 0`` would round up)."""
    return math.floor(n_rows * percentage / 100 + 1e-9)  # 1e-9: a product a hair below an integer is that integer


def ml_ros_rows(matrix: np.ndarray, percentage: float, rng: np.random.Generator) -> np.ndarray:
    """The rows ML-ROS clones (Charte et al. 2015), in cloning order; repeats are possible.

    MeanIR and the minority bags (rows carrying a label with IRLbl > MeanIR) are fixed at the start. Round after
    round, each bag still in play clones one of its rows drawn uniformly; after the clone the counts include it,
    and the bag leaves when its label's IRLbl <= MeanIR. We stop as soon as the budget (:func:`row_budget`) is spent
    (the paper's loop tests it only between rounds, so it may add up to one round too many) or when no bag is left.

    Args:
        matrix: (N, L) boolean labels carried (see :func:`label_sets`).
        percentage: P in (0, 100]; at most ``floor(N * P / 100)`` rows are cloned.
        rng: the random generator of the draws.
    """
    matrix = np.asarray(matrix, dtype=bool)
    counts = matrix.sum(axis=0).astype(np.int64)
    ratios, threshold = irlbl(counts), mean_ir(counts)
    minority = [j for j in range(matrix.shape[1]) if ratios[j] > threshold]
    bags = {j: np.flatnonzero(matrix[:, j]) for j in minority}
    budget, clones = row_budget(len(matrix), percentage), []
    while len(clones) < budget and bags:
        for j in list(bags):
            row = int(bags[j][rng.integers(len(bags[j]))])
            clones.append(row)
            counts += matrix[row]
            if counts.max() / counts[j] <= threshold:
                del bags[j]
            if len(clones) == budget:
                break
    return np.asarray(clones, dtype=np.int64)


def ml_rus_rows(matrix: np.ndarray, percentage: float, rng: np.random.Generator,
                label_names: Sequence[str] | None = None) -> np.ndarray:
    """The rows ML-RUS removes (Charte et al. 2015), in removal order.

    MeanIR and the majority bags (rows carrying a label with IRLbl < MeanIR) are fixed at the start; rows that also
    carry a minority label are never removed (as in the authors' R package mldr.resampling), so undersampling
    cannot lower a minority label's count. Round after round, each bag still in play removes one of its remaining
    rows drawn uniformly; the bag leaves when its label's IRLbl >= MeanIR or when it has no row left. We stop as
    soon as the budget is spent or no bag is left.

    Args:
        matrix: (N, L) boolean labels carried (see :func:`label_sets`).
        percentage: P in (0, 100]; at most ``floor(N * P / 100)`` rows are removed.
        rng: the random generator of the draws.
        label_names: the L names, for the error message.

    Raises:
        CxrganError: a removal would leave a label without any row (e.g. a large P on data whose commonest label,
            whose IRLbl stays 1, has no protected row); the message names the label and P.
    """
    matrix = np.asarray(matrix, dtype=bool)
    names = list(label_names) if label_names is not None else [f"label {j}" for j in range(matrix.shape[1])]
    counts = matrix.sum(axis=0).astype(np.int64)
    ratios, threshold = irlbl(counts), mean_ir(counts)
    protected = matrix[:, ratios > threshold].any(axis=1)
    # A uniform draw among a bag's remaining rows = the next remaining row of a random permutation of the bag
    # (rows removed through other bags are skipped), which keeps large data linear in the number of rows.
    bags = {j: list(rng.permutation(np.flatnonzero(matrix[:, j] & ~protected))[::-1])
            for j in range(matrix.shape[1]) if ratios[j] < threshold}
    removed = np.zeros(len(matrix), dtype=bool)
    budget, order = row_budget(len(matrix), percentage), []
    while len(order) < budget and bags:
        for j in list(bags):
            remaining = bags[j]
            while remaining and removed[remaining[-1]]:
                remaining.pop()
            if not remaining:
                del bags[j]
                continue
            row = int(remaining.pop())
            emptied = np.flatnonzero(matrix[row] & (counts == 1))
            if emptied.size:
                raise CxrganError(
                    f"ml-rus: removing {percentage:g} % of the rows would leave {names[emptied[0]]!r} without a "
                    f"row; use a lower percentage")
            removed[row] = True
            order.append(row)
            counts -= matrix[row]
            if counts.max() / counts[j] >= threshold:
                del bags[j]
            if len(order) == budget:
                break
    return np.asarray(order, dtype=np.int64)


def imbalance_table(before: np.ndarray, names: Sequence[str], **after: np.ndarray) -> pd.DataFrame:
    """Rows carried and IRLbl per label, then MeanIR and the row count, before and after each resampling.

    Args:
        before: (N, L) boolean labels carried before resampling.
        names: the L label names.
        after: named (M, L) boolean matrices after resampling, e.g. ``ml_rus=...``.
    """
    columns = {"before": before, **after}
    table = pd.DataFrame({"label": [*names, "MeanIR", "rows"]})
    for name, matrix in columns.items():
        counts = np.asarray(matrix, dtype=bool).sum(axis=0)
        ratios = irlbl(counts)
        table[f"{name} n"] = [*(int(c) for c in counts), "", len(matrix)]
        table[f"{name} IRLbl"] = [*(f"{r:.2f}" if np.isfinite(r) else "n/a" for r in ratios),
                                  f"{mean_ir(counts):.2f}", ""]
    return table
