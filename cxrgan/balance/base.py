"""The balancer interface (imbalanced-learn style ``fit_resample``) and the registry that names every method."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.synthetic import SyntheticFiles
from cxrgan.errors import CxrganError
from cxrgan.generators.settings import GeneratorSettings


class Balancer(ABC):
    """Turns a training split into a rebalanced training split, and may change how the classifier trains on it.

    ``fit_resample`` never sees validation or test rows: callers pass the training split only. Rows it adds are
    flagged ``synthetic`` (generated) or keep their real metadata (resampled copies of real rows).

    A method may change rows, the loss or the training schedule. Callers train with
    ``balancer.adapt_training(train_config)`` after ``fit_resample``: row methods keep the default (the settings
    unchanged); loss-side methods (``cxrgan.balance.longtail``) return the rows unchanged and the training
    settings they need.
    """

    @abstractmethod
    def fit_resample(self, dataset: CXRDataset) -> CXRDataset:
        """Return the rebalanced dataset; the input is not modified."""

    def adapt_training(self, train_config: Any) -> Any:
        """The classifier training settings this method needs, after ``fit_resample``.

        Args:
            train_config: the run's ``cxrgan.classify.TrainConfig`` (a frozen dataclass; ``balance`` sits left of
                ``classify`` in the layering, so methods change it with ``dataclasses.replace`` by field name).
        """
        return train_config


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
