"""Uncertainty policies that turn raw CheXpert-style labels (1, 0, -1, blank) into 0 / 1 / NaN, and the check that an
evaluation set holds no unknown label.

Irvin et al. 2019, "CheXpert: A Large Chest Radiograph Dataset with Uncertainty Labels and Expert Comparison":
U-Zeros maps uncertain (-1) to negative, U-Ones to positive, U-Ignore leaves it unknown (masked in the loss).
"""

from __future__ import annotations

import numpy as np

from cxrgan.errors import CxrganError

UNCERTAINTY_POLICIES = ("zeros", "ones", "ignore")
BLANK_POLICIES = ("zero", "ignore")


def apply_uncertainty_policy(raw: np.ndarray, policy: str = "ignore", blank: str = "zero") -> np.ndarray:
    """Map raw labels to float32 0 / 1 / NaN.

    Args:
        raw: array of 1, 0, -1 (uncertain) and NaN (blank: the report did not mention the finding).
        policy: "zeros" (U-Zeros), "ones" (U-Ones) or "ignore" (U-Ignore: NaN, masked in the loss).
        blank: "zero" treats an unmentioned finding as negative (the usual CheXpert practice),
            "ignore" keeps it unknown.
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise CxrganError(f"unknown uncertainty policy {policy!r}; expected one of {list(UNCERTAINTY_POLICIES)}")
    if blank not in BLANK_POLICIES:
        raise CxrganError(f"unknown blank policy {blank!r}; expected one of {list(BLANK_POLICIES)}")
    raw = np.asarray(raw, dtype=np.float32)
    known = raw[~np.isnan(raw)]
    bad = np.setdiff1d(np.unique(known), [-1.0, 0.0, 1.0])
    if bad.size:
        raise CxrganError(f"label value {bad[0]:g} is not one of 1, 0, -1 or blank")
    out = raw.copy()
    out[raw == -1] = {"zeros": 0.0, "ones": 1.0, "ignore": np.nan}[policy]
    if blank == "zero":
        out[np.isnan(raw)] = 0.0
    return out


def policy_on_training_rows(labels: np.ndarray, split: np.ndarray, policy: str) -> np.ndarray:
    """Labels with ``policy`` applied to the training rows only.

    ``labels`` are U-Ignore labels (uncertain = NaN, blank already resolved), ``split`` the row splits. Training
    rows get the policy (U-Zeros / U-Ones / U-Ignore); validation and test rows keep uncertain labels unknown, so
    models trained under different policies are scored against one ground truth, the labels the reports state.
    """
    if policy not in UNCERTAINTY_POLICIES:
        raise CxrganError(f"unknown uncertainty policy {policy!r}; expected one of {list(UNCERTAINTY_POLICIES)}")
    out = np.array(labels, dtype=np.float32, copy=True)
    train = (np.asarray(split) == "train")[:, None] & np.isnan(out)
    out[train] = {"zeros": 0.0, "ones": 1.0, "ignore": np.nan}[policy]
    return out


def check_known_labels(dataset, where: str) -> None:
    """Refuse a binary evaluation set (validation, test, an external site) with unknown labels (-1 or NaN in the
    file): its AUC would silently drop or mis-score rows, so the file is named with the count before anything trains."""
    unknown = int(np.isnan(dataset.labels[:, 0]).sum())
    if unknown:
        raise CxrganError(f"{where} has {unknown} row(s) with an unknown label (-1 or NaN); evaluation rows need a "
                          "known label: label them or leave them out of the file")
