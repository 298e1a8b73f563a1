"""CheXpert: ``train.csv`` / ``valid.csv`` plus images, with the uncertainty policy as a parameter.

Irvin J. et al. 2019, "CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert
Comparison", AAAI. Each of the 14 observation columns holds 1 (positive), 0 (negative), -1 (uncertain) or
blank (not mentioned). ``Path`` is relative to the folder that contains the dataset folder, e.g.
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.data.dataset import CXRDataset, SourceRows
from cxrgan.data.labels import apply_uncertainty_policy
from cxrgan.data.nih import MISSING_POLICIES, read_csv_checked
from cxrgan.data.splits import RandomState, assign_splits, resplit_rows
from cxrgan.errors import CxrganError

CHEXPERT_FINDINGS = (
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
    "Support Devices",
)
CHEXPERT_COLUMNS = ("Path", "Frontal/Lateral") + CHEXPERT_FINDINGS
RAW_VALUES = (1.0, 0.0, -1.0)
_PATIENT = re.compile(r"(patient\d+)")
_STUDY = re.compile(r"(study\d+)")


def is_chexpert_table(path: str | os.PathLike) -> bool:
    """True when the CSV header has CheXpert's ``Path`` column and its observation columns."""
    try:
        header = {str(c).strip() for c in pd.read_csv(path, nrows=0).columns}
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return False
    return "Path" in header and len(header & set(CHEXPERT_FINDINGS)) >= len(CHEXPERT_FINDINGS) // 2


def read_chexpert_table(csv_path: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray]:
    """Read a CheXpert CSV and its raw findings.

    Returns:
        The table (with ``patient_id`` and ``study`` parsed from ``Path``) and an (N, 14) float32 array of
        raw values 1 / 0 / -1 / NaN (blank) in :data:`CHEXPERT_FINDINGS` order. Any other value is an error
        naming the CSV row, column and value.
    """
    table = read_csv_checked(csv_path, CHEXPERT_COLUMNS, dtype=str, keep_default_na=False)
    raw = np.empty((len(table), len(CHEXPERT_FINDINGS)), np.float32)
    for j, column in enumerate(CHEXPERT_FINDINGS):
        text = table[column].astype(str).str.strip()
        values = pd.to_numeric(text.where(text != ""), errors="coerce").to_numpy(np.float64)
        bad = (text != "").to_numpy() & ~np.isin(values, RAW_VALUES)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CxrganError(
                f"{csv_path}: row {i + 2} ({table['Path'].iat[i]}): column {column!r} has value {text.iat[i]!r}; "
                "expected 1, 0, -1 or blank"
            )
        raw[:, j] = values
    table = table.copy()
    paths = table["Path"].astype(str)
    table["patient_id"] = paths.str.extract(_PATIENT, expand=False).fillna("")
    table["study"] = paths.str.extract(_STUDY, expand=False).fillna("")
    return table, raw


def chexpert_tables(src: str | os.PathLike) -> dict[str, Path]:
    """The CSVs of a CheXpert source: ``{"train": train.csv, "valid": valid.csv}`` for a folder (those present),
    ``{"train": src}`` for a single CSV file."""
    src = Path(src)
    if src.is_file():
        return {"train": src}
    tables = {role: src / f"{role}.csv" for role in ("train", "valid") if (src / f"{role}.csv").is_file()}
    if not tables:
        raise CxrganError(f"{src}: no train.csv or valid.csv (CheXpert layout) in this folder")
    return tables


def resolve_image_paths(csv_path: Path, relative: Sequence[str]) -> list[Path]:
    """Turn ``Path`` values into files: tried against the CSV's parent folder's parent (the official
    layout), the CSV's folder, and the CSV's folder without the dataset-folder prefix."""
    csv_dir = csv_path.resolve().parent
    bases = [
        lambda p: csv_dir.parent / p,
        lambda p: csv_dir / p,
        lambda p: csv_dir / Path(*Path(p).parts[1:]) if len(Path(p).parts) > 1 else csv_dir / p,
    ]
    for base in bases:  # the first base under which one of the first rows exists is used for every row
        for value in relative[:100]:
            if base(value).is_file():
                return [base(v) for v in relative]
    return [bases[0](v) for v in relative]


def load_chexpert_raw(
    src: str | os.PathLike,
    size: int = 64,
    uncertainty: str = "ignore",
    blank: str = "zero",
    frontal_only: bool = True,
    views: Sequence[str] | None = ("AP", "PA"),
    val_fraction: float = 0.1,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: RandomState = 0,
    missing: str = "error",
    workers: int = 1,
    progress: bool = False,
) -> tuple[CXRDataset, np.ndarray]:
    """Like :func:`load_chexpert` but also return the raw (N, 14) findings (1 / 0 / -1 / NaN), row-aligned."""
    rows = chexpert_rows(src, uncertainty, blank, frontal_only, views, val_fraction, fractions, random_state, missing)
    return rows.decode(size, workers=workers, progress=progress, desc="decoding CheXpert"), rows.raw_findings


def chexpert_rows(
    src: str | os.PathLike,
    uncertainty: str = "ignore",
    blank: str = "zero",
    frontal_only: bool = True,
    views: Sequence[str] | None = ("AP", "PA"),
    val_fraction: float = 0.1,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: RandomState = 0,
    missing: str = "error",
) -> SourceRows:
    """CheXpert's rows -- image files, findings under the policy, raw findings, metadata and splits -- without
    reading any image, grouped by split (train, val, test), CSV order within each (arguments as in
    :func:`load_chexpert`)."""
    if missing not in MISSING_POLICIES:
        raise CxrganError(f"unknown missing-image policy {missing!r}; expected one of {list(MISSING_POLICIES)}")
    apply_uncertainty_policy(np.zeros(1), uncertainty, blank)  # reject a bad policy before anything else
    parts, raws, paths = [], [], []
    for role, csv_path in chexpert_tables(src).items():
        table, raw = read_chexpert_table(csv_path)
        keep = np.ones(len(table), bool)
        frontal = table["Frontal/Lateral"].str.strip().str.lower() == "frontal"
        if frontal_only:
            keep &= frontal.to_numpy()
        if views is not None:
            if "AP/PA" not in table:
                raise CxrganError(f"{csv_path}: missing column(s) ['AP/PA'] needed by views={list(views)}")
            # the AP/PA filter concerns frontal rows; lateral rows are governed by frontal_only
            keep &= (~frontal | table["AP/PA"].str.strip().isin(list(views))).to_numpy()
        files = resolve_image_paths(csv_path, table["Path"].astype(str).str.strip().tolist())
        present = np.array([f.is_file() for f in files], bool) if len(files) else np.zeros(0, bool)
        absent = keep & ~present
        if absent.any() and missing == "error":
            i = int(np.flatnonzero(absent)[0])
            raise CxrganError(
                f"{files[i]}: image file not found (row {i + 2} of {csv_path}; {int(absent.sum())} rows lack "
                "their image); pass missing='skip' to use only the images present"
            )
        keep &= present
        table = table[keep].reset_index(drop=True)
        table["role"] = role
        parts.append(table)
        raws.append(raw[keep])
        paths += [f for f, k in zip(files, keep) if k]
    table, raw = pd.concat(parts, ignore_index=True), np.concatenate(raws)
    if not len(table):
        raise CxrganError(f"{src}: no rows left after the view filters (frontal_only={frontal_only}, views={views})")
    ap_pa = table["AP/PA"].str.strip() if "AP/PA" in table else pd.Series("", index=table.index)
    meta = pd.DataFrame(
        {
            "patient_id": table["patient_id"],
            "split": "train",
            "view": ap_pa.where(ap_pa != "", table["Frontal/Lateral"].str.strip()),
            "source": "chexpert",
            "filename": table["Path"].astype(str),
            "frontal_lateral": table["Frontal/Lateral"].str.strip(),
            "study": table["study"],
        }
    )
    for column, key in (("Sex", "sex"), ("Age", "age")):
        if column in table:
            meta[key] = table[column].astype(str)
    rows = SourceRows(tuple(paths), apply_uncertainty_policy(raw, uncertainty, blank), CHEXPERT_FINDINGS, meta,
                      raw_findings=raw)
    split = _chexpert_splits(rows.stand_in(), raw, table["role"].to_numpy(), val_fraction, fractions, random_state)
    return rows.with_meta(split.meta).grouped_by_split()


def load_chexpert(
    src: str | os.PathLike,
    size: int = 64,
    uncertainty: str = "ignore",
    blank: str = "zero",
    frontal_only: bool = True,
    views: Sequence[str] | None = ("AP", "PA"),
    val_fraction: float = 0.1,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: RandomState = 0,
    missing: str = "error",
    workers: int = 1,
    progress: bool = False,
) -> CXRDataset:
    """Load CheXpert as a 14-column multi-label dataset with a chosen uncertainty policy.

    Splits: the official ``valid.csv`` rows (radiologist-labelled) become ``test``; ``train.csv`` rows are
    split by patient into train and ``val_fraction`` val. A source with only a training CSV gets a seeded
    patient-level stratified split with ``fractions``.

    Args:
        src: the dataset folder (holding train.csv / valid.csv) or one CSV file.
        size: output side in pixels (centre crop + area resize).
        uncertainty: U-policy for -1: "zeros" (U-Zeros), "ones" (U-Ones) or "ignore" (U-Ignore, NaN).
        blank: blank (unmentioned) findings read as "zero" or "ignore" (NaN).
        frontal_only: drop lateral views.
        views: ``AP/PA`` values kept among frontal rows, e.g. ("AP", "PA"); None keeps all.
        val_fraction: share of train.csv rows (by patient) that become val.
        fractions: train/val/test shares when there is no valid.csv.
        random_state: seed or generator for the patient-level splits.
        missing: "error" if a row's image is absent, or "skip" to drop such rows.
        workers: decoding threads.
        progress: show a progress bar.
    """
    dataset, _ = load_chexpert_raw(
        src, size, uncertainty, blank, frontal_only, views, val_fraction, fractions, random_state, missing,
        workers, progress,
    )
    return dataset


def _chexpert_splits(
    dataset: CXRDataset,
    raw: np.ndarray,
    role: np.ndarray,
    val_fraction: float,
    fractions: Sequence[float],
    random_state: RandomState,
) -> CXRDataset:
    """Assign splits from the definite positives only, so every uncertainty policy gets the same split."""
    is_valid = role == "valid"
    meta = dataset.meta.copy()
    meta.loc[is_valid, "split"] = "test"
    stand_in = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (len(dataset), 1, 1))  # splits never read pixels
    definite = CXRDataset(stand_in, (raw == 1).astype(np.float32), dataset.label_names, meta)
    if is_valid.any():
        definite = resplit_rows(definite, ~is_valid, (1.0 - val_fraction, val_fraction, 0.0), random_state)
    else:
        definite = assign_splits(definite, fractions, random_state)
    meta["split"] = definite.meta["split"].to_numpy()
    return CXRDataset(dataset.images, dataset.labels, dataset.label_names, meta)
