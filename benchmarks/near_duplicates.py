"""Benchmark: false and true positives of the near-duplicate check (``cxrgan.data.near_duplicates``) on real data.

False positives: sets of different patients (Kermany's official train vs test split, train vs the patient-level val
split, NIH pneumonia vs all of Kermany, the NIH ChestX-ray14 subset vs NIH pneumonia) compared in full; every match
there flags two patients' images as copies. True positives: every Kermany test image altered (mirror, intensity,
JPEG, resampling, noise) and looked up among the test images. Prints, per comparison, the pairs, the pHash
candidates, the highest band-pass correlation and the matches at the module's thresholds.

    python benchmarks/near_duplicates.py [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cxrgan.data.near_duplicates import (CANDIDATE_BITS, MIN_DETAIL, MIN_LAYOUT, Fingerprints, fingerprints,
                                         hash_distances, match, mirror_thumbnails)

DEFAULT_DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("L"))


def _round_trip(image: np.ndarray, side: int) -> np.ndarray:
    size = image.shape[::-1]
    return np.asarray(Image.fromarray(image).resize((side, side), Image.BILINEAR).resize(size, Image.BILINEAR))


def _zoom(image: np.ndarray, factor: float) -> np.ndarray:
    side = round(image.shape[0] * factor)
    big = np.asarray(Image.fromarray(image).resize((side, side), Image.BICUBIC))
    offset = (side - image.shape[0]) // 2
    return big[offset:offset + image.shape[0], offset:offset + image.shape[1]]


def _shift(image: np.ndarray, levels: int) -> np.ndarray:
    return np.clip(image.astype(np.int16) + levels, 0, 255).astype(np.uint8)


ALTERATIONS = {
    "mirror": lambda x, rng: x[:, ::-1],
    "+1 grey level": lambda x, rng: _shift(x, 1),
    "+10 grey levels": lambda x, rng: _shift(x, 10),
    "contrast x 0.9": lambda x, rng: np.clip(x * 0.9 + 12, 0, 255).astype(np.uint8),
    "gamma 0.8": lambda x, rng: (255 * (x / 255.0) ** 0.8).astype(np.uint8),
    "noise sd 3": lambda x, rng: np.clip(x + rng.normal(0, 3, x.shape), 0, 255).astype(np.uint8),
    "JPEG 75": lambda x, rng: _jpeg(x, 75),
    "JPEG 50": lambda x, rng: _jpeg(x, 50),
    "JPEG 30": lambda x, rng: _jpeg(x, 30),
    "resized to 56 px and back": lambda x, rng: _round_trip(x, 56),
    "resized to 48 px and back": lambda x, rng: _round_trip(x, 48),
    "resized to 32 px and back": lambda x, rng: _round_trip(x, 32),
    "mirror + JPEG 75": lambda x, rng: _jpeg(np.ascontiguousarray(x[:, ::-1]), 75),
    "mirror + 1 + 56 px": lambda x, rng: _round_trip(_shift(np.ascontiguousarray(x[:, ::-1]), 1), 56),
    "zoom 5 % (not covered)": lambda x, rng: _zoom(x, 1.05),
}


def candidate_pairs(queries: Fingerprints, references: Fingerprints, groups=None) -> dict[str, float]:
    """Over every candidate pair (pHash within CANDIDATE_BITS, pairs of one group skipped): how many, the highest
    thumbnail and band-pass correlations (best orientation), and the pairs at or above both thresholds."""
    out = {"pairs": 0, "candidates": 0, "layout": -1.0, "detail": -1.0, "matches": 0}
    for q0 in range(0, len(queries), 512):
        near = hash_distances(queries.hashes[q0:q0 + 512], references.hashes) <= CANDIDATE_BITS
        if groups is not None:
            near &= groups[0][q0:q0 + 512, None] != groups[1][None, :]
            out["pairs"] += int((groups[0][q0:q0 + 512, None] != groups[1][None, :]).sum())
        else:
            out["pairs"] += near.size
        rows, cols = np.nonzero(near)
        out["candidates"] += len(rows)
        if not len(rows):
            continue
        values = [(np.einsum("ij,ij->i", queries.layout[q0 + rows], lay[cols]),
                   np.einsum("ij,ij->i", queries.detail[q0 + rows], det[cols]))
                  for lay, det in ((references.layout, references.detail),
                                   (mirror_thumbnails(references.layout), mirror_thumbnails(references.detail)))]
        layout, detail = np.maximum(values[0][0], values[1][0]), np.maximum(values[0][1], values[1][1])
        both = [(lay >= MIN_LAYOUT) & (det >= MIN_DETAIL) for lay, det in values]
        out["layout"], out["detail"] = max(out["layout"], layout.max()), max(out["detail"], detail.max())
        out["matches"] += int((both[0] | both[1]).sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA))
    args = parser.parse_args()
    root = Path(args.data_dir)

    def load(name: str) -> dict[str, np.ndarray]:
        with np.load(root / name) as archive:
            return {key: archive[key] for key in ("images", "split", "patient_id", "official_split")
                    if key in archive.files}

    kermany = load("kermany_pneumonia/kermany_pneumonia_64.npz")
    nih_pneumonia = load("nih_pneumonia/nih_pneumonia_64.npz")
    nih_subset = load("nih_chestxray14_subset/nih_chestxray14_subset_64.npz")
    started = time.perf_counter()
    prints = fingerprints(kermany["images"])
    seconds = time.perf_counter() - started
    print(f"fingerprints of {len(prints)} images (64 px): {seconds:.1f} s; a near-duplicate: pHash within "
          f"{CANDIDATE_BITS} bits, then thumbnail correlation >= {MIN_LAYOUT} and band-pass correlation >= {MIN_DETAIL}")
    split = kermany["split"].astype(str)
    patients = np.char.add(np.char.add(kermany["official_split"].astype(str), "/"), kermany["patient_id"].astype(str))
    train, val, test = (prints.subset(np.flatnonzero(split == s)) for s in ("train", "val", "test"))
    train_patients = patients[split == "train"]
    nih_p, nih_s = fingerprints(nih_pneumonia["images"]), fingerprints(nih_subset["images"])
    nih_s_patients = nih_subset["patient_id"].astype(str)
    print("\nimages of different patients (every match is a false positive):")
    print(f"{'queries vs references':42s} {'pairs':>10s} {'candidates':>11s} {'max corr.':>10s} {'max detail':>11s} "
          f"{'matches':>8s}")
    for label, queries, references, groups in (
            ("Kermany test vs train", test, train, None), ("Kermany val vs train", val, train, None),
            ("Kermany train vs train (other patients)", train, train, (train_patients, train_patients)),
            ("NIH pneumonia vs all Kermany", nih_p, prints, None), ("NIH subset vs NIH pneumonia", nih_s, nih_p, None),
            ("NIH subset vs itself (other patients)", nih_s, nih_s, (nih_s_patients, nih_s_patients))):
        found = candidate_pairs(queries, references, groups)
        if groups is not None and queries is references:  # each unordered pair was seen twice
            found = {k: v // 2 if k in ("pairs", "candidates", "matches") else v for k, v in found.items()}
        print(f"{label:42s} {found['pairs']:10d} {found['candidates']:11d} {found['layout']:10.3f} "
              f"{found['detail']:11.3f} {found['matches']:8d}")

    rng = np.random.default_rng(0)
    originals = kermany["images"][split == "test"]
    mirrored = fingerprints(np.ascontiguousarray(originals[:, :, ::-1]))
    print(f"\naltered copies of the {len(originals)} Kermany test images, looked up among the test images:")
    print(f"{'alteration':30s} {'found':>8s} {'min corr.':>10s} {'min detail':>11s} {'most bits off':>14s}")
    for name, alter in ALTERATIONS.items():
        altered = np.stack([alter(image, rng) for image in originals])
        copies = fingerprints(altered)
        bits = np.array([hash_distances(copies.hashes[i:i + 1], test.hashes[i:i + 1])[0, 0] for i in range(len(altered))])
        found = match(copies, test)
        own = [np.maximum(np.einsum("ij,ij->i", getattr(copies, key), getattr(test, key)),
                          np.einsum("ij,ij->i", getattr(copies, key), getattr(mirrored, key)))
               for key in ("layout", "detail")]
        print(f"{name:30s} {found.count:4d}/{len(altered):<3d} {own[0].min():10.3f} {own[1].min():11.3f} "
              f"{bits.max():14d}")


if __name__ == "__main__":
    main()
