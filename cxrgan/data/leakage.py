"""Leakage guards: no patient in two splits, per-folder patient numbering namespaced, no evaluation image reused,
and no split made per image while patients are unknown.

A patient whose images sit in both the training and the test split lets a model score well by recognising the
patient; and an image of the validation or test split that also feeds a generator leaks the test set into
training, also as a mirrored, re-encoded or resized copy (:mod:`cxrgan.data.near_duplicates`). Both are checked on
every load, with an explicit override for the first (``--allow-patient-overlap``). A split that ``cxrgan data
prepare`` made per image, without patient ids, cannot be checked at all: the file records how its split was made
(:data:`SPLIT_METHODS`), and experiments refuse a per-image split unless told (``--allow-unknown-patients``).
"""

from __future__ import annotations

import sys
from typing import Mapping

import numpy as np
import pandas as pd

from cxrgan.data.near_duplicates import check_no_near_duplicates, image_hashes  # noqa: F401  (re-exported)
from cxrgan.errors import CxrganError

SHOWN_IDS = 5  # patient ids named in an error message

# How a compact file's split was made, stored as its 0-d text array ``split_method`` (files of earlier versions have
# none; ``describe_split`` then infers what it can).
SPLIT_METHODS = {
    "official": "official folders (the source's own splits)",
    "patient": "patient-grouped (each patient's images in one split)",
    "image": "per image, patients unknown (one patient's images may sit in several splits)",
}


def describe_split(split_method: str | None, meta: pd.DataFrame) -> str:
    """How a file's split was made, for ``cxrgan data info``: as recorded, else inferred from its patient ids."""
    if split_method is not None:
        return SPLIT_METHODS[split_method]
    ids = meta["patient_id"].astype(str) if "patient_id" in meta else pd.Series([""] * len(meta))
    if len(ids) and (ids != "").all():
        if "official_split" in meta and (meta["official_split"].astype(str) == meta["split"].astype(str)).all():
            return SPLIT_METHODS["official"] + "; inferred, the file does not record it"
        return "patient ids known and checked split-disjoint; how it was split is not recorded"
    which = "no row carries" if (ids == "").all() else "some rows carry no"
    return f"not recorded (a file of an earlier version), and {which} patient id: patients cannot be checked"


def check_split_method(split_method: str | None, source: str, allow: bool = False, hint: str = "") -> None:
    """Refuse a file whose split was made per image with unknown patients, unless ``allow``
    (``--allow-unknown-patients``); files that do not record their split method pass. ``hint`` (e.g. the
    ``--patient-id`` its file names fit) is added to the message."""
    if split_method == "image" and not allow:
        raise CxrganError(f"{source}: its split was made per image with unknown patients (cxrgan data prepare without "
                          "--patient-id or --patient-csv), so one patient's images may sit in several splits; prepare "
                          f"it again with patient ids{hint}, or pass --allow-unknown-patients to accept this")


def namespace_patients(meta: pd.DataFrame) -> pd.DataFrame:
    """Prefix patient ids with their ``official_split`` folder, so per-folder numbering stays unique.

    Kermany's official train and test folders both number children ``person1``, ``person2``, ... for different
    children (see the kermany_pneumonia README); ``train/person1`` and ``test/person1`` are two patients. Ids that
    already carry the prefix (a file written after loading) are left as they are.
    """
    if "official_split" not in meta or "patient_id" not in meta:
        return meta
    ids = meta["patient_id"].astype(str)
    prefix = meta["official_split"].astype(str) + "/"
    keep = (ids == "") | (meta["official_split"].astype(str) == "") | np.array(
        [i.startswith(p) for i, p in zip(ids, prefix)], dtype=bool)
    meta = meta.copy()
    meta["patient_id"] = np.where(keep, ids, prefix + ids)
    return meta


def patients_in_several_splits(meta: pd.DataFrame) -> pd.Series:
    """Patient id -> sorted splits, for every non-empty patient id found in more than one split."""
    if "patient_id" not in meta:
        return pd.Series(dtype=object)
    known = meta[meta["patient_id"].astype(str) != ""]
    splits = known.groupby(known["patient_id"].astype(str))["split"].agg(lambda s: tuple(sorted(set(s))))
    return splits[splits.map(len) > 1]


def check_patient_disjoint(meta: pd.DataFrame, source: str = "the data", allow: bool = False) -> int:
    """Refuse (or, with ``allow``, count and report) patients whose images sit in more than one split.

    Args:
        meta: row metadata with ``patient_id`` and ``split``.
        source: the file or folder, for the message.
        allow: accept the overlap (``--allow-patient-overlap``); the count is printed to stderr.

    Returns the number of patients in several splits.
    """
    crossing = patients_in_several_splits(meta)
    if len(crossing) and not allow:
        shown = "; ".join(f"{patient} in {'/'.join(splits)}" for patient, splits in crossing.head(SHOWN_IDS).items())
        more = f" and {len(crossing) - SHOWN_IDS} more" if len(crossing) > SHOWN_IDS else ""
        raise CxrganError(f"{source}: {len(crossing)} patient(s) appear in more than one split ({shown}{more}); "
                          "splits must be patient-level (pass --allow-patient-overlap to accept this)")
    if len(crossing):
        print(f"cxrgan: warning: {source}: {len(crossing)} patient(s) appear in more than one split "
              "(accepted by --allow-patient-overlap)", file=sys.stderr)
    return len(crossing)


def check_no_shared_images(images: np.ndarray, evaluation: Mapping[str, np.ndarray], what: str, against: str) -> None:
    """Refuse training images (``what``) that copy an image of an evaluation split of ``against``: pixel-identical,
    mirrored, shifted in intensity, re-encoded or resized (:mod:`cxrgan.data.near_duplicates`)."""
    check_no_near_duplicates(images, {f"the {split} split of {against}": split_images
                                      for split, split_images in evaluation.items()},
                             what, "data that trains a model must not contain evaluation images")
