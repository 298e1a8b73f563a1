"""NIH ChestX-ray14: ``Data_Entry_2017.csv`` plus the PNG folders, as a 14-finding multi-label dataset.

Wang X. et al. 2017, "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised
Classification and Localization of Common Thorax Diseases", CVPR. ``Finding Labels`` holds findings joined by
``|``; ``No Finding`` means all 14 are negative. NIH labels have no uncertain value.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.data.dataset import CXRDataset, SourceRows
from cxrgan.data.splits import RandomState, assign_splits, resplit_rows
from cxrgan.errors import CxrganError

NIH_FINDINGS = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
    "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
NIH_CSV = "Data_Entry_2017.csv"
NIH_COLUMNS = ("Image Index", "Finding Labels", "Patient ID", "View Position")
NO_FINDING = "No Finding"
MISSING_POLICIES = ("error", "skip")


def read_csv_checked(path: str | os.PathLike, required: Sequence[str], **kwargs) -> pd.DataFrame:
    """Read a CSV and name any required column it lacks."""
    path = Path(path)
    if not path.is_file():
        raise CxrganError(f"{path}: no such file")
    try:
        table = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CxrganError(f"{path}: not a readable CSV file ({exc})") from exc
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CxrganError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    return table


def is_nih_table(path: str | os.PathLike) -> bool:
    """True when the CSV header has NIH's ``Image Index`` and ``Finding Labels`` columns."""
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return False
    return {"Image Index", "Finding Labels"} <= {str(c).strip() for c in header}


def read_nih_table(csv_path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """Read ``Data_Entry_2017.csv`` and parse ``Finding Labels`` into an (N, 14) 0/1 float32 array.

    Returns:
        The table (with ``patient_id`` formatted like the file names, e.g. ``00000013``) and the findings in
        :data:`NIH_FINDINGS` order. An unknown finding name is an error naming the CSV row and value.
    """
    table = read_csv_checked(csv_path, NIH_COLUMNS, dtype={"Image Index": str, "Finding Labels": str})
    findings = np.zeros((len(table), len(NIH_FINDINGS)), np.float32)
    column = {name: j for j, name in enumerate(NIH_FINDINGS)}
    for i, value in enumerate(table["Finding Labels"].fillna("").astype(str)):
        for name in (part.strip() for part in value.split("|")):
            if name == NO_FINDING:
                continue
            if name not in column:
                raise CxrganError(
                    f"{csv_path}: row {i + 2} (image {table['Image Index'].iat[i]}): unknown finding {name!r} in "
                    f"'Finding Labels' {value!r}; expected {NO_FINDING!r} or {list(NIH_FINDINGS)} joined by '|'"
                )
            findings[i, column[name]] = 1.0
    table = table.copy()
    table["patient_id"] = [_patient_id(v) for v in table["Patient ID"]]
    return table, findings


def find_images(root: Path, suffixes: Sequence[str] = (".png",)) -> dict[str, Path]:
    """File name -> path for every image below ``root`` (NIH ships ``images/`` or ``images_001/images/`` ...)."""
    index: dict[str, Path] = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.lower().endswith(tuple(suffixes)):
                index.setdefault(name, Path(folder) / name)
    return index


def load_nih(
    root: str | os.PathLike,
    size: int = 64,
    csv: str | os.PathLike | None = None,
    views: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: RandomState = 0,
    missing: str = "error",
    workers: int = 1,
    progress: bool = False,
) -> CXRDataset:
    """Load NIH ChestX-ray14 as a 14-column multi-label dataset (:func:`nih_rows`, then every image decoded).

    Args:
        root: folder holding ``Data_Entry_2017.csv`` and the PNG images (searched recursively).
        size: output side in pixels (centre crop + area resize).
        csv, views, val_fraction, fractions, random_state, missing: as in :func:`nih_rows`.
        workers: decoding threads.
        progress: show a progress bar.
    """
    rows = nih_rows(root, csv, views, val_fraction, fractions, random_state, missing)
    return rows.decode(size, workers=workers, progress=progress, desc="decoding NIH")


def nih_rows(
    root: str | os.PathLike,
    csv: str | os.PathLike | None = None,
    views: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: RandomState = 0,
    missing: str = "error",
) -> SourceRows:
    """NIH ChestX-ray14's rows -- image files, 14 findings, metadata and splits -- without reading any image; grouped
    by split (train, val, test), CSV order within each.

    Splits: with ``train_val_list.txt`` and ``test_list.txt`` beside the CSV (the official patient-disjoint
    split), test is the official test list and ``val_fraction`` of the train_val patients become val;
    otherwise a seeded patient-level stratified split with ``fractions`` (train, val, test).

    Args:
        root: folder holding ``Data_Entry_2017.csv`` and the PNG images (searched recursively).
        csv: the label table, default ``root/Data_Entry_2017.csv``.
        views: keep only these ``View Position`` values (e.g. ("PA",)); None keeps all.
        val_fraction: share of official train_val rows (by patient) that become val.
        fractions: train/val/test shares when there is no official split list.
        random_state: seed or generator for the patient-level splits.
        missing: "error" if a CSV row has no image file, or "skip" to drop such rows (a partial download).
    """
    root = Path(root)
    csv_path = Path(csv) if csv is not None else root / NIH_CSV
    if missing not in MISSING_POLICIES:
        raise CxrganError(f"unknown missing-image policy {missing!r}; expected one of {list(MISSING_POLICIES)}")
    table, findings = read_nih_table(csv_path)
    keep = np.ones(len(table), bool)
    if views is not None:
        keep &= table["View Position"].astype(str).isin(list(views)).to_numpy()
    index = find_images(root)
    names = table["Image Index"].astype(str).str.strip()
    found = names.map(index).notna().to_numpy()
    absent = keep & ~found
    if absent.any() and missing == "error":
        first = names[absent].iat[0]
        raise CxrganError(
            f"{root / first}: image file not found ({int(absent.sum())} of {int(keep.sum())} rows of {csv_path.name} "
            "have no image under the folder); pass missing='skip' to use only the images present"
        )
    keep &= found
    if not keep.any():
        raise CxrganError(f"{csv_path}: no rows left with an image file under {root}")
    table, findings = table[keep].reset_index(drop=True), findings[keep]
    paths = tuple(index[name] for name in table["Image Index"].astype(str).str.strip())
    meta = pd.DataFrame(
        {
            "patient_id": table["patient_id"],
            "split": "train",
            "view": table["View Position"].astype(str),
            "source": "nih_chestxray14",
            "filename": table["Image Index"].astype(str),
            "finding_labels": table["Finding Labels"].fillna("").astype(str),
        }
    )
    for column, key in (("Patient Age", "patient_age"), ("Patient Gender", "patient_gender")):
        if column in table:
            meta[key] = table[column].astype(str)
    rows = SourceRows(paths, findings, NIH_FINDINGS, meta)
    split = _nih_splits(rows.stand_in(), csv_path.parent, val_fraction, fractions, random_state)
    return rows.with_meta(split.meta).grouped_by_split()


def _nih_splits(
    dataset: CXRDataset, folder: Path, val_fraction: float, fractions: Sequence[float], random_state: RandomState
) -> CXRDataset:
    train_list, test_list = folder / "train_val_list.txt", folder / "test_list.txt"
    if not (train_list.is_file() and test_list.is_file()):
        return assign_splits(dataset, fractions, random_state)
    test_names = set(test_list.read_text().split())
    train_names = set(train_list.read_text().split())
    filenames = dataset.meta["filename"]
    unlisted = ~filenames.isin(test_names | train_names)
    if unlisted.any():
        raise CxrganError(f"{folder}: image {filenames[unlisted].iat[0]} is in neither {train_list.name} nor {test_list.name}")
    is_test = filenames.isin(test_names).to_numpy()
    meta = dataset.meta.copy()
    meta.loc[is_test, "split"] = "test"
    dataset = CXRDataset(dataset.images, dataset.labels, dataset.label_names, meta)
    return resplit_rows(dataset, ~is_test, (1.0 - val_fraction, val_fraction, 0.0), random_state)


def _patient_id(value: object) -> str:
    text = str(value).strip()
    if text.lower() in ("", "nan"):
        return ""
    try:
        return f"{int(float(text)):08d}"
    except ValueError:
        return text
