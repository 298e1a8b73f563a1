"""External sites: a second hospital's labelled file, scored whole, checked to share labels and nothing else.

A model that only works on the hospital it was trained on helps nobody; an external site tells. Every row of the
file is used (its own splits do not matter: nothing trains on it), its class names must equal the training data's
or be mapped explicitly, and it must share no image (nor a mirrored, re-encoded or shifted copy of one:
:mod:`cxrgan.data.near_duplicates`) and no patient id with the data the model learns from, or it would not be
external.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.labels import check_known_labels
from cxrgan.data.near_duplicates import check_no_near_duplicates
from cxrgan.data.npz import load_npz
from cxrgan.errors import CxrganError

RESERVED_NAMES = ("train", "val", "test")
AGE_BANDS = ((0, 18, "<18"), (18, 40, "18-39"), (40, 60, "40-59"), (60, 200, ">=60"))


def parse_label_map(text: str) -> tuple[tuple[str, str], ...]:
    """``"abnormal=pneumonia,normal=normal"`` -> (("abnormal", "pneumonia"), ("normal", "normal"))."""
    pairs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part.count("=") != 1 or not all(part.split("=")):
            raise CxrganError(f"--external-labels {text!r}: expected EXTERNAL=OURS pairs such as abnormal=pneumonia")
        old, new = part.split("=")
        pairs.append((old.strip(), new.strip()))
    return tuple(pairs)


def site_name(path: str | Path) -> str:
    """The column name of an external site: its file stem (``nih_pneumonia_64``)."""
    return Path(path).stem


def load_external(path: str | Path, like: CXRDataset, label_map: Sequence[tuple[str, str]] = (),
                  reference: CXRDataset | None = None, reference_name: str = "") -> CXRDataset:
    """Every row of the binary file ``path`` (each with a known label) as an external test set for a model trained on ``like``.

    Args:
        path: compact binary .npz of the external site.
        like: the training data (its class names and image size are the contract).
        label_map: (external class name, our class name) pairs; names not listed must already agree.
        reference: the whole data file the models learn from; the site may share no image or patient with it.
        reference_name: that file's name, for messages.

    Returns the site's rows, marked ``split == "test"``, with ``like``'s label and class names.
    """
    path = Path(path)
    if site_name(path) in RESERVED_NAMES:
        raise CxrganError(f"--external {path}: a site may not be named {site_name(path)!r}; rename the file")
    site = load_npz(path, target="labels")
    if not site.is_binary or not like.is_binary:
        raise CxrganError(f"--external {path}: external sites are binary tasks; this file has {list(site.label_names)}")
    mapping = dict(label_map)
    names = tuple(mapping.get(n, n) for n in (site.class_names or ("0", "1")))
    if names != like.class_names:
        raise CxrganError(f"--external {path}: its classes {list(site.class_names)} (mapped: {list(names)}) differ from "
                          f"the training data's {list(like.class_names)}; map them with --external-labels, e.g. "
                          f"{site.class_names[1]}={like.class_names[1]}")
    if site.images.shape[1:] != like.images.shape[1:]:
        raise CxrganError(f"--external {path}: images are {site.images.shape[1]}x{site.images.shape[2]} px, the training "
                          f"data's {like.images.shape[1]}x{like.images.shape[2]}; use the file of the same size")
    if site.synthetic.any():
        raise CxrganError(f"--external {path}: holds {int(site.synthetic.sum())} synthetic rows; sites are real images")
    check_known_labels(site, f"--external {path}")
    if len(np.unique(site.labels[:, 0])) < 2:
        raise CxrganError(f"--external {path}: holds one class only; an AUC needs both")
    if reference is not None:
        check_disjoint_site(site, reference, str(path), reference_name)
    meta = site.meta.assign(split="test", source=site_name(path))
    return dataclasses.replace(site, label_names=like.label_names, class_names=like.class_names, meta=meta)


def check_disjoint_site(site: CXRDataset, reference: CXRDataset, site_path: str, reference_name: str) -> None:
    """Refuse a site sharing images (also mirrored, re-encoded or shifted copies) or patient ids with the data the
    models learn from."""
    check_no_near_duplicates(site.images, {reference_name: reference.images}, f"--external {site_path}",
                             "an external site must not contain the training data's images")
    ours = set(reference.meta["patient_id"].astype(str)) - {""}
    theirs = set(site.meta["patient_id"].astype(str)) - {""}
    common = sorted(ours & theirs)
    if common:
        raise CxrganError(f"--external {site_path}: {len(common)} patient id(s) also in {reference_name} "
                          f"(e.g. {', '.join(common[:3])}); an external site must hold other patients")


def subgroups(site: CXRDataset) -> dict[str, np.ndarray]:
    """Boolean masks of the site's rows by view (AP / PA), age band and sex, where the file records them."""
    meta, groups = site.meta, {}
    if "view_position" in meta:
        for view in sorted(set(meta["view_position"].astype(str)) - {""}):
            groups[f"view {view}"] = (meta["view_position"].astype(str) == view).to_numpy()
    if "patient_age" in meta:
        ages = np.array([float(a) if str(a).strip().isdigit() else np.nan for a in meta["patient_age"]])
        for low, high, label in AGE_BANDS:
            mask = (ages >= low) & (ages < high)
            if mask.any():
                groups[f"age {label}"] = mask
    if "patient_gender" in meta:
        for sex in sorted(set(meta["patient_gender"].astype(str)) - {""}):
            groups[f"sex {sex}"] = (meta["patient_gender"].astype(str) == sex).to_numpy()
    return groups
