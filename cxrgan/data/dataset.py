"""The one dataset type every layer passes around: images, an N x K label array with NaN, and row-aligned metadata."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

from cxrgan.errors import CxrganError

SPLITS = ("train", "val", "test")
META_COLUMNS = ("patient_id", "split", "view", "source", "synthetic")


@dataclass(frozen=True, eq=False)
class CXRDataset:
    """Grayscale chest X-rays with explicit labels.

    A binary task (normal vs pneumonia) is the K = 1 case: one label column named after the positive class,
    and ``class_names`` gives the names of the values 0 and 1. Multi-label data (14 findings) has K columns.
    Every task trains with a (masked) binary cross-entropy per column, so one code path serves both.

    Args:
        images: (N, H, W) uint8 array; may be a read-only memory map for large sets.
        labels: (N, K) float32; 1 positive, 0 negative, NaN unknown (masked in the loss, skipped in metrics).
        label_names: the K column names (findings, or the positive class of a binary task).
        meta: N-row table with at least ``patient_id``, ``split``, ``view``, ``source``, ``synthetic``.
        class_names: for K = 1, names of the negative and positive values, e.g. ("normal", "pneumonia").
        class_weights: optional (K, 2) loss weights of negative and positive targets, set by the class-weight
            balancer instead of changing rows.
    """

    images: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    meta: pd.DataFrame
    class_names: tuple[str, str] | None = None
    class_weights: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        images, labels = self.images, np.asarray(self.labels, dtype=np.float32)
        if labels.ndim == 1:
            labels = labels[:, None]
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "label_names", tuple(str(n) for n in self.label_names))
        if images.ndim != 3 or images.dtype != np.uint8:
            raise CxrganError(f"images must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
        n = len(images)
        if labels.shape != (n, len(self.label_names)):
            raise CxrganError(
                f"labels have shape {labels.shape}, expected ({n}, {len(self.label_names)}) "
                f"for label names {list(self.label_names)}"
            )
        known = labels[~np.isnan(labels)]
        bad = known[(known != 0) & (known != 1)]
        if bad.size:
            raise CxrganError(f"labels must be 0, 1 or NaN after the uncertainty policy; found {bad[0]!r}")
        if len(self.meta) != n:
            raise CxrganError(f"metadata has {len(self.meta)} rows but there are {n} images")
        meta = self.meta.reset_index(drop=True)
        defaults = {"patient_id": "", "split": "train", "view": "", "source": "", "synthetic": False}
        for column, default in defaults.items():
            if column not in meta.columns:
                meta[column] = default
        meta["synthetic"] = meta["synthetic"].astype(bool)
        meta["split"] = meta["split"].astype(str)
        unknown_splits = sorted(set(meta["split"]) - set(SPLITS))
        if unknown_splits:
            raise CxrganError(f"unknown split name(s) {unknown_splits}; expected one of {list(SPLITS)}")
        object.__setattr__(self, "meta", meta)
        if self.class_names is not None:
            if len(self.label_names) != 1 or len(self.class_names) != 2:
                raise CxrganError("class_names is only for a binary task: two names and one label column")
            object.__setattr__(self, "class_names", tuple(str(c) for c in self.class_names))
        if self.class_weights is not None:
            weights = np.asarray(self.class_weights, dtype=np.float32)
            if weights.shape != (len(self.label_names), 2):
                raise CxrganError(f"class_weights must have shape ({len(self.label_names)}, 2), got {weights.shape}")
            object.__setattr__(self, "class_weights", weights)

    # ---- shape -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_labels(self) -> int:
        return len(self.label_names)

    @property
    def is_binary(self) -> bool:
        return self.n_labels == 1

    @property
    def image_size(self) -> int:
        """Side length in pixels (images are square)."""
        return int(self.images.shape[1])

    @property
    def synthetic(self) -> np.ndarray:
        return self.meta["synthetic"].to_numpy(bool)

    def binary_targets(self) -> np.ndarray:
        """The (N,) int class vector of a binary task; rows with an unknown label are an error."""
        if not self.is_binary:
            raise CxrganError(f"a binary task was expected, this dataset has {self.n_labels} labels")
        y = self.labels[:, 0]
        if np.isnan(y).any():
            raise CxrganError(f"{int(np.isnan(y).sum())} rows have an unknown binary label")
        return y.astype(np.int64)

    def display_names(self) -> tuple[str, ...]:
        """Class names for tables: the two classes of a binary task, else the label columns."""
        return self.class_names if self.class_names is not None else self.label_names

    # ---- selection ---------------------------------------------------------------------------------------
    def subset(self, index: np.ndarray | Sequence[int]) -> CXRDataset:
        """Rows by integer index or boolean mask, in the given order."""
        index = np.asarray(index)
        if index.dtype == bool:
            if len(index) != len(self):
                raise CxrganError(f"boolean mask of length {len(index)} for {len(self)} rows")
            index = np.flatnonzero(index)
        index = index.astype(np.int64)
        contiguous = len(index) > 0 and bool(np.all(np.diff(index) == 1))
        if isinstance(self.images, np.memmap) and contiguous:
            images = self.images[index[0]:index[-1] + 1]  # a run of rows of a mapped file stays on disk (lazy)
        else:
            images = np.ascontiguousarray(self.images[index])
        return replace(
            self,
            images=images,
            labels=self.labels[index],
            meta=self.meta.iloc[index].reset_index(drop=True),
        )

    def split(self, name: str) -> CXRDataset:
        """The rows of one split; an error if it is empty."""
        if name not in SPLITS:
            raise CxrganError(f"unknown split {name!r}; expected one of {list(SPLITS)}")
        mask = (self.meta["split"] == name).to_numpy()
        if not mask.any():
            raise CxrganError(f"the dataset has no {name!r} rows")
        return self.subset(mask)

    def with_split(self, name: str) -> CXRDataset:
        """A copy whose rows all belong to split ``name`` (used for generated or resampled rows)."""
        meta = self.meta.copy()
        meta["split"] = name
        return replace(self, meta=meta)

    @staticmethod
    def concat(parts: Sequence[CXRDataset]) -> CXRDataset:
        """Stack datasets with the same labels and image size; class weights are dropped (rows changed)."""
        if not parts:
            raise CxrganError("nothing to concatenate")
        first = parts[0]
        for part in parts[1:]:
            if part.label_names != first.label_names:
                raise CxrganError(f"label names differ: {list(first.label_names)} vs {list(part.label_names)}")
            if part.images.shape[1:] != first.images.shape[1:]:
                raise CxrganError(
                    f"image sizes differ: {first.images.shape[1:]} vs {part.images.shape[1:]}; "
                    "prepare both at the same --size"
                )
        return CXRDataset(
            images=np.concatenate([p.images for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            label_names=first.label_names,
            meta=pd.concat([p.meta for p in parts], ignore_index=True),
            class_names=first.class_names,
        )

    def with_rows_added(self, extra: CXRDataset) -> CXRDataset:
        """This dataset followed by ``extra`` (e.g. synthetic rows), keeping class names."""
        return CXRDataset.concat([self, extra])

    # ---- summaries ---------------------------------------------------------------------------------------
    def positives(self) -> np.ndarray:
        """Positive count per label column (NaN counts as not positive)."""
        return np.nansum(self.labels, axis=0).astype(np.int64)

    def counts_table(self) -> pd.DataFrame:
        """Per split: rows, patients, and positives / negatives / unknown per label column."""
        rows = []
        for split_name in [s for s in SPLITS if (self.meta["split"] == s).any()]:
            mask = (self.meta["split"] == split_name).to_numpy()
            labels = self.labels[mask]
            patients = self.meta.loc[mask, "patient_id"]
            row = {
                "split": split_name,
                "n": int(mask.sum()),
                "patients": int(patients[patients != ""].nunique()),
                "synthetic": int(self.meta.loc[mask, "synthetic"].sum()),
            }
            for j, name in enumerate(self.label_names):
                row[f"{name}+"] = int(np.nansum(labels[:, j] == 1))
                row[f"{name}-"] = int(np.nansum(labels[:, j] == 0))
                if np.isnan(labels[:, j]).any():
                    row[f"{name}?"] = int(np.isnan(labels[:, j]).sum())
            rows.append(row)
        return pd.DataFrame(rows)


@dataclass(frozen=True, eq=False)
class SourceRows:
    """A dataset before its pixels are read: one image file per row, labels and metadata (split included).

    Loaders of file layouts (NIH, CheXpert) build these first; ``decode`` reads the images into a ``CXRDataset``
    and ``cxrgan data prepare`` streams them into a compact file instead (``cxrgan.data.streamed``)."""

    paths: tuple  # (N,) image files, in row order
    labels: np.ndarray  # (N, K) float32, 1 / 0 / NaN (the uncertainty policy applied)
    label_names: tuple[str, ...]
    meta: pd.DataFrame  # N rows with patient_id, split, view, source, ...
    class_names: tuple[str, str] | None = None
    raw_findings: np.ndarray | None = None  # (N, K) as the source has them (CheXpert's -1 and blank), kept on disk

    def __len__(self) -> int:
        return len(self.paths)

    def stand_in(self) -> CXRDataset:
        """A dataset of these labels and metadata whose images are one shared zero pixel (for splitting by labels
        and patients without decoding anything)."""
        images = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (len(self), 1, 1))
        return CXRDataset(images, self.labels, self.label_names, self.meta, self.class_names)

    def with_meta(self, meta: pd.DataFrame) -> SourceRows:
        return replace(self, meta=meta.reset_index(drop=True))

    def grouped_by_split(self) -> SourceRows:
        """The rows split by split (train, val, test), source order kept within each: in a file, every split is
        then one contiguous run of rows, which stays on disk when selected (``CXRDataset.split``)."""
        rank = self.meta["split"].map({name: i for i, name in enumerate(SPLITS)}).to_numpy()
        order = np.argsort(rank, kind="stable")
        return replace(self, paths=tuple(self.paths[i] for i in order), labels=self.labels[order],
                       meta=self.meta.iloc[order].reset_index(drop=True),
                       raw_findings=None if self.raw_findings is None else self.raw_findings[order])

    def decode(self, size: int, workers: int = 1, progress: bool = False, desc: str = "decoding") -> CXRDataset:
        """Every image decoded, centre-cropped and resized to ``size``, in memory."""
        from cxrgan.data.images import load_many

        images = load_many(list(self.paths), size, workers=workers, progress=progress, desc=desc)
        return CXRDataset(images, self.labels, self.label_names, self.meta, self.class_names)


def from_arrays(
    images: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    split: Sequence[str] | str = "train",
    class_names: Sequence[str] | None = None,
    source: str = "",
    **meta_columns: Sequence,
) -> CXRDataset:
    """Build a dataset from plain arrays (tests, generated images, converters)."""
    n = len(images)
    meta = pd.DataFrame({"split": [split] * n if isinstance(split, str) else list(split)})
    meta["source"] = source
    for name, values in meta_columns.items():
        meta[name] = list(values)
    return CXRDataset(
        images=np.asarray(images),
        labels=np.asarray(labels, dtype=np.float32),
        label_names=tuple(label_names),
        meta=meta,
        class_names=tuple(class_names) if class_names is not None else None,
    )
