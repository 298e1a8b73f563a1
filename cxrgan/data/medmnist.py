"""Official MedMNIST v2 / MedMNIST+ chest files (PneumoniaMNIST, ChestMNIST): download and load as a CXRDataset.

Yang J. et al. 2023, "MedMNIST v2: A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10:41. The files hold ``{train,val,test}_images`` (N,H,W) uint8 and
``{train,val,test}_labels`` (N,1) for binary tasks or (N,K) multi-hot for ChestMNIST.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.data.dataset import SPLITS, CXRDataset
from cxrgan.data.members import is_numeric, read_members
from cxrgan.errors import CxrganError
from cxrgan.io import atomic_write

_ZENODO = "https://zenodo.org/records/10519652/files"

#: per flag: class names (binary: negative, positive; multi-label: the K findings) and MD5 per image size
MEDMNIST_CHEST = {
    "pneumoniamnist": {
        "labels": ("normal", "pneumonia"),
        "md5": {
            28: "28209eda62fecd6e6a2d98b1501bb15f",
            64: "8f4eceb4ccffa70c672198ea285246c6",
            128: "05b46931834c231683c68f40c47b2971",
            224: "d6a3c71de1b945ea11211b03746c1fe1",
        },
    },
    "chestmnist": {
        "labels": (
            "atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
            "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia",
        ),
        "md5": {
            28: "02c8a6516a18b556561a56cbdd36c4a8",
            64: "9de6cd0b934ebb5b7426cfba5efbae16",
            128: "db107e5590b27930b62dbaf558aebee3",
            224: "45bd33e6f06c3e8cdb481c74a89152aa",
        },
    },
}


def medmnist_filename(flag: str, size: int) -> str:
    """The official file name: ``pneumoniamnist.npz`` at 28 px, ``pneumoniamnist_64.npz`` otherwise."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_url(flag: str, size: int) -> str:
    """The Zenodo download address of the official file (MedMNIST+ record 10519652)."""
    _check_flag(flag, size)
    return f"{_ZENODO}/{medmnist_filename(flag, size)}?download=1"


def download_medmnist(
    flag: str = "pneumoniamnist",
    size: int = 28,
    root: str | os.PathLike = "~/.medmnist",
    timeout: float = 60.0,
) -> Path:
    """Download an official MedMNIST chest file unless a copy with the right MD5 is already in ``root``.

    Args:
        flag: "pneumoniamnist" or "chestmnist".
        size: 28, 64, 128 or 224 pixels.
        root: folder for the file (created if needed).
        timeout: seconds to wait for the server before giving up.

    Returns:
        Path of the verified .npz file.
    """
    _check_flag(flag, size)
    expected_md5 = MEDMNIST_CHEST[flag]["md5"][size]
    path = Path(root).expanduser() / medmnist_filename(flag, size)
    if path.is_file() and _md5(path) == expected_md5:
        return path
    url = medmnist_url(flag, size)

    def _fetch(tmp: str) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise CxrganError(
                f"could not download {url} ({exc}); this machine may be offline. Download the file by hand "
                f"and place it at {path}, or pass its path to load_medmnist"
            ) from exc
        actual = _md5(tmp)
        if actual != expected_md5:
            raise CxrganError(f"{url}: downloaded file has MD5 {actual}, expected {expected_md5}; try again")

    return atomic_write(path, _fetch)


def is_medmnist_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is an .npz holding MedMNIST's ``train_images``/``train_labels`` keys."""
    try:
        members = read_members(path)
    except CxrganError:
        return False
    return "train_images" in members and "train_labels" in members


def load_medmnist(path: str | os.PathLike, label_names: Sequence[str] | None = None) -> CXRDataset:
    """Load an official MedMNIST .npz (all splits present in the file).

    Args:
        path: the .npz file, e.g. ``pneumoniamnist_64.npz``.
        label_names: for a binary file the names of classes 0 and 1; for a multi-label file the K column
            names. By default taken from the flag in the file name (pneumoniamnist / chestmnist), else
            ("negative", "positive") or "label_0".."label_{K-1}".
    """
    path = Path(path)
    if not path.is_file():
        raise CxrganError(f"{path}: no such file")
    members = read_members(path)  # headers first: no object arrays, no claimed size the file cannot hold
    bad = [k for k, m in members.items() if k.endswith(("_images", "_labels")) and not is_numeric(m)]
    if bad:
        raise CxrganError(f"{path}: {bad[0]!r} must hold numbers, got dtype {members[bad[0]].dtype}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CxrganError(f"{path}: not a readable .npz file ({exc})") from exc
    images, labels, splits = [], [], []
    with archive:
        present = [s for s in SPLITS if f"{s}_images" in archive.files]
        if "train" not in present:
            raise CxrganError(f"{path}: not a MedMNIST file (no 'train_images'); found {archive.files}")
        for split_name in present:
            if f"{split_name}_labels" not in archive.files:
                raise CxrganError(f"{path}: '{split_name}_images' has no matching '{split_name}_labels'")
            split_images = _to_gray(archive[f"{split_name}_images"], path, split_name)
            split_labels = np.asarray(archive[f"{split_name}_labels"])
            if split_labels.ndim == 1:
                split_labels = split_labels[:, None]
            if len(split_labels) != len(split_images):
                raise CxrganError(
                    f"{path}: {len(split_images)} {split_name} images but {len(split_labels)} {split_name} labels"
                )
            if images and split_images.shape[1:] != images[0].shape[1:]:
                raise CxrganError(
                    f"{path}: {split_name} images are {split_images.shape[1:]}, train images {images[0].shape[1:]}"
                )
            if labels and split_labels.shape[1] != labels[0].shape[1]:
                raise CxrganError(f"{path}: {split_name} labels have {split_labels.shape[1]} columns, train {labels[0].shape[1]}")
            images.append(split_images)
            labels.append(split_labels)
            splits += [split_name] * len(split_images)
    y = np.concatenate(labels).astype(np.float32)
    values = set(np.unique(y).tolist())
    if not values <= {0.0, 1.0}:
        raise CxrganError(
            f"{path}: labels hold values {sorted(values)}; only binary and multi-label (0/1) files are supported"
        )
    names = default_label_names(path, y.shape[1]) if label_names is None else tuple(str(n) for n in label_names)
    meta = pd.DataFrame({"split": splits, "source": path.stem})
    if y.shape[1] == 1:
        if len(names) != 2:
            raise CxrganError(f"{path}: a binary file needs two class names (negative, positive), got {list(names)}")
        return CXRDataset(np.concatenate(images), y, (names[1],), meta, class_names=(names[0], names[1]))
    if len(names) != y.shape[1]:
        raise CxrganError(f"{path}: labels have {y.shape[1]} columns but {len(names)} names were given")
    return CXRDataset(np.concatenate(images), y, names, meta)


def default_label_names(path: Path, n_columns: int) -> tuple[str, ...]:
    for flag, spec in MEDMNIST_CHEST.items():
        if path.name.startswith(flag):
            names = spec["labels"]
            if (n_columns == 1 and len(names) == 2) or len(names) == n_columns:
                return names
    return ("negative", "positive") if n_columns == 1 else tuple(f"label_{j}" for j in range(n_columns))


def _to_gray(images: np.ndarray, path: Path, split_name: str) -> np.ndarray:
    """MedMNIST stores gray sets as (N,H,W) and colour sets as (N,H,W,3); colour becomes ITU-R 601 luma."""
    if images.dtype != np.uint8:
        raise CxrganError(f"{path}: {split_name}_images are {images.dtype}, expected uint8")
    if images.ndim == 4 and images.shape[-1] == 3:
        luma = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.round(luma).astype(np.uint8)
    if images.ndim == 4 and images.shape[-1] == 1:
        return images[..., 0]
    if images.ndim != 3:
        raise CxrganError(f"{path}: {split_name}_images have shape {images.shape}, expected (N, H, W)")
    return images


def _check_flag(flag: str, size: int) -> None:
    if flag not in MEDMNIST_CHEST:
        raise CxrganError(f"unknown MedMNIST chest flag {flag!r}; expected one of {sorted(MEDMNIST_CHEST)}")
    if size not in MEDMNIST_CHEST[flag]["md5"]:
        raise CxrganError(f"MedMNIST has no {size}-pixel files; expected one of {sorted(MEDMNIST_CHEST[flag]['md5'])}")


def _md5(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
