"""Figures of several methods (PNG): ROC and precision-recall curves, effects against a size (maps)."""

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


def plot_effect_map(panels: Mapping[str, Mapping[str, list[tuple[float, float, float, float]]]], path: str | Path,
                    reference: str | None = None, xlabel: str = "", ylabel: str = "") -> Path:
    """Effects against a size on a log axis, one panel per evaluation set: per line, points (x, effect, CI low,
    CI high) joined by a line with their CIs as error bars (clipped to [-1, 1], the range of an AUC difference), the
    ``reference`` line dashed in black and a zero line.

    Args:
        panels: panel title -> line name -> points in x order.
        path: PNG to write (atomically).
        reference: the line drawn as the reference (e.g. duplication), if present.
        xlabel, ylabel: axis labels.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.6), dpi=120, squeeze=False,
                             sharey=True)
    names = sorted({name for lines in panels.values() for name in lines} - {reference})
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(names)}
    for ax, (title, lines) in zip(axes[0], panels.items()):
        ax.axhline(0.0, color="grey", lw=1, ls=":")
        # a small multiplicative offset per line keeps overlapping error bars apart on the log axis
        offsets = {name: 1.0 + 0.035 * (i - (len(lines) - 1) / 2) for i, name in enumerate(lines)}
        for name, points in lines.items():
            x, effect, low, high = (np.array(v, dtype=float) for v in zip(*points))
            x, low, high = x * offsets[name], np.maximum(low, -1.0), np.minimum(high, 1.0)  # a Δ AUC lies in [-1, 1]
            style = (dict(color="black", ls="--", lw=1.8, marker="s", label=f"{name} (reference)") if name == reference
                     else dict(color=colours[name], lw=1.3, marker="o", label=name))
            ax.errorbar(x, effect, yerr=[np.maximum(effect - low, 0), np.maximum(high - effect, 0)], capsize=3,
                        ms=4, **style)
        ax.set_xscale("log")
        ticks = sorted({point[0] for points in lines.values() for point in points})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set(title=title, xlabel=xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.tight_layout()
    target = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return target
