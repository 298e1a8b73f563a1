"""The interface every generative model offers (fit / sample / state_dict) and the registry that names them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError

MIN_TRAIN_IMAGES = 16  # fewer real images than this cannot train a GAN meaningfully


class GenerativeModel(ABC):
    """A model of the training images that can draw new labelled images.

    Subclasses set ``name`` (the registry key) and ``config_class`` (a frozen dataclass). Learned state ends in
    ``_`` and exists only after ``fit`` or ``load_state_dict``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]
    summary: ClassVar[str] = ""  # one line on what the model models, for `cxrgan train-gan --help`
    data_target: ClassVar[str] = "labels"  # the task of a compact .npz it trains on: "labels" or "findings"
    models_one_class: ClassVar[bool] = False  # True when every sample carries one class (config field ``target``)

    @abstractmethod
    def fit(self, train_dataset: CXRDataset) -> GenerativeModel:
        """Train on the rows of ``train_dataset`` (training split only) and return self."""

    @abstractmethod
    def sample(
        self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` images.

        Args:
            n: number of images.
            labels: requested (n, K) labels (or one (K,) row for all); None lets the model choose them.
            generator: source of all randomness; None uses a generator seeded from the config's seed.

        Returns:
            (images (n, H, W) uint8, labels (n, K) float32 with NaN for labels the model does not decide).
        """

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Plain dict of tensors and primitives (loadable with ``torch.load(weights_only=True)``)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> GenerativeModel:
        """Restore a fitted model from ``state_dict()`` output and return self."""


class ImageTranslator(ABC):
    """A model whose images are translations of real images of the other class (CycleGAN); an audit translates
    held-out images rather than drawing ``sample``'s translations of kept training images."""

    @abstractmethod
    def translate(self, images: np.ndarray, source_class: int) -> np.ndarray:
        """(N, H, W) uint8 images of ``source_class`` -> their translations into the other class, uint8."""

    def translations(self, source: CXRDataset, n: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` translations of random rows of ``source`` (binary; e.g. held-out real images), each into the other
        class, as balanced between the two directions as its rows allow; returns (images, target labels (n, 1))."""
        y = source.labels[:, 0]
        rows = [np.flatnonzero(y == c) for c in (0, 1)]
        if min(len(r) for r in rows) == 0:
            raise CxrganError(f"translations need real images of both classes; got {[len(r) for r in rows]}")
        first = min(n // 2, len(rows[0]))
        counts = (first, min(n - first, len(rows[1])))
        images, labels = [], []
        for c, count in enumerate(counts):
            pick = rows[c][torch.randperm(len(rows[c]), generator=generator)[:count].numpy()]
            images.append(self.translate(source.images[np.sort(pick)], c))
            labels.append(np.full((count, 1), 1.0 - c, np.float32))
        return np.concatenate(images), np.concatenate(labels)


GENERATORS: dict[str, type[GenerativeModel]] = {}


def register_generator(name: str) -> Callable[[type[GenerativeModel]], type[GenerativeModel]]:
    """Class decorator adding a generative model to ``GENERATORS`` under ``name``."""

    def decorate(cls: type[GenerativeModel]) -> type[GenerativeModel]:
        if name in GENERATORS:
            raise ValueError(f"generator {name!r} is registered twice")
        cls.name = name
        GENERATORS[name] = cls
        return cls

    return decorate


def generator_class(name: str) -> type[GenerativeModel]:
    if name not in GENERATORS:
        raise CxrganError(f"unknown generator {name!r}; available: {', '.join(sorted(GENERATORS))}")
    return GENERATORS[name]


def check_training_rows(dataset: CXRDataset, what: str, minimum: int = MIN_TRAIN_IMAGES) -> None:
    """Refuse validation/test rows and sets of fewer than ``minimum`` images; ``what`` names the rows in messages."""
    splits = sorted(set(dataset.meta["split"]) - {"train"})
    if splits:
        counts = {s: int((dataset.meta["split"] == s).sum()) for s in splits}
        raise CxrganError(f"generators train on the training split only; {what} contains {counts} rows of other splits")
    if len(dataset) < minimum:
        raise CxrganError(f"{what} has {len(dataset)} images; a GAN needs at least {minimum} to train on")


def image_fingerprint(images: np.ndarray) -> str:
    """Short content hash of the training images, so a resumed run can check it sees the same data."""
    import hashlib

    digest = hashlib.sha1()
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()[:16]
