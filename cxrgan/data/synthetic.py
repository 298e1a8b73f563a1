"""Synthetic images made elsewhere (``--synthetic FILE``): an .npz in the data format or a folder of class folders,
read at the data's image size, checked against the data's label names, and returned as training rows flagged
synthetic.

A file is either

* a compact ``.npz`` as ``cxrgan sample RUN --out synth.npz`` writes it: ``images`` (N, H, W) uint8 and, for a
  binary task, ``labels`` (N,) 0 / 1 with ``label_names`` (the two class names), for a multi-label task
  ``findings`` (N, K) 1 / 0 (-1 or NaN: unknown, masked in the loss) with ``finding_names``; or
* a folder with one subfolder per class, named as the data's classes (``normal/``, ``pneumonia/``; a subfolder may
  be missing, e.g. minority-class images only), holding PNG, JPEG or DICOM files (the readers of
  ``cxrgan data prepare``: grayscale, centre-cropped, area-resized).

Images of another size are centre-cropped and area-resized to the data's. Each file becomes one row of a comparison,
named ``synthetic:<file stem>``; :class:`SyntheticFiles` holds the files of a run and how their rows use them.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.images import IMAGE_SUFFIXES, load_many, resize_stack
from cxrgan.data.labels import apply_uncertainty_policy
from cxrgan.data.members import read_members
from cxrgan.errors import CxrganError

ROW_PREFIX = "synthetic:"  # the method name of a file's row: synthetic:<file stem>
MODES = ("balance", "add", "pretrain")


def row_name(path: str | Path) -> str:
    """``synthetic:<stem>`` of a file (``synth.npz`` -> ``synthetic:synth``), ``synthetic:<name>`` of a folder."""
    path = Path(path)
    return ROW_PREFIX + (path.stem if path.suffix.lower() == ".npz" else path.name)


@dataclass(frozen=True)
class SyntheticFiles:
    """The ``--synthetic`` files of a run and how their rows use them; written with the run's config."""

    paths: tuple[str, ...] = ()  # .npz files or folders of class folders; each is a row named synthetic:<stem>
    mode: str = "balance"  # balance: per seed, the images the dcgan row would add; add: all; pretrain: synth-pretrain
    ratio: float = 1.0  # balance: fill the minority class (each augmented finding) up to ratio x the majority
    findings: tuple[str, ...] = ()  # multi-label balance: the findings to fill; empty = dcgan-rare's default choice

    def __post_init__(self) -> None:
        if isinstance(self.paths, (str, Path)):  # one file given as a string: the one-file tuple
            object.__setattr__(self, "paths", (str(self.paths),))
        if self.mode not in MODES:
            raise CxrganError(f"--synthetic-mode {self.mode!r}: expected one of {list(MODES)}")
        if self.ratio <= 0:
            raise CxrganError(f"synthetic ratio must be positive, got {self.ratio}")
        names = [row_name(p) for p in self.paths]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise CxrganError(f"--synthetic gives the row(s) {twice} twice; every file needs its own stem")

    @property
    def rows(self) -> tuple[str, ...]:
        """The method names of the files' rows, in the order given."""
        return tuple(row_name(p) for p in self.paths)

    def path_of(self, row: str) -> str:
        """The file behind row ``row``."""
        for path in self.paths:
            if row_name(path) == row:
                return path
        raise CxrganError(f"no --synthetic file gives the row {row!r}; the files give {list(self.rows)}")

    def with_rows(self, methods: tuple[str, ...]) -> tuple[str, ...]:
        """``methods`` followed by the rows of the files not already among them."""
        return tuple(methods) + tuple(r for r in self.rows if r not in methods)


def load_synthetic(path: str | Path, like: CXRDataset) -> CXRDataset:
    """The images of a synthetic file as training rows of ``like``'s task and image size, flagged synthetic.

    Args:
        path: an .npz or a folder of class folders (see the module docstring).
        like: the real data the rows join (label names, class names and image size are the contract).
    """
    path, what = Path(path), f"--synthetic {path}"
    if not path.exists():
        raise CxrganError(f"{what}: no such file or folder")
    if path.is_dir():
        images, labels = _read_folder(path, like, what)
    elif path.suffix.lower() == ".npz":
        images, labels = _read_npz(path, like, what)
    else:
        raise CxrganError(f"{what}: expected an .npz file or a folder with one subfolder per class")
    if len(images) == 0:
        raise CxrganError(f"{what}: holds no images")
    height, width = like.images.shape[1:]
    if images.shape[1:] != (height, width):
        if height != width:
            raise CxrganError(f"{what}: images are {images.shape[2]}x{images.shape[1]} px and the data's "
                              f"{width}x{height} px are not square; prepare the file at the data's size")
        images = resize_stack(images, height)
    name = row_name(path)
    meta = pd.DataFrame({"patient_id": [f"{name}-{i:06d}" for i in range(len(images))], "split": "train",
                         "view": "", "source": name, "synthetic": True})
    return CXRDataset(images, labels, like.label_names, meta, class_names=like.class_names)


def _read_npz(path: Path, like: CXRDataset, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        read_members(path)  # headers first: no object arrays, no claimed size the file cannot hold
    except CxrganError as exc:
        raise CxrganError(f"{what}: {str(exc).removeprefix(f'{path}: ')}") from None
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CxrganError(f"{what}: not a readable .npz file ({exc})") from exc
    if "images" not in arrays:
        raise CxrganError(f"{what}: no 'images' array; found {sorted(arrays)}")
    images = arrays["images"]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CxrganError(f"{what}: 'images' must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
    n = len(images)
    if like.is_binary:
        missing = [k for k in ("labels", "label_names") if k not in arrays]
        if missing:
            raise CxrganError(f"{what}: a binary task needs 'labels' and 'label_names'; missing {missing}")
        names, ours = [str(s) for s in arrays["label_names"]], list(like.class_names or ("0", "1"))
        if names != ours:
            raise CxrganError(f"{what}: its label names {names} differ from the data's {ours}")
        labels = arrays["labels"].astype(np.float32)
        if labels.shape != (n,):
            raise CxrganError(f"{what}: 'labels' has shape {labels.shape}; expected ({n},) for {n} images")
        bad = np.flatnonzero(~np.isin(labels, (0.0, 1.0)))
        if len(bad):
            raise CxrganError(f"{what}: label {labels[bad[0]]:g} at row {bad[0]}; binary labels are 0 and 1")
        return images, labels[:, None]
    missing = [k for k in ("findings", "finding_names") if k not in arrays]
    if missing:
        raise CxrganError(f"{what}: a multi-label task needs 'findings' and 'finding_names'; missing {missing}")
    names, ours = [str(s) for s in arrays["finding_names"]], list(like.label_names)
    if names != ours:
        raise CxrganError(f"{what}: its finding names {names} differ from the data's {ours}")
    raw = arrays["findings"].astype(np.float32)
    if raw.shape != (n, len(ours)):
        raise CxrganError(f"{what}: 'findings' has shape {raw.shape}; expected ({n}, {len(ours)})")
    try:
        return images, apply_uncertainty_policy(raw, "ignore", "ignore")  # -1 and blank: unknown, masked
    except CxrganError as exc:
        raise CxrganError(f"{what}: {exc}") from exc


def _read_folder(path: Path, like: CXRDataset, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not like.is_binary:
        raise CxrganError(f"{what}: a folder gives one class per image; a multi-label task needs an .npz with "
                          "'findings' and 'finding_names'")
    classes = list(like.class_names or ("0", "1"))
    folders = sorted(p for p in path.iterdir() if p.is_dir())
    unknown = [f.name for f in folders if f.name.lower() not in [c.lower() for c in classes]]
    if unknown:
        raise CxrganError(f"{what}: its class folders {[f.name for f in folders]} differ from the data's classes "
                          f"{classes}")
    files, labels = [], []
    for folder in sorted(folders, key=lambda f: [c.lower() for c in classes].index(f.name.lower())):  # label order
        found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [float([c.lower() for c in classes].index(folder.name.lower()))] * len(found)
    if not files:
        raise CxrganError(f"{what}: no {'/'.join(IMAGE_SUFFIXES)} images in class folders named {classes}")
    if like.images.shape[1] != like.images.shape[2]:
        raise CxrganError(f"{what}: the data's images are not square; give an .npz at the data's size")
    return load_many(files, like.image_size), np.asarray(labels, np.float32)[:, None]
