"""Typed generator specs: what a user sets for every generator of a run, and one registered generator with its config.

A run (``compare``, a recipe, a balancer context) carries ``GeneratorSettings``; each generator it trains resolves
its own typed config from them with the CPU or full preset that lives next to the model
(``TrainableModel.resolve_config``), giving a ``GeneratorSpec``: registry name + frozen config dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from cxrgan.errors import CxrganError
from cxrgan.generators.base import GenerativeModel, generator_class
from cxrgan.generators.trainer_config import for_device


@dataclass(frozen=True)
class GeneratorSettings:
    """The generator choices a user makes for a whole run (``--gan-steps``, ``--gan-width``, ``--full``)."""

    steps: int | None = None  # optimisation steps of every generator; None = each generator's preset
    width: int | None = None  # network width (ngf = ndf) of every generator; None = each generator's preset
    full: bool = False  # paper-size presets (for GPUs) instead of the CPU presets

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise CxrganError(f"--gan-steps must be at least 1, got {self.steps}")
        if self.width is not None and self.width < 1:
            raise CxrganError(f"--gan-width must be at least 1, got {self.width}")


@dataclass(frozen=True)
class GeneratorSpec:
    """One registered generator and the typed config it trains with."""

    name: str  # a key of GENERATORS
    config: Any  # an instance of that generator's config_class

    def __post_init__(self) -> None:
        cls = generator_class(self.name)
        if not isinstance(self.config, cls.config_class):
            raise CxrganError(f"generator {self.name!r} takes a {cls.config_class.__name__}, "
                              f"got {type(self.config).__name__}")

    @classmethod
    def resolve(cls, name: str, settings: GeneratorSettings, **fixed: Any) -> GeneratorSpec:
        """The spec of generator ``name`` under ``settings``; ``fixed`` sets fields the caller decides (seed, target)."""
        return cls(name, generator_class(name).resolve_config(settings, **fixed))

    def on(self, device: str | torch.device) -> GeneratorSpec:
        """This spec as it trains on ``device`` (bf16 only where the device runs it natively, see
        ``trainer_config.for_device``): what its cache key and checkpoints record."""
        return GeneratorSpec(self.name, for_device(self.config, device))

    def build(self, device: str | torch.device = "cpu", run_dir: str | Path | None = None,
              step_hook: Callable[[int], None] | None = None) -> GenerativeModel:
        """An unfitted model of this spec."""
        return generator_class(self.name)(self.config, device=device, run_dir=run_dir, step_hook=step_hook)
