"""The compact .npz format of ../shared/data: read it (memory-mapped when stored uncompressed) and write it.

Keys: ``images`` (N,H,W) uint8, ``labels`` (N,) int8, ``label_names``, ``split``, optional multi-label
``findings`` (N,K) with ``finding_names`` (values 1 / 0 / -1 uncertain; float files may hold NaN for blank),
and any other (N,) array as metadata (``patient_id``, ``view_position`` or ``view``, ``filename``, ...).
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgan.data.dataset import SPLITS, CXRDataset
from cxrgan.data.labels import apply_uncertainty_policy
from cxrgan.data.leakage import check_patient_disjoint, namespace_patients
from cxrgan.errors import CxrganError
from cxrgan.io import atomic_write

TARGETS = ("labels", "findings")
_NOT_ABNORMAL = {"no finding", "normal", "support devices"}
_RESERVED = {"images", "labels", "label_names", "findings", "finding_names", "split"}


def load_npz(
    path: str | os.PathLike,
    target: str = "labels",
    uncertainty: str = "ignore",
    blank: str = "zero",
    allow_patient_overlap: bool = False,
) -> CXRDataset:
    """Load a compact file; patient ids are namespaced by ``official_split`` and checked to be split-disjoint.

    Args:
        path: the .npz file.
        target: "labels" for the binary task (``labels``, ``label_names``), "findings" for multi-label.
        uncertainty: U-policy applied to -1 findings ("zeros", "ones", "ignore").
        blank: how NaN (blank) findings are read ("zero" or "ignore").
        allow_patient_overlap: accept a patient in two splits (the count is printed) instead of an error.
    """
    path = Path(path)
    if not path.exists():
        raise CxrganError(f"{path}: no such file")
    if target not in TARGETS:
        raise CxrganError(f"unknown target {target!r}; expected one of {list(TARGETS)}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CxrganError(f"{path}: not a readable .npz file ({exc})") from exc
    with archive:
        missing = [k for k in ("images", "labels", "split") if k not in archive.files]
        if missing:
            raise CxrganError(f"{path}: missing array(s) {missing}; found {archive.files}")
        images = _memmap_member(path, "images")
        if images is None:
            images = archive["images"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise CxrganError(f"{path}: 'images' must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
        n = len(images)
        columns = {k: archive[k] for k in archive.files if k not in _RESERVED and k != "images"}
        meta = pd.DataFrame({k: v for k, v in columns.items() if v.ndim == 1 and len(v) == n})
        split = archive["split"]
        if split.shape != (n,):
            raise CxrganError(f"{path}: 'split' has shape {split.shape} but there are {n} images")
        meta["split"] = split.astype(str)
        bad_splits = sorted(set(meta["split"]) - set(SPLITS))
        if bad_splits:
            raise CxrganError(f"{path}: unknown split name(s) {bad_splits} in 'split'; expected {list(SPLITS)}")
        meta = namespace_patients(meta)
        check_patient_disjoint(meta, str(path), allow=allow_patient_overlap)
        if "view" not in meta and "view_position" in meta:
            meta["view"] = meta["view_position"]
        if "source" not in meta:
            meta["source"] = path.stem
        meta["synthetic"] = meta["synthetic"].astype(bool) if "synthetic" in meta else False
        if target == "labels":
            labels = archive["labels"].astype(np.float32)
            if labels.shape[:1] != (n,):
                raise CxrganError(f"{path}: 'labels' has shape {labels.shape} but there are {n} images")
            names = [str(s) for s in archive["label_names"]] if "label_names" in archive.files else ["0", "1"]
            if labels.ndim != 1:
                raise CxrganError(f"{path}: 'labels' must be (N,), got {labels.shape}")
            labels[labels == -1] = np.nan  # save_npz writes an unknown binary label as -1
            values = set(np.unique(labels[~np.isnan(labels)]).tolist())
            if not values <= {0.0, 1.0}:
                raise CxrganError(f"{path}: binary 'labels' hold values {sorted(values)}; expected 0 and 1")
            if len(names) != 2:
                raise CxrganError(f"{path}: binary task needs two label_names, got {names}")
            return CXRDataset(images, labels[:, None], (names[1],), meta, class_names=(names[0], names[1]))
        if "findings" not in archive.files or "finding_names" not in archive.files:
            raise CxrganError(f"{path}: target 'findings' needs 'findings' and 'finding_names' arrays")
        raw = archive["findings"].astype(np.float32)
        try:
            labels = apply_uncertainty_policy(raw, uncertainty, blank)
        except CxrganError as exc:
            raise CxrganError(f"{path}: {exc}") from exc
        return CXRDataset(images, labels, tuple(str(s) for s in archive["finding_names"]), meta)


def save_npz(dataset: CXRDataset, path: str | os.PathLike, raw_findings: np.ndarray | None = None) -> Path:
    """Write ``dataset`` in the compact format, uncompressed so large image arrays can be memory-mapped.

    A binary dataset is written as ``labels``; a multi-label one as ``findings`` (``raw_findings`` keeps
    uncertain -1 values when given) plus ``labels`` = any finding present. Written atomically.
    """
    arrays = {"images": np.ascontiguousarray(dataset.images),
              **label_arrays(dataset.labels, dataset.label_names, dataset.class_names, dataset.meta, raw_findings)}

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, _write)


def label_arrays(labels: np.ndarray, label_names: tuple[str, ...], class_names: tuple[str, str] | None,
                 meta: pd.DataFrame, raw_findings: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every array of a compact file but ``images``: labels, their names and the metadata columns."""
    arrays: dict[str, np.ndarray] = {}
    if len(label_names) == 1:
        y = labels[:, 0]
        arrays["labels"] = np.where(np.isnan(y), -1, y).astype(np.int8)
        arrays["label_names"] = np.array(class_names or ("negative", label_names[0]))
    else:
        findings = raw_findings if raw_findings is not None else labels
        arrays["findings"] = np.asarray(findings, dtype=np.float32)
        arrays["finding_names"] = np.array(label_names)
        # "abnormal" = any positive finding; CheXpert's "No Finding" / "Support Devices" columns are not findings
        columns = [j for j, n in enumerate(label_names) if n.lower() not in _NOT_ABNORMAL]
        arrays["labels"] = (np.nan_to_num(labels[:, columns]) == 1).any(axis=1).astype(np.int8)
        arrays["label_names"] = np.array(["normal", "abnormal"])
    for column in meta.columns:
        values = meta[column].to_numpy()
        arrays[column] = values.astype(bool) if column == "synthetic" else values.astype(str)
    return arrays


def _memmap_member(path: Path, name: str) -> np.ndarray | None:
    """Memory-map ``name.npy`` inside an uncompressed .npz; None when the member is compressed."""
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(f"{name}.npy")
        except KeyError:
            return None
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local_header = f.read(30)
            name_len = int.from_bytes(local_header[26:28], "little")
            extra_len = int.from_bytes(local_header[28:30], "little")
            data_start = info.header_offset + 30 + name_len + extra_len
            f.seek(data_start)
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(version, np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")
