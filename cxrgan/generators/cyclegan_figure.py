"""Malygina et al.'s Figure 1 for a CycleGAN: originals, their translations and signed difference maps, both directions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxrgan.generators.base import ImageTranslator
from cxrgan.io import atomic_write


def save_translation_figure(model: ImageTranslator, images_0: np.ndarray, images_1: np.ndarray, path: str | Path) -> Path:
    """Malygina et al.'s Figure 1 for both directions: originals, translations and signed difference maps.

    Args:
        model: a fitted translator (a CycleGAN: ``translate`` and ``data_info_``).
        images_0: (n, H, W) uint8 originals of class 0, translated to class 1 (top block).
        images_1: (m, H, W) uint8 originals of class 1, translated to class 0 (bottom block).
        path: PNG to write; difference = translation - original in grey levels, red brighter, blue darker.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = model.data_info_["class_names"]
    rows: list[tuple[np.ndarray, str, dict]] = []  # one image strip per figure row, as in the paper's layout
    for source, images in ((0, images_0), (1, images_1)):
        if not len(images):
            continue
        translations = model.translate(images, source)
        difference = translations.astype(np.int16) - images.astype(np.int16)
        limit = max(1, int(np.abs(difference).max()))
        title = f"{names[source]} -> {names[1 - source]}"
        rows += [(_strip(images), f"{title}: original", dict(cmap="gray", vmin=0, vmax=255)),
                 (_strip(translations), "translated", dict(cmap="gray", vmin=0, vmax=255)),
                 (_strip(difference), f"difference (translated - original, +/-{limit} grey levels)",
                  dict(cmap="RdBu_r", vmin=-limit, vmax=limit))]
    width = max(strip.shape[1] for strip, _, _ in rows)
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.3 * width / rows[0][0].shape[0], 1.45 * len(rows)), squeeze=False)
    for ax, (strip, label, style) in zip(axes[:, 0], rows):
        ax.imshow(strip, interpolation="nearest", **style)
        ax.set_title(label, fontsize=8, loc="left")
        ax.axis("off")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


def _strip(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """(n, H, W) images side by side with ``pad`` columns of NaN (drawn blank) between them."""
    n, height, width = images.shape
    strip = np.full((height, n * (width + pad) - pad), np.nan, dtype=np.float32)
    for i, image in enumerate(images):
        strip[:, i * (width + pad): i * (width + pad) + width] = image
    return strip
