"""ROC and precision-recall curves of several methods in one figure each (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve  # noqa: E402

from cxrgan.io import atomic_write  # noqa: E402


def plot_curves(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], kind: str, path: str | Path,
                title: str = "") -> Path:
    """One ROC (``kind="roc"``) or PR (``kind="pr"``) curve per method from (labels, scores) pairs."""
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    prevalence = None
    for name, (y, s) in curves.items():
        if kind == "roc":
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(y, s):.3f})")
        else:
            precision, recall, _ = precision_recall_curve(y, s)
            ax.plot(recall, precision, lw=1.5, label=f"{name} (AP {average_precision_score(y, s):.3f})")
            prevalence = float(np.mean(y))
    if kind == "roc":
        ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
        ax.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity (true positive rate)")
    else:
        ax.axhline(prevalence, ls=":", c="grey", lw=1)
        ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), title=title or ("ROC curves" if kind == "roc" else "Precision-recall curves"))
    ax.legend(loc="lower right" if kind == "roc" else "lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    target = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return target
