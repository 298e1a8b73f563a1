"""DCGAN trained per class and conditional DCGAN sampled with alpha, as used for pneumonia oversampling.

* ``dcgan``: Radford, Metz & Chintala (2015), "Unsupervised Representation Learning with Deep Convolutional
  Generative Adversarial Networks". One model per class: it trains on the training images of ``target`` (a class
  of a binary task or a finding of a multi-label one) and every sample carries that label.
* ``cdcgan``: a conditional DCGAN (Mirza & Osindero 2014) trained on all classes, G conditioned by a label
  embedding concatenated to z and D by a projection term (Miyato & Koyama 2018), see ``blocks``. Sun & Li
  (Stanford CS231n poster, "DCGAN and cDCGAN for pneumonia oversampling") sample labels with a hyper-parameter
  alpha = the probability that a sampled label is the healthy class: label 0 in the binary task, the all-zero
  finding vector in the multi-label case; the other labels are drawn from the training label patterns that have
  at least one positive, by their training frequency. K > 1 multi-hot conditioning works the same way.
* ``cgan-labelvec``: the same conditional DCGAN on multi-label finding vectors (Sundaram & Hulkund 2021, "GAN-based
  Data Augmentation for Chest X-ray Classification"); without requested labels it draws whole training label
  vectors by their frequency, so co-occurring findings keep their real proportions.

All three train through the one loop (``training.py``) with the presets below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators.adversarial import AdversarialModel, GANConfig
from cxrgan.generators.augment import DEFAULT_POLICY
from cxrgan.generators.base import MIN_TRAIN_IMAGES, register_generator

# CPU preset (runs of the balancers, recipes and `cxrgan train-gan` without --full): width 32, bf16 autocast,
# DiffAugment and EMA. A step at batch 64 and 64 px takes about 0.16 s on this 2-core machine, so 500 steps train
# a generator in under 2 minutes whatever the class size. DiffAugment guards against a discriminator memorising
# few images over many passes; in a short run over many images it only slows D and G collapses partially.
# Measured on Kermany 64 px (3:1), 500 steps, width 32: cDCGAN on 1611 images (20 passes) pixel std across samples
# 15 with DiffAugment vs 30 without (real: 32-36); DCGAN on 403 pneumonia images (80 passes) 30 with DiffAugment.
# So it applies from 50 passes over the training rows on. The fidelity score every 100 steps keeps the best model.
CPU_PRESET: dict[str, Any] = dict(
    steps=500, ngf=32, ndf=32, batch_size=64, diffaugment=DEFAULT_POLICY, diffaugment_min_passes=50.0,
    ema_decay=0.999, bf16=True, progress=False, log_every=25, checkpoint_every=100, grid_every=100, quality_every=100)
# Full preset (GPUs): the DCGAN paper's widths in fp32; 10,000 steps of 64 images are 100 passes over 6,400 images
# (the earlier epoch-based preset trained 100 epochs).
FULL_PRESET: dict[str, Any] = dict(
    steps=10_000, ngf=64, ndf=64, batch_size=64, diffaugment=DEFAULT_POLICY, diffaugment_min_passes=50.0,
    ema_decay=0.999, bf16=False, progress=True, log_every=100, checkpoint_every=1000, grid_every=1000,
    quality_every=500)


@dataclass(frozen=True)
class DCGANConfig(GANConfig):
    """DCGAN settings: the shared GAN settings plus the class it models."""

    target: str = ""  # class name ("pneumonia"), "0"/"1", or finding name; "" = the positive class of a binary task


@dataclass(frozen=True)
class CDCGANConfig(GANConfig):
    """Conditional DCGAN settings: the shared GAN settings plus conditioning and the default alpha."""

    embed_dim: int = 32  # size of the label embedding concatenated to z in G
    alpha: float = 0.5  # default probability that a sampled label is the healthy class (Sun & Li)

    # alpha only chooses labels at sampling time: one trained model serves every alpha
    RUN_ONLY_FIELDS: ClassVar[frozenset[str]] = GANConfig.RUN_ONLY_FIELDS | {"alpha"}


@dataclass(frozen=True)
class LabelVectorConfig(GANConfig):
    """Label-vector cGAN settings: the shared GAN settings plus the size of the label embedding."""

    embed_dim: int = 32  # size of the label-vector embedding concatenated to z in G


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
        raise CxrganError(f"name the finding to model with target=...; got {target!r}, available: {list(dataset.label_names)}")
    return dataset.label_names.index(target), 1.0, target


def _as_label_rows(labels: Any, n: int, n_labels: int) -> np.ndarray:
    """Broadcast a scalar, a (K,) row or an (n, K) array of requested labels to (n, K) float32."""
    rows = np.asarray(labels, dtype=np.float32)
    if rows.ndim == 0:
        rows = np.full((1, n_labels), float(rows), dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.shape[1] != n_labels or len(rows) not in (1, n):
        raise CxrganError(f"requested labels have shape {rows.shape}; expected ({n}, {n_labels}) or ({n_labels},)")
    return np.broadcast_to(rows, (n, n_labels)).copy()


@register_generator("dcgan")
class DCGAN(AdversarialModel):
    """Unconditional DCGAN of one class; ``sample`` returns images of that class."""

    config_class = DCGANConfig
    summary = "unconditional DCGAN of one class (--target), Radford et al. 2015"
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET

    def _training_rows(self, dataset: CXRDataset) -> tuple[np.ndarray, None, dict[str, Any]]:
        column, value, name = resolve_target(dataset, self.config.target)
        mask = dataset.labels[:, column] == value
        count = int(mask.sum())
        if count < MIN_TRAIN_IMAGES:
            raise CxrganError(
                f"class {name!r} has {count} training images; a DCGAN needs at least {MIN_TRAIN_IMAGES} images of the class it models"
            )
        info = {"target_column": column, "target_value": value, "target_name": name}
        return np.ascontiguousarray(dataset.images[mask]), None, info

    def _sample_labels(self, n: int, labels: Any, generator: torch.Generator) -> tuple[None, np.ndarray]:
        info = self.data_info_
        column, value = int(info["target_column"]), float(info["target_value"])
        out = np.full((n, len(info["label_names"])), np.nan, dtype=np.float32)
        out[:, column] = value
        if labels is not None:
            requested = _as_label_rows(labels, n, out.shape[1])[:, column]
            if not np.all(requested == value):
                raise CxrganError(
                    f"this DCGAN models only {info['target_name']!r} (label {value:g} in column {column}); "
                    f"requested labels include {sorted(set(requested.tolist()) - {value})}"
                )
        return None, out


@register_generator("cdcgan")
class CDCGAN(AdversarialModel):
    """Conditional DCGAN over all classes; sampled labels are healthy with probability ``alpha``."""

    config_class = CDCGANConfig
    summary = "conditional DCGAN of every class, labels healthy with probability alpha (Sun & Li)"
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET

    def _n_conditioning(self) -> int:
        return len(self.data_info_["label_names"])

    def _training_rows(self, dataset: CXRDataset) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        cond = np.nan_to_num(dataset.labels, nan=0.0).astype(np.float32)  # unknown counts as absent for conditioning
        if dataset.is_binary:
            names = dataset.class_names or ("0", "1")
            for value, name in enumerate(names):
                count = int((cond[:, 0] == value).sum())
                if count < MIN_TRAIN_IMAGES:
                    raise CxrganError(f"class {name!r} has {count} training images; a cDCGAN needs at least {MIN_TRAIN_IMAGES} per class")
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

    def _sample_labels(self, n: int, labels: Any, generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        k = len(self.data_info_["label_names"])
        if labels is None:
            rows = self.sample_labels(n, self.config.alpha, generator)
        else:
            rows = _as_label_rows(labels, n, k)
            if np.isnan(rows).any():
                raise CxrganError("requested labels for a conditional generator must be 0 or 1, not NaN")
        return torch.from_numpy(rows), rows

    def _recalibration_labels(self, n: int, generator: torch.Generator) -> torch.Tensor:
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


@register_generator("cgan-labelvec")
class LabelVectorCDCGAN(CDCGAN):
    """The conditional DCGAN on finding vectors; unrequested labels are training label vectors drawn by frequency."""

    config_class = LabelVectorConfig
    summary = "conditional DCGAN of 14-finding label vectors, multi-label data (Sundaram & Hulkund 2021)"
    data_target = "findings"

    def _sample_labels(self, n: int, labels: Any, generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        if labels is not None:
            return super()._sample_labels(n, labels, generator)
        k = len(self.data_info_["label_names"])
        # whole training label vectors, by their training frequency
        rows = self._recalibration_labels(n, generator).numpy() if n else np.zeros((0, k), np.float32)
        return torch.from_numpy(rows), rows

    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        return AdversarialModel.sample(self, n, labels, generator, batch_size)
