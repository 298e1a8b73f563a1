"""Plain-text summaries of a data source (``cxrgan data info``): split and class counts, patients, imbalance,
and for multi-label sources a per-finding table of positive / uncertain / negative / blank labels and the label
imbalance (IRLbl, MeanIR) before and after ML-ROS / ML-RUS.

Works on label tables only, without decoding images: compact and MedMNIST .npz files, NIH and CheXpert CSVs
(or their folders) and image folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.data.chexpert import CHEXPERT_FINDINGS, is_chexpert_table, read_chexpert_table
from cxrgan.data.dataset import SPLITS
from cxrgan.data.leakage import check_patient_disjoint, describe_split
from cxrgan.data.folders import KERMANY_PATIENT_REGEX, list_image_folder, patient_ids_from_names
from cxrgan.data.label_imbalance import (
    DEFAULT_PERCENTAGE,
    imbalance_table,
    label_sets,
    ml_ros_rows,
    ml_rus_rows,
)
from cxrgan.data.medmnist import default_label_names
from cxrgan.data.members import is_numeric, read_members
from cxrgan.data.npz import check_compact, read_compact, read_split_method
from cxrgan.data.nih import NIH_CSV, NIH_FINDINGS, is_nih_table, read_nih_table
from cxrgan.errors import CxrganError

_LATERAL = {"ll", "rl", "lateral", "lat"}
_NOT_ABNORMAL = {"no finding", "normal", "support devices"}


@dataclass(frozen=True)
class LabelSummary:
    """What ``info`` needs from a source: one row per image, no pixels."""

    kind: str  # layout name shown in the header
    split: np.ndarray  # (N,) split names ("all" when the source has none)
    patient_id: np.ndarray  # (N,) patient ids, "" unknown
    classes: np.ndarray  # (N,) int class index (binary: 0 / 1)
    class_names: tuple[str, ...]  # names of the class indices
    findings: np.ndarray | None = None  # (N, K) raw 1 / 0 / -1 / NaN, multi-label sources only
    finding_names: tuple[str, ...] = ()  # the K finding names
    frontal: np.ndarray | None = None  # (N,) bool, None when the view is unknown
    split_made: str = ""  # how the split was made (official folders, patient-grouped, per image), "" when not known


def info(path_or_csv: str | os.PathLike, allow_patient_overlap: bool = False) -> str:
    """Describe a data source as plain-text tables; a patient in two splits is an error unless allowed.

    Args:
        path_or_csv: a compact or MedMNIST .npz, an NIH ``Data_Entry_2017.csv`` or CheXpert CSV, a folder
            holding one of those CSVs, or an image folder ``{train,val,test}/{CLASS}/``.
        allow_patient_overlap: report patients found in several splits instead of refusing the source.
    """
    path = Path(path_or_csv)
    summaries = summarize(path)
    return "\n\n".join(format_summary(path, name, summary, allow_patient_overlap)
                       for name, summary in summaries.items())


def summarize(path: Path) -> dict[str, LabelSummary]:
    """One :class:`LabelSummary` per table at ``path`` (a CheXpert folder gives train.csv and valid.csv)."""
    if not path.exists():
        raise CxrganError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".npz":
        return {path.name: _summarize_npz(path)}
    if path.is_file():
        return {path.name: _summarize_csv(path)}
    if (path / NIH_CSV).is_file():
        return {NIH_CSV: _summarize_csv(path / NIH_CSV)}
    tables = [path / f"{role}.csv" for role in ("train", "valid") if is_chexpert_table(path / f"{role}.csv")]
    if tables:
        return {table.name: _summarize_csv(table) for table in tables}
    return {path.name: _summarize_folder(path)}


def _summarize_npz(path: Path) -> LabelSummary:
    members = read_members(path)  # headers first: no object arrays, no claimed size the file cannot hold
    if "train_labels" in members:  # official MedMNIST
        return _summarize_medmnist(path, members)
    # the loaders' own checks (shapes, dtypes, split names, label values), reading no pixels
    dataset = read_compact(path, "labels", pixels=False)
    findings, finding_names = None, ()
    if "findings" in members:
        check_compact(path, "findings")
        with np.load(path, allow_pickle=False) as archive:
            findings = archive["findings"].astype(np.float32)
            finding_names = tuple(str(s) for s in archive["finding_names"])
    meta = dataset.meta
    y = dataset.labels[:, 0]
    classes = np.where(np.isnan(y), -1, y).astype(int)
    patient = meta["patient_id"].astype(str).to_numpy() if "patient_id" in meta else np.full(len(meta), "")
    frontal = None
    if "frontal_lateral" in meta:
        frontal = meta["frontal_lateral"].astype(str).str.lower().to_numpy() == "frontal"
    else:
        for key in ("view", "view_position"):
            if key in meta:
                frontal = ~meta[key].astype(str).str.lower().isin(list(_LATERAL)).to_numpy()
                break
    return LabelSummary("compact", meta["split"].to_numpy(), patient, classes, dataset.class_names, findings,
                        finding_names, frontal, describe_split(read_split_method(path), meta))


def _summarize_medmnist(path: Path, members: dict) -> LabelSummary:
    bad = [k for k, m in members.items() if k.endswith("_labels") and not is_numeric(m)]
    if bad:
        raise CxrganError(f"{path}: {bad[0]!r} must hold numbers, got dtype {members[bad[0]].dtype}")
    with np.load(path, allow_pickle=False) as archive:
        parts = [(s, np.asarray(archive[f"{s}_labels"])) for s in SPLITS if f"{s}_labels" in members]
    labels = np.concatenate([p.reshape(len(p), -1) for _, p in parts]).astype(np.float32)
    split = np.concatenate([[s] * len(p) for s, p in parts])
    names = default_label_names(path, labels.shape[1])
    if labels.shape[1] == 1:
        return LabelSummary("MedMNIST", split, np.full(len(split), ""), labels[:, 0].astype(int), names)
    return LabelSummary("MedMNIST", split, np.full(len(split), ""), (labels == 1).any(1).astype(int),
                        ("normal", "abnormal"), labels, names, None)


def _summarize_csv(path: Path) -> LabelSummary:
    if is_nih_table(path):
        table, findings = read_nih_table(path)
        names, kind = NIH_FINDINGS, "NIH ChestX-ray14"
        frontal = table["View Position"].astype(str).str.lower().isin(["pa", "ap"]).to_numpy()
    elif is_chexpert_table(path):
        table, findings = read_chexpert_table(path)
        names, kind = CHEXPERT_FINDINGS, "CheXpert"
        frontal = (table["Frontal/Lateral"].str.strip().str.lower() == "frontal").to_numpy()
    else:
        raise CxrganError(
            f"{path}: not an NIH (Image Index, Finding Labels) or CheXpert (Path + 14 observations) table"
        )
    abnormal = _any_finding(findings, names)
    split = np.full(len(table), "all")
    return LabelSummary(kind, split, table["patient_id"].astype(str).to_numpy(), abnormal, ("normal", "abnormal"),
                        findings, names, frontal)


def _summarize_folder(path: Path) -> LabelSummary:
    listing = list_image_folder(path)
    names = [p.name for p in listing.paths]
    regex = KERMANY_PATIENT_REGEX if all(patient_ids_from_names([n], KERMANY_PATIENT_REGEX)[0] for n in names) else None
    return LabelSummary("image folder", np.asarray(listing.splits), np.asarray(patient_ids_from_names(names, regex)),
                        np.asarray(listing.class_index), tuple(c.lower() for c in listing.classes))


def _any_finding(findings: np.ndarray, names: Sequence[str]) -> np.ndarray:
    columns = [j for j, n in enumerate(names) if n.lower() not in _NOT_ABNORMAL]
    return (findings[:, columns] == 1).any(axis=1).astype(int)


# ---- formatting ------------------------------------------------------------------------------------------
def format_summary(path: Path, name: str, summary: LabelSummary, allow_patient_overlap: bool = False) -> str:
    """The tables for one summary."""
    n = len(summary.split)
    patients = summary.patient_id[summary.patient_id != ""]
    head = f"{path if name == path.name else path / name}  ({summary.kind})\nrows: {n}"
    head += f", patients: {len(np.unique(patients))}" if len(patients) else ", patients: unknown"
    crossing = check_patient_disjoint(pd.DataFrame({"patient_id": summary.patient_id, "split": summary.split}),
                                      str(path if name == path.name else path / name), allow=allow_patient_overlap)
    if crossing:
        head += f"\npatients in more than one split: {crossing} (accepted by --allow-patient-overlap)"
    if summary.split_made:
        head += f"\nsplit: {summary.split_made}"
    unknown = {s: int(((summary.classes == -1) & (summary.split == s)).sum()) for s in ("val", "test")}
    if summary.findings is None and any(unknown.values()):
        head += ("\nunknown labels (-1) in evaluation splits: " + ", ".join(f"{s} {n}" for s, n in unknown.items() if n)
                 + " (cxrgan compare refuses them)")
    blocks = [head, _split_table(summary)]
    if summary.findings is not None:
        blocks.append("findings, all rows:\n" + _finding_table(summary.findings, summary.finding_names))
        if summary.frontal is None:
            blocks.append("findings, frontal rows: view unknown")
        else:
            blocks.append(f"findings, frontal rows ({int(summary.frontal.sum())} of {n}):\n"
                          + _finding_table(summary.findings[summary.frontal], summary.finding_names))
        blocks.append(_label_imbalance(summary))
    return "\n\n".join(blocks)


def _label_imbalance(summary: LabelSummary, seed: int = 0) -> str:
    """IRLbl per label and MeanIR of the training rows (all rows without splits), before and after ML-ROS and
    ML-RUS at the default percentage (``cxrgan.data.label_imbalance``); uncertain labels count as absent."""
    rows = summary.split == "train" if (summary.split == "train").any() else np.ones(len(summary.split), bool)
    matrix, names = label_sets(np.where(summary.findings[rows] == 1, 1.0, 0.0), summary.finding_names)
    grown = matrix[np.r_[np.arange(len(matrix)), ml_ros_rows(matrix, DEFAULT_PERCENTAGE, np.random.default_rng(seed))]]
    after = {"ml-ros": grown}
    try:
        removed = ml_rus_rows(matrix, DEFAULT_PERCENTAGE, np.random.default_rng(seed), names)
        after["ml-rus"] = np.delete(matrix, removed, axis=0)
        note = ""
    except CxrganError as exc:
        note = f"\n{exc}"
    table = imbalance_table(matrix, names, **after)
    which = "training rows" if (summary.split == "train").any() else "all rows"
    return (f"label imbalance, {which}, before and after ml-ros / ml-rus at P = {DEFAULT_PERCENTAGE:g}% (seed {seed})"
            "\n(Charte et al. 2015: n = rows carrying the label, IRLbl = the commonest label's n / n, MeanIR = mean "
            "IRLbl; minority labels have IRLbl > MeanIR):\n"
            + _format_table(list(table.columns), table.to_numpy().tolist()) + note)


def _split_table(summary: LabelSummary) -> str:
    order = [s for s in (*SPLITS, "all") if (summary.split == s).any()]
    order += sorted(set(summary.split) - set(order))
    groups = [(s, summary.split == s) for s in order]
    if len(order) > 1:
        groups.append(("total", np.ones(len(summary.split), bool)))
    headers = ["split", "n", "patients", *summary.class_names, "imbalance"]
    rows = []
    for name, mask in groups:
        counts = [int((summary.classes[mask] == c).sum()) for c in range(len(summary.class_names))]
        patients = summary.patient_id[mask]
        patients = patients[patients != ""]
        rows.append([name, int(mask.sum()), len(np.unique(patients)) if len(patients) else "-",
                     *[f"{c} ({_pct(c, int(mask.sum()))})" for c in counts], _imbalance(counts)])
    return _format_table(headers, rows)


def _finding_table(findings: np.ndarray, names: Sequence[str]) -> str:
    n = len(findings)
    rows = []
    for j, name in enumerate(names):
        column = findings[:, j]
        counts = [int((column == 1).sum()), int((column == -1).sum()), int((column == 0).sum()), int(np.isnan(column).sum())]
        rows.append([name, *[f"{c} ({_pct(c, n)})" for c in counts]])
    return _format_table(["finding", "positive", "uncertain", "negative", "blank"], rows)


def _imbalance(counts: Sequence[int]) -> str:
    """Majority : minority count ratio; "one class" when a class is empty."""
    present = [c for c in counts if c > 0]
    if len(present) < len(counts):
        return "one class only" if len(present) <= 1 else "empty class"
    return f"{max(counts) / min(counts):.2f}:1"


def _pct(count: int, total: int) -> str:
    return f"{100.0 * count / total:.1f}%" if total else "-"


def _format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to width; the first column left-aligned, the rest right-aligned."""
    table = [[str(h) for h in headers]] + [[str(v) for v in row] for row in rows]
    widths = [max(len(r[j]) for r in table) for j in range(len(headers))]
    lines = []
    for i, row in enumerate(table):
        cells = [row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
