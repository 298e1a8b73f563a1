"""Which rows a generator trains on and which labels its samples carry: one class, alpha-drawn classes or label vectors.

Three choices, each a mixin any model family combines with its networks (the DCGAN family in ``dcgan.py``, the
latent diffusion models in ``diffusion.py``); a mixin supplies ``_training_rows``, ``_n_conditioning`` and
``_sample_labels`` and reads only ``self.config`` and ``self.data_info_``:

* ``OneClass``: the model trains on the training images of ``config.target`` (a class of a binary task or a
  finding of a multi-label one) and every sample carries that label.
* ``AlphaConditioned``: the model trains on every row conditioned on its (multi-hot) label vector; unrequested
  labels are healthy with probability ``alpha`` (Sun & Li, Stanford CS231n poster, "DCGAN and cDCGAN for pneumonia
  oversampling": label 0 in the binary task, the all-zero finding vector in the multi-label case), the others drawn
  from the training label patterns with at least one positive, by their training frequency.
* ``LabelVectorConditioned``: as ``AlphaConditioned``, but unrequested labels are whole training label vectors
  drawn by their frequency, so co-occurring findings keep their real proportions (Sundaram & Hulkund 2021,
  "GAN-based Data Augmentation for Chest X-ray Classification").
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch

from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators.base import MIN_TRAIN_IMAGES


def resolve_target(dataset: CXRDataset, target: str) -> tuple[int, float, str]:
    """(label column, value, display name) of the class ``target`` names in ``dataset``."""
    if dataset.is_binary:
        names = dataset.class_names or ("0", dataset.label_names[0])
        if target in ("", "1", names[1], dataset.label_names[0]):
            return 0, 1.0, names[1]
        if target in ("0", names[0]):
            return 0, 0.0, names[0]
        raise CxrganError(f"unknown target class {target!r}; this binary task has {list(names)} (or 0 / 1)")
    if target not in dataset.label_names:
        raise CxrganError(f"name the finding to model with target=...; got {target!r}, "
                          f"available: {list(dataset.label_names)}")
    return dataset.label_names.index(target), 1.0, target


def as_label_rows(labels: Any, n: int, n_labels: int) -> np.ndarray:
    """Broadcast a scalar, a (K,) row or an (n, K) array of requested labels to (n, K) float32."""
    rows = np.asarray(labels, dtype=np.float32)
    if rows.ndim == 0:
        rows = np.full((1, n_labels), float(rows), dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.shape[1] != n_labels or len(rows) not in (1, n):
        raise CxrganError(f"requested labels have shape {rows.shape}; expected ({n}, {n_labels}) or ({n_labels},)")
    return np.broadcast_to(rows, (n, n_labels)).copy()


class OneClass:
    """Trains on the rows of ``config.target``; every sample carries that class."""

    models_one_class: ClassVar[bool] = True

    def _n_conditioning(self) -> int:
        return 0

    def _training_rows(self, dataset: CXRDataset) -> tuple[np.ndarray, None, dict[str, Any]]:
        column, value, name = resolve_target(dataset, self.config.target)
        mask = dataset.labels[:, column] == value
        count = int(mask.sum())
        if count < MIN_TRAIN_IMAGES:
            raise CxrganError(f"class {name!r} has {count} training images; a {self.name} needs at least "
                              f"{MIN_TRAIN_IMAGES} images of the class it models")
        info = {"target_column": column, "target_value": value, "target_name": name}
        return np.ascontiguousarray(dataset.images[mask]), None, info

    def _recalibration_labels(self, n: int, generator: torch.Generator) -> None:
        return None

    def _sample_labels(self, n: int, labels: Any, generator: torch.Generator) -> tuple[None, np.ndarray]:
        info = self.data_info_
        column, value = int(info["target_column"]), float(info["target_value"])
        out = np.full((n, len(info["label_names"])), np.nan, dtype=np.float32)
        out[:, column] = value
        if labels is not None:
            requested = as_label_rows(labels, n, out.shape[1])[:, column]
            if not np.all(requested == value):
                raise CxrganError(f"this {self.name} models only {info['target_name']!r} (label {value:g} in column "
                                  f"{column}); requested labels include {sorted(set(requested.tolist()) - {value})}")
        return None, out


class AlphaConditioned:
    """Trains on every row conditioned on its labels; unrequested labels are healthy with probability ``alpha``."""

    def _n_conditioning(self) -> int:
        return len(self.data_info_["label_names"])

    def _training_rows(self, dataset: CXRDataset) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        cond = np.nan_to_num(dataset.labels, nan=0.0).astype(np.float32)  # unknown counts as absent for conditioning
        if dataset.is_binary:
            names = dataset.class_names or ("0", "1")
            for value, name in enumerate(names):
                count = int((cond[:, 0] == value).sum())
                if count < MIN_TRAIN_IMAGES:
                    raise CxrganError(f"class {name!r} has {count} training images; a {self.name} needs at least "
                                      f"{MIN_TRAIN_IMAGES} per class")
        patterns, counts = np.unique(cond, axis=0, return_counts=True)
        info = {"label_patterns": patterns.tolist(), "pattern_counts": counts.tolist()}
        return np.ascontiguousarray(dataset.images), cond, info

    def _patterns(self, healthy: bool) -> tuple[torch.Tensor, torch.Tensor]:
        patterns = torch.tensor(self.data_info_["label_patterns"], dtype=torch.float32)
        counts = torch.tensor(self.data_info_["pattern_counts"], dtype=torch.float64)
        keep = (patterns.sum(1) == 0) if healthy else (patterns.sum(1) > 0)
        return patterns[keep], counts[keep]

    def sample_labels(self, n: int, alpha: float, generator: torch.Generator) -> np.ndarray:
        """(n, K) labels: healthy (all zero) with probability ``alpha``, else a diseased training pattern."""
        if not 0.0 <= alpha <= 1.0:
            raise CxrganError(f"alpha must lie in [0, 1], got {alpha}")
        k = len(self.data_info_["label_names"])
        healthy = torch.rand(n, generator=generator) < alpha
        diseased, counts = self._patterns(healthy=False)
        out = torch.zeros(n, k)
        n_diseased = int((~healthy).sum())
        if n_diseased:
            if len(diseased) == 0:
                raise CxrganError("the training set had no positive labels, so only alpha = 1 can be sampled")
            picks = torch.multinomial(counts, n_diseased, replacement=True, generator=generator)
            out[~healthy] = diseased[picks]
        return out.numpy()

    def _requested_rows(self, n: int, labels: Any) -> np.ndarray:
        rows = as_label_rows(labels, n, len(self.data_info_["label_names"]))
        if np.isnan(rows).any():
            raise CxrganError("requested labels for a conditional generator must be 0 or 1, not NaN")
        return rows

    def _sample_labels(self, n: int, labels: Any, generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        if labels is None:
            rows = self.sample_labels(n, self.config.alpha, generator)
        else:
            rows = self._requested_rows(n, labels)
        return torch.from_numpy(rows), rows

    def _recalibration_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` training label vectors drawn by their frequency."""
        patterns = torch.tensor(self.data_info_["label_patterns"], dtype=torch.float32)
        counts = torch.tensor(self.data_info_["pattern_counts"], dtype=torch.float64)
        return patterns[torch.multinomial(counts, n, replacement=True, generator=generator)]

    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
               batch_size: int = 256, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As ``GenerativeModel.sample``; ``alpha`` overrides the config's healthy-label probability."""
        if alpha is None:
            return super().sample(n, labels, generator, batch_size)
        original = self.config
        self.config = dataclasses.replace(original, alpha=float(alpha))
        try:
            return super().sample(n, labels, generator, batch_size)
        finally:
            self.config = original


class LabelVectorConditioned(AlphaConditioned):
    """Conditioned on finding vectors; unrequested labels are training label vectors drawn by frequency."""

    data_target: ClassVar[str] = "findings"

    def _sample_labels(self, n: int, labels: Any, generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        if labels is not None:
            rows = self._requested_rows(n, labels)
        else:  # whole training label vectors, by their training frequency
            k = len(self.data_info_["label_names"])
            rows = self._recalibration_labels(n, generator).numpy() if n else np.zeros((0, k), np.float32)
        return torch.from_numpy(rows), rows

    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        return super(AlphaConditioned, self).sample(n, labels, generator, batch_size)
