"""GAN oversampling: train (or load) a generator on the training split and add synthetic minority images.

Methods (Sun & Li, "DCGAN and cDCGAN for pneumonia oversampling"): ``dcgan`` trains one DCGAN on the minority
class and adds its samples; ``cdcgan-aX`` trains one conditional DCGAN on all classes and samples labels that are
healthy with probability alpha = X. The same two schemes with stronger generators (issue 13): ``fastgan`` and
``ldm`` (one-class FastGAN / latent diffusion model of the minority class, as ``dcgan``) and ``cldm-aX`` (the
class-conditional latent diffusion model, as ``cdcgan-aX``). Any generator works that either models one class
(``models_one_class``, config field ``target``) or is conditioned on the labels with a config field ``alpha``.

How many images are added. Let ``deficit = ceil(ratio * n_majority) - n_minority`` (ratio 1.0 = balanced), or
``n_synthetic`` when given explicitly. A DCGAN adds exactly ``deficit`` minority images. A cDCGAN adds images of
both classes such that alpha is the fraction labelled healthy (label 0) and the minority class gains exactly
``deficit`` images: with the minority diseased, ``deficit`` diseased plus ``round(deficit * alpha / (1 - alpha))``
healthy images (alpha 0.5 adds as many healthy as diseased ones; alpha 0 gives a balanced set). The counts are
fixed rather than Bernoulli draws so repeated runs differ only by the images. With ``n_synthetic`` given, that is
the total, split ``round(alpha * n)`` healthy and the rest diseased. So for alpha > 0 the output is deliberately
not balanced: alpha trades sensitivity for specificity as in the paper.

Generators see only the training split (``fit_resample`` refuses other rows). When the run has a ``work_dir``,
trained generators come from the generator cache (``cxrgan.generators.cache``: method, config, training data,
seed), so the three cDCGAN alphas of a seed share one trained model and an interrupted run resumes from its
checkpoint. Generator configs come from the run's ``GeneratorSettings`` and the presets next to each model.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrgan.balance.base import BalanceContext, Balancer, Powerset, register_balancer
from cxrgan.balance.classic import generated_meta
from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators.base import generator_class
from cxrgan.generators.cache import fit_or_load
from cxrgan.generators.runs import load_run
from cxrgan.generators.settings import GeneratorSpec


def minority_deficit(dataset: CXRDataset, ratio: float = 1.0) -> tuple[int, int]:
    """(minority class value, images it lacks) of a binary training split: ``ceil(ratio * n_majority) - n_minority``,
    at least 0 (see the module docstring)."""
    counts = np.bincount(dataset.binary_targets(), minlength=2)
    minority = int(np.argmin(counts))
    return minority, max(0, math.ceil(ratio * counts[1 - minority]) - int(counts[minority]))


class GANOversampler(Balancer):
    """Adds generated minority images to a binary training split.

    Args:
        method: generator registry key: a one-class generator ("dcgan", "fastgan", "ldm") or an alpha-conditioned
            one ("cdcgan", "cldm").
        config: the generator's config; its ``seed`` is replaced by ``random_state`` (and a one-class generator's
            ``target`` by the minority class).
        alpha: probability of a healthy sampled label of a conditional generator (ignored for one-class ones).
        ratio: target minority / majority count after oversampling (1.0 = balanced).
        n_synthetic: explicit number of generated images; overrides ``ratio``.
        run_dir: a trained run directory to load instead of training.
        work_dir: cache folder for trained generators (None trains in memory each time).
        device: torch device.
        random_state: seeds generator training and sampling.
        name: the method name written to the ``source`` of synthetic rows.
    """

    def __init__(self, method: str, config: Any, alpha: float = 0.5, ratio: float = 1.0,
                 n_synthetic: int | None = None, run_dir: str | Path | None = None, work_dir: str | Path | None = None,
                 device: str = "cpu", random_state: int = 0, name: str | None = None):
        if ratio <= 0:
            raise CxrganError(f"ratio must be positive, got {ratio}")
        if n_synthetic is not None and n_synthetic < 0:
            raise CxrganError(f"n_synthetic must be >= 0, got {n_synthetic}")
        self.method, self.config, self.alpha, self.ratio = method, config, float(alpha), float(ratio)
        self.n_synthetic, self.device, self.random_state = n_synthetic, device, int(random_state)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.name = name or method
        self.one_class = generator_class(method).models_one_class  # unknown method -> clear error now
        self.control = "oversample"  # as many minority rows, copies of real ones instead of generated images

    # ---- generator ----------------------------------------------------------------------------------------
    def config_for(self, target_value: int) -> Any:
        """The generator config actually trained: the balancer's seed and, for a one-class model, its class."""
        changes: dict = {"seed": self.random_state}
        if self.one_class:
            changes["target"] = str(target_value)
        return dataclasses.replace(self.config, **changes)

    def generators(self, train: CXRDataset) -> list[GeneratorSpec]:
        """The generator this balancer trains on ``train``: a one-class model of its minority class, or a conditional
        one of both classes; none when it loads a given ``run_dir``."""
        if self.run_dir is not None:
            return []
        return [GeneratorSpec(self.method, self.config_for(minority_deficit(train, self.ratio)[0]))]

    def _generator(self, dataset: CXRDataset, minority_name: str):
        if self.run_dir is None:
            return fit_or_load(self.generators(dataset)[0], dataset, self.work_dir, self.device)
        model = load_run(self.run_dir, method=self.method, device=self.device)
        size = int(model.data_info_["image_size"])
        if size != dataset.image_size:
            raise CxrganError(f"{self.run_dir}: generator makes {size} px images but the data are {dataset.image_size} px")
        if list(model.data_info_["label_names"]) != list(dataset.label_names):
            raise CxrganError(f"{self.run_dir}: generator labels {model.data_info_['label_names']} differ from the data's "
                              f"{list(dataset.label_names)}")
        target = model.data_info_.get("target_name")
        if target is not None and target != minority_name:
            raise CxrganError(f"{self.run_dir}: this {self.method} models {target!r} but the minority class is "
                              f"{minority_name!r}")
        return model

    # ---- balancing ----------------------------------------------------------------------------------------
    def _label_counts(self, deficit: int, minority: int) -> tuple[int, int]:
        """(n healthy, n diseased) synthetic images of a conditional generator (see the module docstring)."""
        if self.n_synthetic is not None:
            healthy = round(self.alpha * self.n_synthetic)
            return healthy, self.n_synthetic - healthy
        minority_fraction = self.alpha if minority == 0 else 1.0 - self.alpha
        if deficit and minority_fraction <= 0:
            raise CxrganError(f"{self.name}: alpha = {self.alpha} never samples the minority class")
        other = round(deficit * (1.0 - minority_fraction) / minority_fraction) if deficit else 0
        return (deficit, other) if minority == 0 else (other, deficit)

    def _synthetic_labels(self, dataset: CXRDataset) -> tuple[np.ndarray, int, int]:
        """(the labels of the images to add, in label order, (n, 1)), the minority class and its deficit."""
        minority, deficit = minority_deficit(dataset, self.ratio)
        if self.one_class:
            total = deficit if self.n_synthetic is None else self.n_synthetic
            return np.full((total, 1), float(minority), dtype=np.float32), minority, deficit
        n_healthy, n_diseased = self._label_counts(deficit, minority)
        labels = np.concatenate([np.zeros(n_healthy), np.ones(n_diseased)]).astype(np.float32)[:, None]
        return labels, minority, deficit

    def planned_rows(self, train: CXRDataset) -> int:
        return len(train) + len(self._synthetic_labels(train)[0])

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        requested, minority, self.deficit_ = self._synthetic_labels(dataset)
        names = dataset.class_names or ("0", "1")
        self.model_ = self._generator(dataset, names[minority])
        rng = torch.Generator().manual_seed(self.random_state)
        if not self.one_class:
            requested = requested[torch.randperm(len(requested), generator=rng).numpy()]
        total = len(requested)
        self.synthetic_counts_ = {names[0]: int((requested == 0).sum()), names[1]: int((requested == 1).sum())}
        if total == 0:
            return dataset
        images, labels = self.model_.sample(total, labels=requested, generator=rng)
        meta = generated_meta(dataset.meta, total, source=self.name)
        meta["patient_id"] = [f"{self.name}-{i:06d}" for i in range(total)]
        synthetic = CXRDataset(images, labels, dataset.label_names, meta, class_names=dataset.class_names)
        return dataset.with_rows_added(synthetic)


def oversampler_factory(method: str, alpha: float, name: str):
    """The ``factory(context)`` of method ``name``: GAN oversampling with generator ``method`` (its resolved CPU or
    full config; a conditional one sampling healthy labels with probability ``alpha``)."""

    def make(context: BalanceContext) -> GANOversampler:
        config = generator_class(method).resolve_config(context.generators)
        if not generator_class(method).models_one_class:
            config = dataclasses.replace(config, alpha=alpha)
        return GANOversampler(method, config, alpha=alpha, work_dir=context.work_dir, device=context.device,
                              random_state=context.random_state, name=name)

    return make


for _method in ("dcgan", "fastgan", "ldm"):
    register_balancer(_method)(oversampler_factory(_method, 0.0, _method))
register_balancer("cdcgan")(oversampler_factory("cdcgan", 0.5, "cdcgan"))
for _method in ("cdcgan", "cldm"):
    for _alpha in (0.25, 0.5, 0.75):
        register_balancer(f"{_method}-a{_alpha:g}")(oversampler_factory(_method, _alpha, f"{_method}-a{_alpha:g}"))
