"""The audit of a synthetic file made elsewhere (``cxrgan audit --images FILE --data DATA``, and every
``synthetic:<stem>`` row of a comparison): the audit every generator cxrgan trains gets, plus memorisation against
the training rows of each image's own class and near-duplicates of real images.

On top of :func:`cxrgan.evaluate.audit.audit_images` (Fréchet distance, KID, precision / recall / density /
coverage and the two-sample AUC beside the real-vs-real reference; memorisation; TSTR for labelled files):

* memorisation by class: each synthetic image's distance (classifier feature space) to its nearest training row of
  the *same* class, against the same distances of the real test rows of that class; the fraction at or below the
  test rows' ``percentile``-th percentile is "memorised" (about ``percentile`` / 100 for a generator that does not
  copy), with distance quantiles of both (multi-label files: all rows, as there are no classes);
* near-duplicates (:mod:`cxrgan.data.near_duplicates`: exact, mirrored, shifted, re-encoded or resized copies) of
  the training rows (memorised copies) and of the validation, test and external-site images (leakage: a run
  refuses such a file before training; the audit counts them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from torch import nn

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.near_duplicates import fingerprints, match
from cxrgan.data.members import read_members
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import (AuditConfig, audit_images, audit_table, extract_features, memorisation,
                                   train_feature_model)
from cxrgan.evaluate.audit_metrics import nearest_neighbours
from cxrgan.io import write_json, write_text

QUANTILES = (0.01, 0.05, 0.25, 0.5)  # nearest-neighbour distance quantiles reported per class


def class_groups(dataset: CXRDataset) -> dict[str, np.ndarray]:
    """Row masks by class of a binary task (unknown labels in none); one group of every row for multi-label data."""
    if not dataset.is_binary:
        return {"all rows": np.ones(len(dataset), bool)}
    names = dataset.class_names or ("0", "1")
    return {names[c]: dataset.labels[:, 0] == c for c in (0, 1)}


def memorisation_by_class(features: dict[str, np.ndarray], synthetic: CXRDataset, train: CXRDataset,
                          test: CXRDataset, percentile: float) -> dict[str, dict[str, Any]]:
    """Per class of the synthetic images: memorised fraction and distance quantiles against that class's training
    rows, with the real test rows of the class as the reference (``features``: "synthetic", "train", "test")."""
    out = {}
    groups = {name: (mask, class_groups(train)[name], class_groups(test)[name])
              for name, mask in class_groups(synthetic).items()}
    for name, (mine, train_rows, test_rows) in groups.items():
        if not mine.any():
            continue
        if train_rows.sum() < 1 or test_rows.sum() < 2:
            out[name] = {"n_synthetic": int(mine.sum()), "skipped": "too few real training or test rows of the class"}
            continue
        _, synthetic_to_train = nearest_neighbours(features["synthetic"][mine], features["train"][train_rows])
        _, test_to_train = nearest_neighbours(features["test"][test_rows], features["train"][train_rows])
        summary = memorisation(synthetic_to_train, test_to_train, percentile)
        out[name] = {"n_synthetic": int(mine.sum()), "n_train": int(train_rows.sum()), **summary}
    return out


def near_duplicate_counts(synthetic: np.ndarray, references: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per reference set: how many synthetic images are near-duplicates of its images, and the first of them."""
    prints = fingerprints(synthetic)
    out = {}
    for name, images in references.items():
        found = match(prints, images)
        first = found.first()
        out[name] = {"count": found.count, "fraction": found.count / max(len(prints), 1),
                     "first": None if first < 0 else {"synthetic": first, "real": int(found.index[first])}}
    return out


def audit_synthetic(synthetic: CXRDataset, train: CXRDataset, val: CXRDataset, test: CXRDataset,
                    sites: Mapping[str, CXRDataset] | None = None, out_dir: str | Path | None = None,
                    config: AuditConfig = AuditConfig(), feature_model: nn.Module | None = None) -> dict:
    """Audit a synthetic file's rows (``cxrgan.data.synthetic.load_synthetic``) against the real splits.

    Args:
        synthetic: the file's images and labels, at the data's size.
        train: the real training rows (the feature model, memorisation and near-copies compare with them).
        val: real validation rows (early stopping; near-duplicates).
        test: real test rows (the reference of every distribution metric; near-duplicates).
        sites: external sites by name (near-duplicates).
        out_dir: where audit.json, audit.csv and the PNGs of ``audit_images`` go (None: nothing written).
        config: audit settings.
        feature_model: a feature model trained on ``train`` (default: train one).

    Returns the ``audit_images`` result with ``memorisation_by_class``, ``near_duplicates`` and their table rows
    (``metrics``: ``memorised_same_class``, ``nn_distance_same_class``, ``near_copies_train``).
    """
    if len(synthetic) == 0:
        raise CxrganError("the synthetic file holds no images")
    model = feature_model if feature_model is not None else train_feature_model(train, val, config)
    result = audit_images(synthetic.images, synthetic.labels, train, val, test, out_dir, config, model)
    features = {name: extract_features(model, rows.images)
                for name, rows in (("synthetic", synthetic), ("train", train), ("test", test))}
    by_class = memorisation_by_class(features, synthetic, train, test, config.percentile)
    counted = [v for v in by_class.values() if "fraction_below" in v]
    if counted:
        weights = np.array([v["n_synthetic"] for v in counted], float)
        result["metrics"]["memorised_same_class"] = {
            "synthetic": float(np.average([v["fraction_below"] for v in counted], weights=weights)),
            "reference": float(np.average([v["reference_fraction_below"] for v in counted], weights=weights))}
        medians = {key: [v[f"{key}_to_train_quantiles"]["0.5"] for v in counted] for key in ("synthetic", "test")}
        result["metrics"]["nn_distance_same_class"] = {
            "synthetic": float(np.average(medians["synthetic"], weights=weights)),
            "reference": float(np.average(medians["test"], weights=weights))}
    references = {"train": train.images, "val": val.images, "test": test.images,
                  **{f"site {name}": site.images for name, site in (sites or {}).items()}}
    near = near_duplicate_counts(synthetic.images, references)
    reference_copies = match(test.images, train.images).count / len(test)  # real test rows that copy training rows
    result["metrics"]["near_copies_train"] = {"synthetic": near["train"]["fraction"], "reference": reference_copies}
    result["memorisation_by_class"], result["near_duplicates"] = by_class, near
    if out_dir is not None:
        write_json(Path(out_dir) / "audit.json", result)
        write_text(Path(out_dir) / "audit.csv", audit_table(result).to_csv(index=False))
    return result


def summary(result: dict) -> dict:
    """The audit without its per-image lists (distances, nearest rows): what ``--json`` prints."""
    out = {k: v for k, v in result.items() if k != "nearest_train_index"}
    out["memorisation"] = {space: {k: v for k, v in values.items() if k != "synthetic_to_train"}
                           for space, values in result.get("memorisation", {}).items()}
    return json.loads(json.dumps(out, default=float))


def leakage_table(result: dict) -> pd.DataFrame:
    """Near-duplicates of each real set and the same-class memorisation per class, as rows to print."""
    rows = [{"real images": name, "near-duplicates": f"{v['count']} of {result['n_synthetic']}",
             "first (synthetic ~ real row)": "" if v["first"] is None else
             f"{v['first']['synthetic']} ~ {v['first']['real']}"} for name, v in result["near_duplicates"].items()]
    return pd.DataFrame(rows)


def file_target(path: str | Path) -> str:
    """The task a synthetic file is audited on: "findings" when its .npz holds findings vectors, else "labels"."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        try:
            return "findings" if "findings" in read_members(path) else "labels"  # headers only
        except CxrganError as exc:
            raise CxrganError(f"--images {exc}") from None
    return "labels"


def audit_file(images: str | Path, data: str | Path, out_dir: str | Path | None = None,
               config: AuditConfig = AuditConfig()) -> dict:
    """``cxrgan audit --images FILE --data DATA``: a synthetic file (``cxrgan.data.synthetic``) audited against the
    real splits of ``data`` (findings files on the multi-label task, the others on the binary one)."""
    from cxrgan.data.npz import load_npz
    from cxrgan.data.synthetic import load_synthetic

    dataset = load_npz(data, target=file_target(images))
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    result = audit_synthetic(load_synthetic(images, train), train, val, test, out_dir=out_dir, config=config)
    result["synthetic_file"], result["data_path"] = str(images), str(data)
    if out_dir is not None:
        write_json(Path(out_dir) / "audit.json", result)
    return result
