"""Convert any supported source layout into the compact .npz format at one image size (``cxrgan data prepare``).

Supported sources, detected in this order by what is at ``src`` (see :data:`LAYOUTS`): an official MedMNIST
.npz, a compact .npz (re-sized), an NIH ChestX-ray14 folder or ``Data_Entry_2017.csv``, a CheXpert folder or
CSV, and an image folder ``{train,val,test}/{CLASS}/*``. Images are centre-cropped to the short edge and
area-resized; the output is written atomically, so a failure never leaves a file that looks complete. The CSV
layouts (NIH, CheXpert: up to hundreds of thousands of images) are streamed into the file, never held in memory,
and a killed run resumes (:mod:`cxrgan.data.streamed`).
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from cxrgan.data.chexpert import chexpert_rows, chexpert_tables, is_chexpert_table
from cxrgan.data.dataset import CXRDataset, SourceRows
from cxrgan.data.leakage import check_patient_disjoint, namespace_patients
from cxrgan.data.folders import (KERMANY_PATIENT_REGEX, check_patient_regex, find_split_dirs, list_image_folder,
                                 load_image_folder, suggest_patient_regex)
from cxrgan.data.images import resize_stack
from cxrgan.data.medmnist import is_medmnist_file, load_medmnist
from cxrgan.data.nih import NIH_CSV, is_nih_table, nih_rows
from cxrgan.data.members import read_members
from cxrgan.data.npz import check_compact, save_npz
from cxrgan.data.splits import RandomState, assign_splits, resplit_rows
from cxrgan.data.streamed import write_streamed
from cxrgan.errors import CxrganError
from cxrgan.io import atomic_write


@dataclass(frozen=True)
class PrepareOptions:
    """Everything a layout converter may need besides the source and the size."""

    workers: int = 1  # decoding threads
    progress: bool = True  # tqdm progress bars
    classes: tuple[str, ...] | None = None  # image folders: class folder names in label order (negative first)
    patient_regex: str | None = None  # image folders: patient id from file name; None = Kermany names if all match
    patient_csv: str | None = None  # image folders: CSV mapping file names to patients (overrides patient_regex)
    frontal_only: bool = True  # CheXpert: drop lateral views
    views: tuple[str, ...] | None = None  # view values kept (CheXpert AP/PA, NIH View Position); None = layout default, () = all
    missing: str = "error"  # CSV layouts: "error" or "skip" rows whose image file is absent
    val_fraction: float = 0.1  # share of training patients carved into val when the source has no val split
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test when the source has no split at all
    random_state: RandomState = 0  # seed of the patient-level splits
    allow_patient_overlap: bool = False  # accept a patient in two splits (counted and printed); off = an error


@dataclass(frozen=True)
class Layout:
    """One source layout: how to recognise it and how to write it as a compact file."""

    name: str
    detect: Callable[[Path], bool]
    write: Callable[[Path, int, Path, PrepareOptions], Path]


def _is_npz(src: Path) -> bool:
    return src.is_file() and src.suffix.lower() == ".npz"


def _nih_root(src: Path) -> Path | None:
    if src.is_dir() and (src / NIH_CSV).is_file():
        return src
    if src.is_file() and src.suffix.lower() == ".csv" and is_nih_table(src):
        return src.parent
    return None


def _is_chexpert(src: Path) -> bool:
    if src.is_file():
        return src.suffix.lower() == ".csv" and is_chexpert_table(src)
    return src.is_dir() and any(is_chexpert_table(src / f"{role}.csv") for role in ("train", "valid"))


def _is_image_folder(src: Path) -> bool:
    if not src.is_dir():
        return False
    try:
        list_image_folder(src)
    except CxrganError:
        return False
    return True


def _write_medmnist(src: Path, size: int, out: Path, options: PrepareOptions) -> Path:
    dataset = load_medmnist(src)
    images = resize_stack(dataset.images, size, progress=options.progress)
    return _save_checked(CXRDataset(images, dataset.labels, dataset.label_names, dataset.meta, dataset.class_names),
                         src, out, options, split_method="official")


def _write_compact(src: Path, size: int, out: Path, options: PrepareOptions) -> Path:
    """Re-size a compact file, keeping every other array exactly as stored."""
    members = read_members(src)  # headers first: no object arrays, no claimed size the file cannot hold
    missing = [k for k in ("images", "labels", "split") if k not in members]
    if missing:
        raise CxrganError(f"{src}: neither a compact file (missing {missing}) nor a MedMNIST file; found {sorted(members)}")
    check_compact(src)  # the loaders' checks of shapes and dtypes, before any array is read
    try:
        with np.load(src, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CxrganError(f"{src}: not a readable .npz file ({exc})") from exc
    meta = pd.DataFrame({k: arrays[k].astype(str) for k in ("patient_id", "official_split", "split") if k in arrays})
    check_patient_disjoint(namespace_patients(meta), str(src), allow=options.allow_patient_overlap)
    arrays["images"] = resize_stack(arrays["images"], size, progress=options.progress)

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(out, _write)


def _write_nih(src: Path, size: int, out: Path, options: PrepareOptions) -> Path:
    root = _nih_root(src)
    csv = src if src.is_file() else None
    rows = nih_rows(root, csv=csv, views=options.views or None, val_fraction=options.val_fraction,
                    fractions=options.fractions, random_state=options.random_state, missing=options.missing)
    return _stream_checked(rows, src, size, out, options)


def _write_chexpert(src: Path, size: int, out: Path, options: PrepareOptions) -> Path:
    chexpert_tables(src)  # a clear error if the folder has no CSV
    # raw findings keep -1 (uncertain) and NaN (blank): the policy is chosen at load time, load_npz(uncertainty=...)
    rows = chexpert_rows(src, uncertainty="ignore", blank="ignore", frontal_only=options.frontal_only,
                         views=("AP", "PA") if options.views is None else (options.views or None),
                         val_fraction=options.val_fraction, fractions=options.fractions,
                         random_state=options.random_state, missing=options.missing)
    return _stream_checked(rows, src, size, out, options)


def _stream_checked(rows: SourceRows, src: Path, size: int, out: Path, options: PrepareOptions) -> Path:
    """Refuse (or count) patients in several splits, then stream the images into the compact file."""
    check_patient_disjoint(rows.stand_in().meta, str(src), allow=options.allow_patient_overlap)
    # NIH and CheXpert tables name every image's patient; their splits (official lists, val carved) group by it
    return write_streamed(rows, size, out, workers=options.workers, progress=options.progress, split_method="patient")


def _write_image_folder(src: Path, size: int, out: Path, options: PrepareOptions) -> Path:
    names = [p.name for p in list_image_folder(src, options.classes).paths]
    regex = options.patient_regex
    if options.patient_csv is None and regex:
        check_patient_regex(regex, names)
    if options.patient_csv is None and regex is None:
        regex = KERMANY_PATIENT_REGEX if all(_matches(KERMANY_PATIENT_REGEX, n) for n in names) else ""
    splits = set(find_split_dirs(src))
    made_here = not splits or ("val" not in splits and "train" in splits and options.val_fraction > 0)
    patients_known = bool(options.patient_csv or regex)
    if made_here and not patients_known:
        _warn_per_image(src, names, "its split" if not splits else "its validation split (carved from train)")
    dataset = load_image_folder(
        src, size, classes=options.classes, patient_regex=regex or None, workers=options.workers,
        progress=options.progress, patient_csv=options.patient_csv,
    )
    if not splits:
        dataset = assign_splits(dataset, options.fractions, options.random_state)
    elif made_here:
        train = (dataset.meta["split"] == "train").to_numpy()
        dataset = resplit_rows(dataset, train, (1.0 - options.val_fraction, options.val_fraction, 0.0), options.random_state)
    method = ("patient" if patients_known else "image") if made_here else "official"
    return _save_checked(dataset, src, out, options, split_method=method)


def _warn_per_image(src: Path, names: list[str], what: str) -> None:
    """Say that ``what`` is made per image, since no patient is known, and offer a regex the file names fit."""
    hint = suggest_patient_regex(names)
    offer = f"; the file names follow {hint[0]}: pass --patient-id '{hint[1]}'" if hint else ""
    print(f"cxrgan: warning: {src}: no patient ids (--patient-id REGEX or --patient-csv FILE), so {what} is made per "
          f"image and one patient's images may sit in several splits (cxrgan compare refuses such a file unless "
          f"--allow-unknown-patients){offer}", file=sys.stderr)


def _save_checked(dataset: CXRDataset, src: Path, out: Path, options: PrepareOptions, **kwargs) -> Path:
    """Refuse (or count, when allowed) patients in several splits, then write the compact file."""
    check_patient_disjoint(dataset.meta, str(src), allow=options.allow_patient_overlap)
    return save_npz(dataset, out, **kwargs)


def _matches(regex: str, name: str) -> bool:
    return re.search(regex, name) is not None


#: detection order matters: a MedMNIST file is also an .npz, a CheXpert folder may also hold images
LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("medmnist", lambda s: _is_npz(s) and is_medmnist_file(s), _write_medmnist),
        Layout("compact", _is_npz, _write_compact),
        Layout("nih", lambda s: _nih_root(s) is not None, _write_nih),
        Layout("chexpert", _is_chexpert, _write_chexpert),
        Layout("folders", _is_image_folder, _write_image_folder),
    )
}


def detect_layout(src: str | os.PathLike) -> str:
    """Name of the first layout in :data:`LAYOUTS` that recognises ``src``."""
    src = Path(src)
    if not src.exists():
        raise CxrganError(f"{src}: no such file or folder")
    for layout in LAYOUTS.values():
        if layout.detect(src):
            return layout.name
    raise CxrganError(
        f"{src}: unrecognised source; expected a .npz (compact or MedMNIST), a folder with {NIH_CSV}, a CheXpert "
        "folder or CSV (train.csv / valid.csv with a Path column), or an image folder root/{train,val,test}/{CLASS}/"
    )


def prepare(
    src: str | os.PathLike,
    size: int,
    out: str | os.PathLike,
    layout: str | None = None,
    workers: int = 1,
    progress: bool = True,
    classes: Sequence[str] | None = None,
    patient_regex: str | None = None,
    patient_csv: str | os.PathLike | None = None,
    frontal_only: bool = True,
    views: Sequence[str] | None = None,
    missing: str = "error",
    val_fraction: float = 0.1,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: RandomState = 0,
    allow_patient_overlap: bool = False,
) -> Path:
    """Convert ``src`` to a compact .npz of ``size`` x ``size`` images at ``out`` (written atomically).

    Args:
        src: a .npz file, a dataset folder, or a CSV (NIH ``Data_Entry_2017.csv`` or CheXpert).
        size: output side in pixels.
        out: the .npz file to write.
        layout: force one of :data:`LAYOUTS` instead of detecting it.
        workers: decoding threads.
        progress: show progress bars.
        classes: image folders: class folder names in label order (negative first).
        patient_regex: image folders: regex giving the patient id from a file name (its first group, else the
            whole match; every file name must match); None uses Kermany's naming when every file follows it; ""
            means no patient ids.
        patient_csv: image folders: a CSV mapping file names to patients (columns filename, patient_id).
        frontal_only: CheXpert: drop lateral views.
        views: view values to keep: CheXpert ``AP/PA`` among frontal rows, NIH ``View Position``. None uses
            the layout default (CheXpert AP and PA, NIH all); an empty sequence keeps all.
        missing: CSV layouts: "error" or "skip" for rows whose image is absent.
        val_fraction: share of training patients moved to val when the source has train and test only.
        fractions: train/val/test shares when the source has no split.
        random_state: seed of the patient-level splits.
        allow_patient_overlap: accept a patient in two splits (the count is printed) instead of an error.

    Returns:
        The written path. For CheXpert the file keeps raw findings (1 / 0 / -1 / NaN) so the uncertainty
        policy is chosen when loading: ``load_npz(out, target="findings", uncertainty="ones")``.
    """
    src, out = Path(src), Path(out)
    if size < 1:
        raise CxrganError(f"--size must be a positive number of pixels, got {size}")
    if out.suffix.lower() != ".npz":
        raise CxrganError(f"{out}: the output must be a .npz file")
    if out.resolve() == src.resolve():
        raise CxrganError(f"{out}: the output would overwrite the source")
    name = layout if layout is not None else detect_layout(src)
    if name not in LAYOUTS:
        raise CxrganError(f"unknown layout {name!r}; expected one of {list(LAYOUTS)}")
    if patient_regex and patient_csv:
        raise CxrganError("--patient-id and --patient-csv both name the patients; give one")
    if name != "folders" and (patient_regex or patient_csv):
        raise CxrganError(f"{src}: --patient-id and --patient-csv are for image folders; a {name} source names its "
                          "patients itself")
    options = PrepareOptions(
        workers=workers, progress=progress, classes=tuple(classes) if classes is not None else None,
        patient_regex=patient_regex, patient_csv=str(patient_csv) if patient_csv is not None else None,
        frontal_only=frontal_only, views=tuple(views) if views is not None else None,
        missing=missing, val_fraction=val_fraction, fractions=tuple(fractions), random_state=random_state,
        allow_patient_overlap=allow_patient_overlap,
    )
    return LAYOUTS[name].write(src, size, out, options)
