"""Run-directory artefacts of generator training: sample-grid PNGs and training-curve PNGs (Pillow, matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cxrgan.io import atomic_write, read_jsonl


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile (N, H, W) uint8 images into one (rows*(H+pad)-pad, cols*(W+pad)-pad) uint8 image, black gutters."""
    n, height, width = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.zeros((rows * (height + pad) - pad, columns * (width + pad) - pad), dtype=np.uint8)
    for i, image in enumerate(images):
        r, c = divmod(i, columns)
        grid[r * (height + pad): r * (height + pad) + height, c * (width + pad): c * (width + pad) + width] = image
    return grid


def save_grid(images: np.ndarray, path: str | Path, columns: int | None = None) -> Path:
    """Write a grid of (N, H, W) uint8 images as a grayscale PNG, atomically."""
    from PIL import Image

    grid = Image.fromarray(image_grid(images, columns))  # 2-D uint8 -> grayscale "L"
    return atomic_write(path, lambda tmp: grid.save(tmp, format="PNG"))


NOT_PLOTTED = {"step", "seconds", "lr", "quality_fd"}


def save_training_curves(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot ``metrics.jsonl`` against the step: the losses, the other statistics (e.g. D's mean real / fake
    scores) and, when the run tracked it, the fidelity score (lower is better); one panel each."""
    records = read_jsonl(metrics_path)
    keys = sorted({k for r in records for k, v in r.items() if isinstance(v, (int, float)) and k not in NOT_PLOTTED})
    panels = [("loss", [k for k in keys if "loss" in k]), ("statistic", [k for k in keys if "loss" not in k]),
              ("fidelity: FD to real rows (random-conv features)", ["quality_fd"])]
    panels = [(title, names) for title, names in panels if any(n in r for r in records for n in names)]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (title, names) in zip(axes[0], panels):
        for name in names:
            points = [(r["step"], r[name]) for r in records if name in r]
            ax.plot(*zip(*points), label=name, marker="." if len(points) < 30 else None)
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    try:
        return atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
