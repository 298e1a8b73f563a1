"""Leakage guards: no patient in two splits, per-folder patient numbering namespaced, no evaluation image reused.

A patient whose images sit in both the training and the test split lets a model score well by recognising the
patient; and an image of the validation or test split that also feeds a generator leaks the test set into
training, also as a mirrored, re-encoded or resized copy (:mod:`cxrgan.data.near_duplicates`). Both are checked on every load, with an explicit override for the first (``--allow-patient-overlap``).
"""

from __future__ import annotations

import sys
from typing import Mapping

import numpy as np
import pandas as pd

from cxrgan.data.near_duplicates import check_no_near_duplicates, image_hashes  # noqa: F401  (re-exported)
from cxrgan.errors import CxrganError

SHOWN_IDS = 5  # patient ids named in an error message


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
