"""Run-directory artefacts of GAN training: sample grid PNGs and loss-curve PNGs (Pillow and matplotlib)."""

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


def save_loss_curves(metrics_path: str | Path, png_path: str | Path) -> Path | None:
    """Plot per-epoch D and G losses (and D's mean real/fake probabilities) from ``metrics.jsonl``."""
    records = [r for r in read_jsonl(metrics_path) if "d_loss" in r]
    if not records:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_prob) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax_loss.plot(epochs, [r["d_loss"] for r in records], label="D loss")
    ax_loss.plot(epochs, [r["g_loss"] for r in records], label="G loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    ax_prob.plot(epochs, [r["d_real"] for r in records], label="D(real)")
    ax_prob.plot(epochs, [r["d_fake"] for r in records], label="D(fake)")
    ax_prob.set_xlabel("epoch")
    ax_prob.set_ylim(0, 1)
    ax_prob.legend()
    fig.tight_layout()
    try:
        return atomic_write(png_path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)
