"""Image-folder datasets laid out as ``root/{train,val,test}/{CLASS}/*.{png,jpg,jpeg,dcm}`` (Kermany et al. 2018).

Kermany D.S. et al. 2018, "Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep Learning",
Cell 172(5). Their chest X-ray release uses exactly this layout with classes NORMAL and PNEUMONIA.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.data.dataset import SPLITS, CXRDataset
from cxrgan.data.images import IMAGE_SUFFIXES, load_many
from cxrgan.data.leakage import namespace_patients
from cxrgan.errors import CxrganError

#: patient id at the start of a Kermany file name: ``person1234_bacteria_…``, ``IM-0115-0001``, ``NORMAL2-IM-1427-0001``
KERMANY_PATIENT_REGEX = r"^(person\d+|NORMAL2-IM-\d+|IM-\d+)"

#: file-name conventions that carry the patient: a regex whose first group is the patient id, offered to the user
#: (``--patient-id``) when a folder's file names follow one and no patient ids were given
PATIENT_CONVENTIONS = {
    "NIH ChestX-ray14 (<patient>_<index>.png)": r"^(\d{8})_\d{3}",
    "CheXpert (patientNNNNN)": r"(patient\d{5})",
    "Kermany (personN_...)": r"^(person\d+)_",
}

#: folder-name spellings accepted for each split (Kaggle copies use "valid" or "validation")
_SPLIT_ALIASES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


@dataclass(frozen=True)
class FolderListing:
    """The image files found under an image-folder root, before decoding."""

    paths: tuple[Path, ...]  # image files, sorted by split, class, name
    splits: tuple[str, ...]  # split of each file
    class_index: tuple[int, ...]  # index into ``classes`` of each file
    classes: tuple[str, ...]  # class folder names in label order


def find_split_dirs(root: Path) -> dict[str, Path]:
    """The split folders present directly under ``root`` (``{}`` when the root holds class folders itself)."""
    found = {}
    if not root.is_dir():
        return found
    children = {child.name.lower(): child for child in root.iterdir() if child.is_dir()}
    for split_name, aliases in _SPLIT_ALIASES.items():
        for alias in aliases:
            if alias in children:
                found[split_name] = children[alias]
                break
    return found


def list_image_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> FolderListing:
    """List the images of an image-folder dataset without decoding them.

    Args:
        root: the folder holding ``train``/``val``/``test`` (or, without split folders, the class folders; all
            rows are then ``train`` and :func:`cxrgan.data.splits.assign_splits` can split them).
        classes: class folder names in label order (first = negative). Default: sorted folder names.
    """
    root = Path(root)
    if not root.is_dir():
        raise CxrganError(f"{root}: no such folder")
    split_dirs = find_split_dirs(root) or {"train": root}
    found_classes = sorted({c.name for d in split_dirs.values() for c in d.iterdir() if c.is_dir()})
    if classes is None:
        classes = found_classes
    classes = tuple(str(c) for c in classes)
    if len(classes) < 2:
        raise CxrganError(f"{root}: need at least two class folders, found {found_classes}")
    by_lower = {c.lower(): c for c in classes}
    paths, splits, class_index = [], [], []
    for split_name in SPLITS:
        if split_name not in split_dirs:
            continue
        for class_dir in sorted(p for p in split_dirs[split_name].iterdir() if p.is_dir()):
            if class_dir.name.lower() not in by_lower:
                continue  # folders outside ``classes`` are left out on purpose (e.g. a 3-class source)
            index = classes.index(by_lower[class_dir.name.lower()])
            files = sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            paths += files
            splits += [split_name] * len(files)
            class_index += [index] * len(files)
    if not paths:
        raise CxrganError(f"{root}: no {'/'.join(IMAGE_SUFFIXES)} images under the class folders {list(classes)}")
    empty = [c for i, c in enumerate(classes) if i not in set(class_index)]
    if empty:
        raise CxrganError(f"{root}: class folder(s) {empty} hold no images")
    return FolderListing(tuple(paths), tuple(splits), tuple(class_index), classes)


def patient_ids_from_names(names: Sequence[str], patient_regex: str | None) -> list[str]:
    """Patient id per file name: the regex's first group (or whole match); "" when it does not match."""
    if patient_regex is None:
        return [""] * len(names)
    pattern = re.compile(patient_regex)
    ids = []
    for name in names:
        match = pattern.search(name)
        ids.append("" if match is None else (match.group(1) if pattern.groups else match.group(0)))
    return ids


def check_patient_regex(regex: str, names: Sequence[str]) -> None:
    """Refuse a ``--patient-id`` regex that does not compile or leaves file names without a patient."""
    try:
        re.compile(regex)
    except re.error as exc:
        raise CxrganError(f"--patient-id {regex!r}: not a valid regular expression ({exc})") from None
    unmatched = [n for n, patient in zip(names, patient_ids_from_names(names, regex)) if not patient]
    if unmatched:
        raise CxrganError(f"--patient-id {regex!r}: {len(unmatched)} of {len(names)} file names give no patient id "
                          f"(e.g. {', '.join(unmatched[:3])}); every image needs one")


def patient_ids_from_csv(csv: str | os.PathLike, root: Path, paths: Sequence[Path]) -> list[str]:
    """Patient id per image from a CSV mapping files to patients (``--patient-csv``).

    The CSV has a header with a file column (``filename``, ``file``, ``path`` or ``image``) holding each image's
    name or its path relative to ``root``, and a patient column (``patient_id`` or ``patient``). Every image must
    be listed, with a non-empty patient."""
    csv = Path(csv)
    if not csv.is_file():
        raise CxrganError(f"--patient-csv {csv}: {'is a folder, not a file' if csv.is_dir() else 'no such file'}")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CxrganError(f"--patient-csv {csv}: not a readable CSV table ({exc})") from None
    columns = {c.strip().lower(): c for c in table.columns}
    file_column = next((columns[c] for c in ("filename", "file", "path", "image") if c in columns), None)
    patient_column = next((columns[c] for c in ("patient_id", "patient") if c in columns), None)
    if file_column is None or patient_column is None:
        raise CxrganError(f"--patient-csv {csv}: needs a file column (filename, file, path or image) and a patient "
                          f"column (patient_id or patient); found {list(table.columns)}")
    mapping = dict(zip(table[file_column].str.strip(), table[patient_column].str.strip()))
    ids = [mapping.get(p.relative_to(root).as_posix(), mapping.get(p.name, "")) for p in paths]
    missing = [p.name for p, patient in zip(paths, ids) if not patient]
    if missing:
        raise CxrganError(f"--patient-csv {csv}: {len(missing)} of {len(paths)} images have no patient there (e.g. "
                          f"{', '.join(missing[:3])}); every image needs one")
    return ids


def suggest_patient_regex(names: Sequence[str]) -> tuple[str, str] | None:
    """(convention, regex) of the first ``PATIENT_CONVENTIONS`` entry every file name follows, else None."""
    for convention, regex in PATIENT_CONVENTIONS.items():
        if names and all(patient_ids_from_names(names, regex)):
            return convention, regex
    return None


def load_image_folder(
    root: str | os.PathLike,
    size: int | None = 64,
    classes: Sequence[str] | None = None,
    patient_regex: str | None = None,
    workers: int = 1,
    progress: bool = False,
    patient_csv: str | os.PathLike | None = None,
) -> CXRDataset:
    """Load an image-folder dataset, centre-cropped and area-resized to ``size``.

    Two classes give a binary task (one label column named after the second class, ``class_names`` both);
    more classes give one-hot columns, one per class. Class names are lower-cased (NORMAL -> normal), the
    file path relative to ``root`` is kept in ``meta["filename"]``.

    Args:
        root: the dataset folder (see :func:`list_image_folder`).
        size: output side in pixels; None keeps the native size, which must then be square and equal.
        classes: class folder names in label order, e.g. ("NORMAL", "PNEUMONIA"); default sorted names.
        patient_regex: regex on the file name giving the patient id (first group if any), e.g.
            :data:`KERMANY_PATIENT_REGEX`; None leaves patient ids empty (rows count as separate patients).
        workers: decoding threads.
        progress: show a progress bar.
        patient_csv: a CSV mapping file names to patients (see :func:`patient_ids_from_csv`); overrides the regex.
    """
    listing = list_image_folder(root, classes)
    root = Path(root)
    patients = (patient_ids_from_csv(patient_csv, root, listing.paths) if patient_csv is not None
                else patient_ids_from_names([p.name for p in listing.paths], patient_regex))  # checked before decoding
    images = load_many(listing.paths, size, workers=workers, progress=progress, desc=f"decoding {root.name}")
    meta = pd.DataFrame(
        {
            "patient_id": patients,
            "split": listing.splits,
            "source": root.name,
            "filename": [p.relative_to(root).as_posix() for p in listing.paths],
            "class_name": [listing.classes[i] for i in listing.class_index],
        }
    )
    if find_split_dirs(root):  # split folders number patients on their own (Kermany's person1, person2, ...)
        meta["official_split"] = listing.splits
        meta = namespace_patients(meta)
    index = np.asarray(listing.class_index)
    names = tuple(c.lower() for c in listing.classes)
    if len(names) == 2:
        return CXRDataset(images, index.astype(np.float32)[:, None], (names[1],), meta, class_names=names)
    return CXRDataset(images, np.eye(len(names), dtype=np.float32)[index], names, meta)
