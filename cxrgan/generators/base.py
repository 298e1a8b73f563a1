"""The interface every generative model offers (fit / sample / state_dict) and the registry that names them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError

CHECKPOINT_FORMAT = 1  # bump when the checkpoint / state_dict layout changes
CHECKPOINT_NAME = "checkpoint.pt"  # a run directory's resumable checkpoint
IGNORED_ON_RESUME = {"progress", "grid_every"}  # config fields that may change between a run and its resumption
MIN_TRAIN_IMAGES = 16  # fewer real images than this cannot train a GAN meaningfully


class GenerativeModel(ABC):
    """A model of the training images that can draw new labelled images.

    Subclasses set ``name`` (the registry key) and ``config_class`` (a frozen dataclass). Learned state ends in
    ``_`` and exists only after ``fit`` or ``load_state_dict``.
    """

    name: ClassVar[str]
    config_class: ClassVar[type]

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


def check_training_rows(dataset: CXRDataset, what: str) -> None:
    """Refuse validation/test rows and sets too small to train a GAN on; ``what`` names the rows in messages."""
    splits = sorted(set(dataset.meta["split"]) - {"train"})
    if splits:
        counts = {s: int((dataset.meta["split"] == s).sum()) for s in splits}
        raise CxrganError(f"generators train on the training split only; {what} contains {counts} rows of other splits")
    if len(dataset) < MIN_TRAIN_IMAGES:
        raise CxrganError(
            f"{what} has {len(dataset)} images; a GAN needs at least {MIN_TRAIN_IMAGES} to train on"
        )


def image_fingerprint(images: np.ndarray) -> str:
    """Short content hash of the training images, so a resumed run can check it sees the same data."""
    import hashlib

    digest = hashlib.sha1()
    digest.update(str(images.shape).encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()[:16]


def check_resumable(checkpoint: dict, method: str, config: dict, fingerprint: str, path: Any) -> None:
    """Refuse to resume ``checkpoint`` as another method, with another config, or on other training images.

    Args:
        checkpoint: the loaded checkpoint dict (``method``, ``config``, ``data_info``).
        method: the name of the model that wants to resume.
        config: that model's config record (``cxrgan.generators.loop.config_record``).
        fingerprint: ``image_fingerprint`` of the images it would train on.
        path: the checkpoint file, for messages.
    """
    if checkpoint.get("method") != method:
        raise CxrganError(f"{path}: checkpoint of method {checkpoint.get('method')!r}, cannot resume it as {method!r}")
    theirs = checkpoint["config"]
    changed = sorted(k for k in config if k not in IGNORED_ON_RESUME and theirs.get(k) != config[k])
    if changed:
        raise CxrganError(f"{path}: the run was started with another config (differs in {changed}); "
                          "resume with the same settings")
    if checkpoint["data_info"]["fingerprint"] != fingerprint:
        raise CxrganError(f"{path}: the run was trained on other images ({checkpoint['data_info']['n_train']} rows); "
                          "resume with the same data file and split")


def resumable_checkpoint(run_dir: Path | None, method: str, config: dict, fingerprint: str) -> dict | None:
    """The checkpoint in ``run_dir`` to resume from (checked by :func:`check_resumable`), or None to start anew."""
    path = Path(run_dir) / CHECKPOINT_NAME if run_dir is not None else None
    if path is None or not path.exists():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    check_resumable(checkpoint, method, config, fingerprint, path)
    return checkpoint


def resume_or_build(model: Any, config: dict, info: dict, resume: bool, build: Callable[[], None]) -> dict | None:
    """Continue ``model``'s run or start it.

    With ``resume`` and a checkpoint in ``model.run_dir`` that :func:`check_resumable` accepts, load its state into
    ``model`` and return it (its ``done`` flag says whether training already finished). Otherwise record ``info``
    as ``model.data_info_``, call ``build`` to create fresh networks and return None.
    """
    checkpoint = resumable_checkpoint(model.run_dir if resume else None, model.name, config, info["fingerprint"])
    if checkpoint is not None:
        model.load_state_dict(checkpoint)
    else:
        model.data_info_ = info
        build()
    return checkpoint
