"""Seeded, patient-level, stratified splits, nested label fractions and induced class imbalance.

Rows that share a non-empty ``patient_id`` form one group and never cross a split or a subset boundary; rows
without a patient id are groups of one. Stratification works on groups: each group gets one stratum key,

* binary task: the group's majority class (ties count as positive);
* multi-label (or one-hot multi-class): the group's *rarest* positive label in the whole dataset, or "none".
  Keying on the rarest label is the idea of iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011,
  "On the stratification of multi-label data", ECML PKDD): rare labels are the ones a random split loses.

Groups are then put in one "stratified order": within a stratum they are shuffled, and each group gets as
sort key the position of (about) its middle row among the stratum's rows, as a share of those rows (a random
point in the middle half of the group, to break ties). Every prefix of that order holds about the same share
of every stratum's rows, so contiguous cuts give stratified splits and prefixes give *nested* subsets.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from cxrgan.data.dataset import SPLITS, CXRDataset
from cxrgan.errors import CxrganError

RandomState = int | np.random.Generator | None


def patient_groups(dataset: CXRDataset) -> np.ndarray:
    """(N,) int group id per row: one id per non-empty patient id, a fresh id for each row without one."""
    patients = dataset.meta["patient_id"].astype(str).to_numpy()
    codes, _ = pd.factorize(patients)
    missing = patients == ""
    codes = codes.astype(np.int64)
    codes[missing] = codes.max(initial=-1) + 1 + np.arange(int(missing.sum()))
    return pd.factorize(codes)[0].astype(np.int64)


def stratified_group_order(dataset: CXRDataset, random_state: RandomState = None, by_split: bool = False) -> np.ndarray:
    """Row indices in the stratified group order described in the module docstring.

    Args:
        dataset: rows to order.
        random_state: seed or generator.
        by_split: include the split in the stratum key, so prefixes shrink every split proportionally.
    """
    rng = np.random.default_rng(random_state)
    groups = patient_groups(dataset)
    strata = _group_strata(dataset, groups, by_split)
    n_groups = len(strata)
    sizes = np.bincount(groups, minlength=n_groups).astype(np.float64)
    keys = np.empty(n_groups)
    for stratum in np.unique(strata):
        members = np.flatnonzero(strata == stratum)
        members = members[rng.permutation(len(members))]
        # position of each group's row midpoint within its stratum, so strata advance at the same *row* rate
        before = np.cumsum(sizes[members]) - sizes[members]
        keys[members] = (before + sizes[members] * rng.uniform(0.25, 0.75, len(members))) / sizes[members].sum()
    group_rank = np.empty(n_groups, np.int64)
    group_rank[np.argsort(keys, kind="stable")] = np.arange(n_groups)
    # rows of one group stay together, in their original order
    return np.lexsort((np.arange(len(dataset)), group_rank[groups]))


def assign_splits(
    dataset: CXRDataset,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    random_state: RandomState = None,
) -> CXRDataset:
    """A copy with ``meta["split"]`` replaced by a seeded patient-level stratified train/val/test split.

    Args:
        dataset: all rows to split (existing split names are ignored).
        fractions: shares of rows for train, val and test; must sum to 1. A zero share leaves that split empty.
        random_state: seed or generator.
    """
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.shape != (3,) or (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise CxrganError(f"split fractions must be three non-negative numbers summing to 1, got {list(fractions)}")
    if len(dataset) == 0:
        raise CxrganError("cannot split an empty dataset")
    order = stratified_group_order(dataset, random_state)
    groups = patient_groups(dataset)[order]
    # a group goes to the split where the midpoint of its rows falls along the ordered rows
    starts = np.r_[0, np.flatnonzero(np.diff(groups)) + 1]
    sizes = np.diff(np.r_[starts, len(order)])
    midpoints = (starts + sizes / 2.0) / len(order)
    group_split = np.searchsorted(np.cumsum(shares)[:-1], midpoints, side="right")
    split_of_row = np.empty(len(dataset), dtype=object)
    split_of_row[order] = np.repeat(np.asarray(SPLITS, dtype=object)[group_split], sizes)
    meta = dataset.meta.copy()
    meta["split"] = split_of_row.astype(str)
    out = CXRDataset(dataset.images, dataset.labels, dataset.label_names, meta, dataset.class_names, dataset.class_weights)
    for name, share in zip(SPLITS, shares):
        if share > 0:
            _check_classes(dataset.labels[(meta["split"] == name).to_numpy()], dataset, f"split {name!r}")
    return out


def resplit_rows(
    dataset: CXRDataset,
    rows: np.ndarray,
    fractions: Sequence[float],
    random_state: RandomState = None,
) -> CXRDataset:
    """Re-split only the rows in the boolean mask ``rows`` (e.g. carve val out of train); others keep their split.

    Args:
        dataset: all rows.
        rows: (N,) boolean mask of the rows to split with :func:`assign_splits`.
        fractions: train/val/test shares for those rows.
        random_state: seed or generator.
    """
    index = np.flatnonzero(np.asarray(rows, bool))
    if not len(index):
        return dataset
    # split labels and metadata only: a zero-stride image stand-in avoids copying the images
    stand_in = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (len(index), 1, 1))
    part = CXRDataset(stand_in, dataset.labels[index], dataset.label_names, dataset.meta.iloc[index], dataset.class_names)
    meta = dataset.meta.copy()
    meta.loc[index, "split"] = assign_splits(part, fractions, random_state).meta["split"].to_numpy()
    return CXRDataset(dataset.images, dataset.labels, dataset.label_names, meta, dataset.class_names, dataset.class_weights)


def nested_fractions(
    dataset: CXRDataset,
    fractions: Sequence[float] = (0.01, 0.1, 0.5, 1.0),
    random_state: RandomState = None,
) -> dict[float, CXRDataset]:
    """Nested stratified patient-level subsets: every smaller subset lies inside every larger one.

    For label-efficiency curves (train on 1 %, 10 %, 50 %, 100 % of the training split). The stratum key
    includes the split, so passing several splits shrinks each of them by the same share.

    Args:
        dataset: the rows to subsample (usually the training split).
        fractions: shares of rows in (0, 1], any order.
        random_state: seed or generator.

    Returns:
        ``{fraction: subset}``; subset rows keep the dataset's original order.
    """
    bad = [f for f in fractions if not 0 < f <= 1]
    if bad or not fractions:
        raise CxrganError(f"fractions must lie in (0, 1], got {list(fractions)}")
    order = stratified_group_order(dataset, random_state, by_split=True)
    groups = patient_groups(dataset)[order]
    group_end = np.r_[np.flatnonzero(np.diff(groups)) + 1, len(order)]  # exclusive end of each group
    subsets = {}
    for fraction in fractions:
        target = max(1, int(round(fraction * len(dataset))))
        # the shortest whole-group prefix holding at least ``target`` rows
        end = group_end[np.searchsorted(group_end, target)]
        subset = dataset.subset(np.sort(order[:end]))
        _check_classes(subset.labels, dataset, f"the {fraction:g} fraction")
        subsets[float(fraction)] = subset
    return subsets


def fraction_subset(dataset: CXRDataset, fraction: float, random_state: RandomState = None) -> CXRDataset:
    """One stratified patient-level subset holding about ``fraction`` of the rows (see :func:`nested_fractions`)."""
    return nested_fractions(dataset, (fraction,), random_state)[float(fraction)]


def nested_class_subsets(
    dataset: CXRDataset,
    counts: Sequence[int],
    class_value: int = 1,
    random_state: RandomState = None,
) -> dict[int, CXRDataset]:
    """Nested patient-grouped subsets of one class of a binary dataset, every row of the other class kept.

    For maps over a class's size (``cxrgan recipe helps-map``): the subset of ``count`` rows of class
    ``class_value`` lies inside the subset of every larger count, and a patient's rows of that class are either
    all in a subset or all out. Patients are visited in one seeded random order; the smallest count takes whole
    patients first-fit in that order (a patient whose rows would overshoot is passed over) until it holds exactly
    ``count`` rows, and each larger count adds patients to the previous subset the same way. When no remaining
    patient fills the gap exactly, the one that overshoots least is added, so a subset then holds a few rows more
    than asked (never with single-row patients left, as in every real file here). The subsets depend on the set
    of counts asked for, the order on ``random_state`` alone.

    Args:
        dataset: a binary dataset (usually the training split, with the other class already fixed).
        counts: rows of class ``class_value`` per subset, each in 1..(rows of that class); any order.
        class_value: 0 or 1, the class to subsample.
        random_state: seed or generator of the patients' order.

    Returns:
        ``{count: subset}``; subset rows keep the dataset's original order.
    """
    if class_value not in (0, 1):
        raise CxrganError(f"class_value must be 0 or 1, got {class_value}")
    y = dataset.binary_targets()
    rows = np.flatnonzero(y == class_value)
    name = (dataset.class_names or ("0", "1"))[class_value]
    for count in counts:
        if not 1 <= int(count) <= len(rows):
            raise CxrganError(f"a subset of {count} {name!r} rows is impossible: the data hold {len(rows)} "
                              f"{name!r} rows (counts must lie in 1..{len(rows)})")
    groups = patient_groups(dataset)[rows]
    ids, sizes = np.unique(groups, return_counts=True)
    order = np.random.default_rng(random_state).permutation(len(ids))
    taken = np.zeros(len(ids), bool)
    total, subsets = 0, {}
    for count in sorted({int(c) for c in counts}):
        for g in order:  # first fit: whole patients in the seeded order, passing over those that would overshoot
            if total == count:
                break
            if not taken[g] and total + sizes[g] <= count:
                taken[g], total = True, total + sizes[g]
        if total < count:  # no patient fits the gap: the one that overshoots least (first in the order on ties)
            left = [g for g in order if not taken[g]]
            g = left[int(np.argmin(sizes[left]))]
            taken[g], total = True, total + sizes[g]
        keep = np.ones(len(dataset), bool)
        keep[rows[~np.isin(groups, ids[taken])]] = False
        subsets[count] = dataset.subset(keep)
    return {int(count): subsets[int(count)] for count in counts}


def induce_imbalance(
    dataset: CXRDataset,
    target_counts: Mapping[int | str, int] | float,
    random_state: RandomState = None,
) -> CXRDataset:
    """Subsample classes of a binary dataset to fixed counts or to a majority : minority ratio.

    Rows are dropped, never added; which rows stay is drawn with ``random_state``; the kept rows keep their
    order. Patient grouping does not matter here because dropping rows cannot leak between splits.

    Args:
        dataset: a binary dataset (usually the training split).
        target_counts: ``{class: count}`` with class 0 / 1 or a class name, e.g. ``{0: 1460}`` keeps 1460
            normals and all pneumonia rows; or a float ratio r >= 1 such that afterwards
            n_majority = r * n_minority, reached by shrinking whichever class is in excess.
        random_state: seed or generator.
    """
    rng = np.random.default_rng(random_state)
    y = dataset.binary_targets()
    names = dataset.class_names or ("0", "1")
    available = {c: int((y == c).sum()) for c in (0, 1)}
    if isinstance(target_counts, Mapping):
        wanted = {_class_index(key, names): int(count) for key, count in target_counts.items()}
    else:
        ratio = float(target_counts)
        if not ratio >= 1:
            raise CxrganError(f"imbalance ratio must be >= 1 (majority : minority), got {target_counts}")
        major = 0 if available[0] >= available[1] else 1
        minor = 1 - major
        if available[major] >= ratio * available[minor]:
            wanted = {major: int(round(ratio * available[minor]))}
        else:
            wanted = {minor: int(round(available[major] / ratio))}
    keep = np.ones(len(y), bool)
    for cls, count in wanted.items():
        if count < 1:
            raise CxrganError(f"class {names[cls]!r} would keep {count} rows; it needs at least 1")
        if count > available[cls]:
            raise CxrganError(
                f"asked for {count} {names[cls]!r} rows but only {available[cls]} exist; "
                "imbalance can only be induced by removing rows"
            )
        rows = np.flatnonzero(y == cls)
        keep[rng.choice(rows, size=len(rows) - count, replace=False)] = False
    return dataset.subset(keep)


def _class_index(key: int | str, names: Sequence[str]) -> int:
    if isinstance(key, str) and not key.isdigit():
        if key not in names:
            raise CxrganError(f"unknown class {key!r}; expected one of {list(names)}")
        return list(names).index(key)
    if int(key) not in (0, 1):
        raise CxrganError(f"class must be 0 or 1 (or a class name), got {key!r}")
    return int(key)


def _group_strata(dataset: CXRDataset, groups: np.ndarray, by_split: bool) -> np.ndarray:
    """(n_groups,) integer stratum per group (see the module docstring)."""
    n_groups = int(groups.max(initial=-1)) + 1
    labels = dataset.labels
    positive = np.nan_to_num(labels, nan=0.0) == 1
    known = ~np.isnan(labels)
    if dataset.is_binary:
        pos = np.bincount(groups, positive[:, 0], minlength=n_groups)
        total = np.bincount(groups, known[:, 0], minlength=n_groups)
        strata = np.where(total == 0, 2, (pos * 2 >= total).astype(np.int64))
    else:
        label_rank = np.argsort(np.argsort(positive.sum(axis=0), kind="stable"), kind="stable")
        rank = np.where(positive, label_rank[None, :], dataset.n_labels)  # rarest label has rank 0
        strata = np.full(n_groups, dataset.n_labels, np.int64)
        np.minimum.at(strata, groups, rank.min(axis=1))
    if by_split:
        split_code = pd.Categorical(dataset.meta["split"], categories=SPLITS).codes.astype(np.int64)
        first_split = np.zeros(n_groups, np.int64)
        first_split[groups[::-1]] = split_code[::-1]  # the split of each group's first row
        strata = strata * len(SPLITS) + first_split
    return strata


def _check_classes(subset_labels: np.ndarray, full: CXRDataset, where: str) -> None:
    """A binary subset must still hold both classes the full set holds; otherwise name the missing class."""
    if len(subset_labels) == 0:
        raise CxrganError(f"{where} is empty; use more data or other fractions")
    if not full.is_binary:
        return
    names = full.class_names or ("0", "1")
    for cls in (0, 1):
        present_before = np.nansum(full.labels[:, 0] == cls)
        if present_before and not np.nansum(subset_labels[:, 0] == cls):
            raise CxrganError(
                f"{where} has no {names[cls]!r} rows (the full set has {int(present_before)}); "
                "a classifier cannot be trained or evaluated on one class; use more data or other fractions"
            )
