"""The balancer interface (imbalanced-learn style ``fit_resample``, checked once here), what a balancer declares
(the generators it trains), and the registry that names every method."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from cxrgan.balance.stages import Main, Stage
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.synthetic import SyntheticFiles
from cxrgan.errors import CxrganError
from cxrgan.generators.settings import GeneratorSettings, GeneratorSpec

UNKNOWN_TOKEN = 2  # the powerset token of a NaN label, next to 0 and 1


class Powerset(NamedTuple):
    """The label-powerset classes of a dataset's rows (see :func:`label_powerset`)."""

    codes: np.ndarray  # (N,) int64 class of every row, 0 .. C-1
    names: list[str]  # readable name of each of the C classes


def label_powerset(dataset: CXRDataset) -> Powerset:
    """The powerset class of every row and a readable name per class.

    Args:
        dataset: any dataset; NaN labels count as their own token.

    Returns:
        ``(codes, names)``: (N,) int64 class codes in ``0 .. C-1`` (classes sorted by label vector, so for a
        binary task code 0 is the negative class), and the C class names, e.g. "normal" / "pneumonia" for a
        binary task, "Effusion+Mass", "no finding" or "Edema ?Mass" (unknown columns prefixed by "?").
    """
    tokens = np.where(np.isnan(dataset.labels), UNKNOWN_TOKEN, dataset.labels).astype(np.int8)
    if len(tokens) == 0:
        return Powerset(np.zeros(0, dtype=np.int64), [])
    vectors, codes = np.unique(tokens, axis=0, return_inverse=True)
    return Powerset(codes.reshape(-1).astype(np.int64), [_vector_name(dataset, v) for v in vectors])


def _vector_name(dataset: CXRDataset, vector: np.ndarray) -> str:
    if dataset.is_binary:
        if vector[0] == UNKNOWN_TOKEN:
            return "unknown"
        names = dataset.class_names or (f"not {dataset.label_names[0]}", dataset.label_names[0])
        return names[int(vector[0])]
    positive = [n for n, v in zip(dataset.label_names, vector) if v == 1]
    unknown = [f"?{n}" for n, v in zip(dataset.label_names, vector) if v == UNKNOWN_TOKEN]
    return " ".join(["+".join(positive) if positive else "no finding", *unknown])


def class_counts_text(codes: np.ndarray, names: list[str]) -> str:
    """'normal: 40, pneumonia: 120' for error messages and logs."""
    counts = np.bincount(codes, minlength=len(names))
    return ", ".join(f"{name}: {int(count)}" for name, count in zip(names, counts))


def check_train_split(dataset: CXRDataset, method: str) -> Powerset:
    """Refuse what no balancer can use; return the powerset ``(codes, names)`` of the rows.

    Args:
        dataset: the rows handed to ``fit_resample``.
        method: the balancer's registry name, for the message.

    Raises:
        CxrganError: rows of the val/test splits (balancing them would leak into evaluation), no rows, or
            a single class (the message lists the class counts).
    """
    if len(dataset) == 0:
        raise CxrganError(f"{method}: the training split is empty")
    splits = dataset.meta["split"].value_counts()
    if set(splits.index) != {"train"}:
        found = ", ".join(f"{name}: {int(count)}" for name, count in splits.items())
        raise CxrganError(f"{method}: balancers take the training split only; got rows of splits ({found})")
    classes = label_powerset(dataset)
    if len(classes.names) < 2:
        raise CxrganError(
            f"{method}: needs at least two classes to balance, the training split has one "
            f"(class counts: {class_counts_text(*classes)})"
        )
    return classes


class Balancer(ABC):
    """Turns a training split into a rebalanced training split, and may change how the classifier trains on it.

    ``fit_resample`` checks its input once (training rows only, at least two classes) and its output (training
    rows, the same label columns), and calls ``_fit_resample``, which subclasses implement, as imbalanced-learn's
    ``BaseSampler`` does. Rows a method adds are flagged ``synthetic`` (generated) or keep their real metadata
    (resampled copies of real rows).

    A method may change rows, the loss or the training schedule. Callers train through ``balancer.stages(epochs)``
    after ``fit_resample``: row methods keep the default (plain training); loss-side methods
    (``cxrgan.balance.longtail``) return the rows unchanged and the stages they need.

    A method that trains generators says which (``generators``) and on what rows (``extra_rows``), so a recipe's
    dry run, the generator cache and the generator audits ask the balancer instead of matching method names.
    """

    name: str = ""  # the registry name, for messages and the ``source`` of synthetic rows
    # The registered method this one must beat to count: the same number of rows (or steps) without what it adds,
    # e.g. "oversample" for a row that fills the minority with generated images; None: no count-matched control.
    control: str | None = None

    def fit_resample(self, dataset: CXRDataset) -> CXRDataset:
        """Return the rebalanced training split; the input is not modified."""
        classes = check_train_split(dataset, self.name)
        out = self._fit_resample(dataset, classes)
        if set(out.meta["split"]) != {"train"} or out.label_names != dataset.label_names:
            raise CxrganError(f"method {self.name!r} returned rows outside the training split or other label columns")
        return out

    @abstractmethod
    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        """The rebalanced rows of a checked training split whose label-powerset classes are ``classes``."""

    def stages(self, epochs: int) -> tuple[Stage, ...]:
        """The classifier's training stages this method needs, after ``fit_resample`` (``cxrgan.balance.stages``):
        plain training by default; loss-side methods change its loss or add a stage, synthetic pretraining adds one.

        Args:
            epochs: the run's maximum epochs of the main stage (stages that scale with it read it).
        """
        return (Main(),)

    def generators(self, train: CXRDataset) -> list[GeneratorSpec]:
        """The generators ``fit_resample(train)`` trains (or loads from the cache), each with the exact config it
        trains with; none for a method without generators."""
        return []

    def extra_rows(self, train: CXRDataset) -> CXRDataset | None:
        """Real rows from outside ``train`` that the generators also train on (None: only ``train``'s rows)."""
        return None

    def planned_rows(self, train: CXRDataset) -> int:
        """How many rows ``fit_resample(train)`` returns, without training a generator (for time estimates);
        by default it resamples, which methods without generators do quickly."""
        return len(self.fit_resample(train))

    def planned_images(self, train: CXRDataset, epochs: int) -> int:
        """Training images the classifier sees over all its stages at most (for time estimates): by default
        ``epochs`` passes over the planned rows."""
        return epochs * self.planned_rows(train)

    def planned_samples(self, train: CXRDataset) -> int:
        """Images ``fit_resample(train)`` draws from its generators (for time estimates): by default every row it
        adds when it trains generators, none otherwise."""
        return self.planned_rows(train) - len(train) if self.generators(train) else 0

    def generator_rows(self, train: CXRDataset) -> CXRDataset:
        """The rows every generator of ``generators(train)`` trains on (a one-class generator takes its class)."""
        extra = self.extra_rows(train)
        return train if extra is None else CXRDataset.concat([train, extra])


@dataclass(frozen=True)
class BalanceContext:
    """What a method needs from the run that uses it, so factories take one explicit argument."""

    random_state: int  # seed for every random choice the balancer makes
    device: str = "cpu"  # torch device for balancers that train a model (GANs)
    work_dir: Path | None = None  # where model-backed balancers keep runs and the generator cache
    generators: GeneratorSettings = GeneratorSettings()  # steps / width / full preset of every generator trained
    extra_data: str | None = None  # binary .npz whose training split joins a CycleGAN's domains (-extra methods)
    synthetic: SyntheticFiles = SyntheticFiles()  # --synthetic files behind the synthetic:<stem> rows, and their mode


BalancerFactory = Callable[[BalanceContext], Balancer]
BALANCERS: dict[str, BalancerFactory] = {}


def register_balancer(name: str) -> Callable[[BalancerFactory], BalancerFactory]:
    """Decorator adding ``factory(context) -> Balancer`` to the registry under ``name``."""

    def decorate(factory: BalancerFactory) -> BalancerFactory:
        if name in BALANCERS:
            raise ValueError(f"balancer {name!r} is registered twice")
        BALANCERS[name] = factory
        return factory

    return decorate


# Families of names made at run time, by prefix: "synthetic:" -> one row per --synthetic file.
BalancerFamily = Callable[[str, BalanceContext], Balancer]
BALANCER_FAMILIES: dict[str, BalancerFamily] = {}


def register_balancer_family(prefix: str) -> Callable[[BalancerFamily], BalancerFamily]:
    """Decorator adding ``factory(name, context) -> Balancer`` for every method name starting with ``prefix``."""

    def decorate(factory: BalancerFamily) -> BalancerFamily:
        BALANCER_FAMILIES[prefix] = factory
        return factory

    return decorate


def make_balancer(name: str, context: BalanceContext) -> Balancer:
    family = next((f for prefix, f in BALANCER_FAMILIES.items() if name.startswith(prefix)), None)
    if family is not None:
        return family(name, context)
    if name not in BALANCERS:
        raise CxrganError(f"unknown method {name!r}; available: {', '.join(sorted(BALANCERS))}")
    return BALANCERS[name](context)
