"""Synthetic pretraining: the classifier first learns from a large, balanced synthetic set, then from the real rows.

RoentGen-v2 ("Improving Performance, Robustness, and Fairness of Radiographic AI Models with Finely-Controllable
Synthetic Data", Stanford, arXiv 2508.16783, 2025) pretrained classifiers on a demographically balanced synthetic set
and fine-tuned them on real data: +6.5 % accuracy, against +2.7 % for mixing real and synthetic rows in one
training set (what ``dcgan`` / ``cldm-aX`` do here). ``synth-pretrain`` is that recipe with our generators.

``fit_resample`` trains (or loads from the generator cache) a conditional generator on the training split, draws a
set that is balanced by construction, writes it as a compact .npz beside the cached generator and returns the real
rows unchanged; its training stages (``stages``) start with a ``Pretrain`` stage on that set, which
``cxrgan.classify.train`` runs before the usual epochs on the real rows. Balanced means, with
n = ceil(``scale`` x the largest real class: the larger class of a binary task, the most frequent finding of a
multi-label one):

* binary task: n images of each class;
* multi-label task: for every finding with a training positive, n label vectors drawn uniformly from the training
  rows where it is present (L_p, so co-occurrences stay real), plus n all-negative vectors when such rows exist;
  the generator draws one image per vector.

Pretraining takes as many image passes as the training on the real rows (``epochs`` x real rows / synthetic
rows, at least one epoch), so the method costs about twice the classifier time of a row method.

Methods: ``synth-pretrain`` (the latent diffusion models: ``cldm`` for binary data, ``ldm-labelvec`` for multi-label
data), ``synth-pretrain-cldm`` (the same, by name) and ``synth-pretrain-cdcgan`` (``cdcgan`` / ``cgan-labelvec``).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from cxrgan.balance.base import BalanceContext, Balancer, Powerset, register_balancer
from cxrgan.balance.stages import Main, Pretrain, Stage
from cxrgan.data.dataset import CXRDataset, from_arrays
from cxrgan.data.npz import save_npz
from cxrgan.errors import CxrganError
from cxrgan.generators.base import generator_class
from cxrgan.generators.cache import cache_dir, fit_or_load
from cxrgan.generators.settings import GeneratorSettings, GeneratorSpec

SCALE = 2.0  # synthetic images per class / real images of the largest class (dcgan-alpha: 2 x 1,206 per class)


class SyntheticPretraining(Balancer):
    """Rows unchanged; a balanced synthetic set for the classifier to pretrain on (see the module docstring).

    Args:
        binary_generator: conditional generator used on binary data ("cldm" or "cdcgan").
        multilabel_generator: label-vector generator used on multi-label data ("ldm-labelvec" or "cgan-labelvec").
        settings: the run's generator settings (steps / width / full preset).
        scale: synthetic images per class (binary) or per finding and for the all-negative vectors, as a multiple of
            the real rows of the largest class (binary) or of the most frequent finding (multi-label).
        work_dir: generator cache; the synthetic set is written beside the generator (a temporary folder when None).
        device: torch device of the generator.
        random_state: seeds the generator's training, the label draws and the sampling.
        name: the method name (``source`` of the synthetic rows).
    """

    def __init__(self, binary_generator: str, multilabel_generator: str,
                 settings: GeneratorSettings = GeneratorSettings(), scale: float = SCALE,
                 work_dir: str | Path | None = None, device: str = "cpu", random_state: int = 0,
                 name: str = "synth-pretrain"):
        if scale <= 0:
            raise CxrganError(f"{name}: scale must be positive, got {scale}")
        for generator in (binary_generator, multilabel_generator):
            if generator_class(generator).models_one_class:
                raise CxrganError(f"{name}: {generator!r} models one class; pretraining needs a conditional generator")
        self.generator_names = {True: binary_generator, False: multilabel_generator}
        self.settings, self.scale, self.name = settings, float(scale), name
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.device, self.random_state = device, int(random_state)

    def generator_spec(self, dataset: CXRDataset) -> GeneratorSpec:
        """The generator this balancer trains on ``dataset``: by task, with the balancer's seed."""
        return GeneratorSpec.resolve(self.generator_names[dataset.is_binary], self.settings, seed=self.random_state)

    def generators(self, train: CXRDataset) -> list[GeneratorSpec]:
        return [self.generator_spec(train)]

    def planned_rows(self, train: CXRDataset) -> int:
        return len(train)

    def n_per_class(self, dataset: CXRDataset) -> int:
        """Synthetic images per class (or per finding): ``scale`` x the largest real class."""
        present = np.nan_to_num(dataset.labels, nan=0.0) == 1
        largest = max(len(dataset) - present.sum(), present.sum()) if dataset.is_binary else present.sum(0).max()
        return math.ceil(self.scale * int(largest))

    def pretraining_labels(self, dataset: CXRDataset, rng: np.random.Generator) -> np.ndarray:
        """The (M, K) labels of the balanced synthetic set (NaN where a drawn real vector is unknown)."""
        n = self.n_per_class(dataset)
        if dataset.is_binary:
            return np.repeat(np.array([[0.0], [1.0]], np.float32), n, axis=0)
        present = np.nan_to_num(dataset.labels, nan=0.0) == 1
        pools = [np.flatnonzero(present[:, j]) for j in range(dataset.n_labels)]
        pools.append(np.flatnonzero(~present.any(axis=1)))  # rows without any finding
        rows = [pool[rng.integers(0, len(pool), size=n)] for pool in pools if len(pool)]
        return dataset.labels[np.concatenate(rows)].astype(np.float32)

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        spec = self.generator_spec(dataset)
        folder = cache_dir(self.work_dir, spec, dataset) if self.work_dir is not None else Path(
            tempfile.mkdtemp(prefix="cxrgan-synth-pretrain-"))
        labels = self.pretraining_labels(dataset, np.random.default_rng(self.random_state))
        path = folder / f"pretrain-{len(labels)}-seed{self.random_state}.npz"
        self.model_ = fit_or_load(spec, dataset, self.work_dir, self.device)
        if not path.exists():
            generator = torch.Generator().manual_seed(self.random_state)
            images, _ = self.model_.sample(len(labels), labels=np.nan_to_num(labels, nan=0.0), generator=generator)
            synthetic = from_arrays(images, labels, dataset.label_names, split="train",
                                    class_names=dataset.class_names, source=self.name, synthetic=[True] * len(images))
            save_npz(synthetic, path)
        self.pretrain_data_, self.n_synthetic_, self.n_real_ = path, len(labels), len(dataset)
        return dataclasses.replace(dataset)

    def stages(self, epochs: int) -> tuple[Stage, ...]:
        """Pretrain on the synthetic set for as many image passes as the real epochs make (at least one epoch)."""
        if not hasattr(self, "pretrain_data_"):
            raise CxrganError(f"{self.name}: call fit_resample before stages")
        return pretraining_stages(epochs, self.pretrain_data_, self.n_real_, self.n_synthetic_)

    def planned_images(self, train: CXRDataset, epochs: int) -> int:
        n_synthetic = self.planned_samples(train)
        return epochs * len(train) + pretraining_epochs(epochs, len(train), n_synthetic) * n_synthetic

    def planned_samples(self, train: CXRDataset) -> int:
        return len(self.pretraining_labels(train, np.random.default_rng(self.random_state)))


def pretraining_epochs(epochs: int, n_real: int, n_synthetic: int) -> int:
    """Epochs on ``n_synthetic`` rows that pass as many images as ``epochs`` on ``n_real`` rows (at least 1)."""
    return max(1, round(epochs * n_real / n_synthetic))


def pretraining_stages(epochs: int, path: str | Path, n_real: int, n_synthetic: int) -> tuple[Stage, ...]:
    """Pretraining on the rows of ``path`` first, for as many image passes as ``epochs`` on the ``n_real`` real
    rows make, then the main stage."""
    return Pretrain(str(path), pretraining_epochs(epochs, n_real, n_synthetic)), Main()


def _factory(binary: str, multilabel: str, name: str):
    def make(context: BalanceContext) -> SyntheticPretraining:
        return SyntheticPretraining(binary, multilabel, context.generators, work_dir=context.work_dir,
                                    device=context.device, random_state=context.random_state, name=name)

    return make


register_balancer("synth-pretrain")(_factory("cldm", "ldm-labelvec", "synth-pretrain"))
register_balancer("synth-pretrain-cldm")(_factory("cldm", "ldm-labelvec", "synth-pretrain-cldm"))
register_balancer("synth-pretrain-cdcgan")(_factory("cdcgan", "cgan-labelvec", "synth-pretrain-cdcgan"))
