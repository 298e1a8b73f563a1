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
from cxrgan.data.folders import suggest_patient_regex
from cxrgan.data.labels import apply_uncertainty_policy
from cxrgan.data.leakage import SPLIT_METHODS, check_patient_disjoint, check_split_method, namespace_patients
from cxrgan.data.members import Member, is_numeric, is_text, read_members
from cxrgan.errors import CxrganError
from cxrgan.io import atomic_write

TARGETS = ("labels", "findings")
SPLIT_METHOD = "split_method"  # 0-d text array: how the split was made (see cxrgan.data.leakage.SPLIT_METHODS)
_NOT_ABNORMAL = {"no finding", "normal", "support devices"}
_RESERVED = {"images", "labels", "label_names", "findings", "finding_names", "split", SPLIT_METHOD}


def load_npz(
    path: str | os.PathLike,
    target: str = "labels",
    uncertainty: str = "ignore",
    blank: str = "zero",
    allow_patient_overlap: bool = False,
    allow_unknown_patients: bool = True,
) -> CXRDataset:
    """Load a compact file; patient ids are namespaced by ``official_split`` and checked to be split-disjoint.

    Args:
        path: the .npz file.
        target: "labels" for the binary task (``labels``, ``label_names``), "findings" for multi-label.
        uncertainty: U-policy applied to -1 findings ("zeros", "ones", "ignore").
        blank: how NaN (blank) findings are read ("zero" or "ignore").
        allow_patient_overlap: accept a patient in two splits (the count is printed) instead of an error.
        allow_unknown_patients: accept a split made per image with unknown patients; experiments that evaluate on
            the file's splits pass False unless ``--allow-unknown-patients`` (its training split alone may be used
            whatever the split).
    """
    dataset = read_compact(path, target, uncertainty, blank)
    check_patient_disjoint(dataset.meta, str(path), allow=allow_patient_overlap)
    method = read_split_method(path)
    if method == "image" and not allow_unknown_patients:
        names = [Path(str(n)).name for n in dataset.meta["filename"]] if "filename" in dataset.meta else []
        convention = suggest_patient_regex(names)
        hint = f" (its file names follow {convention[0]}: --patient-id '{convention[1]}')" if convention else ""
        check_split_method(method, str(path), allow=False, hint=hint)
    return dataset


def read_split_method(path: str | os.PathLike) -> str | None:
    """How the compact file's split was made (a key of ``SPLIT_METHODS``), or None when the file does not say."""
    members = read_members(path)
    if SPLIT_METHOD not in members:
        return None
    with np.load(path, allow_pickle=False) as archive:
        method = str(_read(archive, Path(path), SPLIT_METHOD)[()])
    if method not in SPLIT_METHODS:
        raise CxrganError(f"{path}: {SPLIT_METHOD!r} is {method!r}; expected one of {list(SPLIT_METHODS)}")
    return method


def read_compact(path: str | os.PathLike, target: str = "labels", uncertainty: str = "ignore", blank: str = "zero",
                 pixels: bool = True) -> CXRDataset:
    """A compact file as a dataset, every array checked from its ``.npy`` header before its data is read or cast
    (:func:`check_compact`); patients are namespaced but not checked (:func:`load_npz` does).

    ``pixels=False`` reads no image data at all: the images are a zero-stride stand-in of the stored shape, for
    summaries of the labels (``cxrgan data info``)."""
    path = Path(path)
    if target not in TARGETS:
        raise CxrganError(f"unknown target {target!r}; expected one of {list(TARGETS)}")
    members = check_compact(path, target)
    n = members["images"].shape[0]
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CxrganError(f"{path}: not a readable .npz file ({exc})") from exc
    with archive:
        if pixels:
            images = members["images"].memmap(path)
            if images is None:
                images = _read(archive, path, "images")
        else:
            images = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), members["images"].shape)
        columns = {k: _read(archive, path, k) for k, m in members.items()
                   if k not in _RESERVED and m.shape == (n,)}
        meta = pd.DataFrame(columns)
        meta["split"] = _read(archive, path, "split").astype(str)
        bad_splits = sorted(set(meta["split"]) - set(SPLITS))
        if bad_splits:
            raise CxrganError(f"{path}: unknown split name(s) {bad_splits} in 'split'; expected {list(SPLITS)}")
        meta = namespace_patients(meta)
        if "view" not in meta and "view_position" in meta:
            meta["view"] = meta["view_position"]
        if "source" not in meta:
            meta["source"] = path.stem
        meta["synthetic"] = meta["synthetic"].astype(bool) if "synthetic" in meta else False
        if target == "labels":
            labels = _read(archive, path, "labels").astype(np.float32)
            names = [str(s) for s in _read(archive, path, "label_names")] if "label_names" in members else ["0", "1"]
            labels[labels == -1] = np.nan  # save_npz writes an unknown binary label as -1
            values = set(np.unique(labels[~np.isnan(labels)]).tolist())
            if not values <= {0.0, 1.0}:
                raise CxrganError(f"{path}: binary 'labels' hold values {sorted(values)}; expected 0 and 1 (-1 unknown)")
            if len(names) != 2:
                raise CxrganError(f"{path}: binary task needs two label_names, got {names}")
            return CXRDataset(images, labels[:, None], (names[1],), meta, class_names=(names[0], names[1]))
        raw = _read(archive, path, "findings").astype(np.float32)
        try:
            labels = apply_uncertainty_policy(raw, uncertainty, blank)
        except CxrganError as exc:
            raise CxrganError(f"{path}: {exc}") from exc
        return CXRDataset(images, labels, tuple(str(s) for s in _read(archive, path, "finding_names")), meta)


def check_compact(path: str | os.PathLike, target: str = "labels") -> dict[str, Member]:
    """The members of a compact file, refused unless their headers describe one: ``images`` (N, H, W) uint8; ``split``
    and ``labels`` (N,) of text and numbers; ``label_names`` text; for ``target="findings"`` numeric ``findings``
    (N, K) and K text ``finding_names``; and no object arrays or claimed sizes the file cannot hold
    (:func:`cxrgan.data.members.read_members`). Reads no array data."""
    path = Path(path)
    members = read_members(path)
    missing = [k for k in ("images", "labels", "split") if k not in members]
    if missing:
        raise CxrganError(f"{path}: missing array(s) {missing}; found {sorted(members)}")
    images = members["images"]
    if len(images.shape) != 3 or images.dtype != np.uint8:
        raise CxrganError(f"{path}: 'images' must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
    n = images.shape[0]
    expected = {"split": ((n,), is_text, "text"), "labels": ((n,), is_numeric, "numbers")}
    if "label_names" in members:
        length = members["label_names"].shape[0] if len(members["label_names"].shape) == 1 else -1
        expected["label_names"] = ((length,), is_text, "text")
    if target == "findings":
        if "findings" not in members or "finding_names" not in members:
            raise CxrganError(f"{path}: target 'findings' needs 'findings' and 'finding_names' arrays")
        k = members["finding_names"].shape[0] if len(members["finding_names"].shape) == 1 else -1
        expected["findings"] = ((n, k), is_numeric, "numbers")
        expected["finding_names"] = ((k,), is_text, "text")
    if SPLIT_METHOD in members:
        expected[SPLIT_METHOD] = ((), is_text, "text")
    for name, (shape, kind_ok, kind) in expected.items():
        member = members[name]
        if name.endswith("names") and len(member.shape) != 1:
            raise CxrganError(f"{path}: {name!r} must be a 1-D array of names, got shape {member.shape}")
        if member.shape != shape:
            counts = f"{n} images" + (f" and {shape[-1]} finding names" if name == "findings" else "")
            raise CxrganError(f"{path}: {name!r} has shape {member.shape}, expected {shape}"
                              + ("" if name.endswith("names") else f" for {counts}"))
        if not kind_ok(member):
            raise CxrganError(f"{path}: {name!r} must hold {kind}, got dtype {member.dtype}")
    return members


def _read(archive, path: Path, name: str) -> np.ndarray:
    """One array's data, its header already checked; damaged data (a bad CRC, a cut stream) is an error naming it."""
    try:
        return archive[name]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CxrganError(f"{path}: array {name!r} cannot be read ({exc})") from None


def save_npz(dataset: CXRDataset, path: str | os.PathLike, raw_findings: np.ndarray | None = None,
             split_method: str | None = None) -> Path:
    """Write ``dataset`` in the compact format, uncompressed so large image arrays can be memory-mapped.

    A binary dataset is written as ``labels``; a multi-label one as ``findings`` (``raw_findings`` keeps
    uncertain -1 values when given) plus ``labels`` = any finding present; ``split_method`` (a key of
    ``SPLIT_METHODS``) records how the split was made. Written atomically.
    """
    arrays = {"images": np.ascontiguousarray(dataset.images),
              **label_arrays(dataset.labels, dataset.label_names, dataset.class_names, dataset.meta, raw_findings,
                             split_method)}

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, _write)


def label_arrays(labels: np.ndarray, label_names: tuple[str, ...], class_names: tuple[str, str] | None,
                 meta: pd.DataFrame, raw_findings: np.ndarray | None = None,
                 split_method: str | None = None) -> dict[str, np.ndarray]:
    """Every array of a compact file but ``images``: labels, their names, the metadata columns and how the split
    was made."""
    arrays: dict[str, np.ndarray] = {}
    if split_method is not None:
        if split_method not in SPLIT_METHODS:
            raise ValueError(f"unknown split method {split_method!r}; expected one of {list(SPLIT_METHODS)}")
        arrays[SPLIT_METHOD] = np.array(split_method)
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
