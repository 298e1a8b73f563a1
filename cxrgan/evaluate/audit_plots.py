"""Figures of the synthetic-image audit: nearest-training-image distance histograms and closest-pair grids."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cxrgan.io import atomic_write  # noqa: E402


def plot_distances(distances: dict[str, tuple[np.ndarray, np.ndarray]], memo: dict[str, dict], path: Path,
                   percentile: float = 1.0) -> Path:
    """Histograms of synthetic -> train and real test -> train nearest distances, per space, with the threshold."""
    fig, axes = plt.subplots(1, len(distances), figsize=(5 * len(distances), 3.4), dpi=100, squeeze=False)
    for ax, (space, (syn, test)) in zip(axes[0], distances.items()):
        bins = np.linspace(0, max(syn.max(), test.max()) * 1.02 + 1e-9, 40)
        ax.hist(test, bins=bins, alpha=0.6, label="real test -> train", color="tab:blue", density=True)
        ax.hist(syn, bins=bins, alpha=0.6, label="synthetic -> train", color="tab:red", density=True)
        ax.axvline(memo[space]["threshold"], ls="--", c="k", lw=1, label=f"test {percentile:g}th-percentile threshold")
        ax.set(xlabel=f"distance to nearest training image ({space} space)", ylabel="density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def plot_nearest_pairs(synthetic: np.ndarray, train_images: np.ndarray, nearest: dict[str, np.ndarray],
                       distances: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, n_pairs: int = 8) -> Path:
    """The ``n_pairs`` synthetic images closest (in pixels) to a training image: the synthetic image, its nearest
    training image in pixel space and in feature space, with distances."""
    order = np.argsort(distances["pixel"][0])[:n_pairs]
    rows = [("synthetic", None), ("nearest train (pixels)", "pixel"), ("nearest train (features)", "feature")]
    fig, axes = plt.subplots(len(rows), len(order), figsize=(1.6 * len(order), 1.9 * len(rows)), dpi=100,
                             squeeze=False)
    for j, i in enumerate(order):
        for r, (label, space) in enumerate(rows):
            image = synthetic[i] if space is None else train_images[nearest[space][i]]
            axes[r, j].imshow(image, cmap="gray", vmin=0, vmax=255)
            title = f"#{i}" if space is None else f"d = {distances[space][0][i]:.3g}"
            axes[r, j].set_title(title, fontsize=7)
            axes[r, j].set_xticks([])
            axes[r, j].set_yticks([])
            if j == 0:
                axes[r, j].set_ylabel(label, fontsize=7)
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
