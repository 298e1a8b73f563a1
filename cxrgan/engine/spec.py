"""``RunSpec``: what every run is made of, whatever the recipe -- its data, seeds, external sites, patient policies
(overlap, unknown patients), device and precision -- built once by the command line and contained by every recipe's
config."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError

# The fields of RunSpec that configs written before it existed kept at their top level.
FLAT_FIELDS = ("data", "seeds", "first_seed", "external", "external_labels", "allow_patient_overlap",
               "allow_unknown_patients")


@dataclass(frozen=True)
class RunSpec:
    """The data, seeds, sites and compute choices of one run."""

    data: tuple[str, ...]  # the data file(s) (a recipe that reads one file takes the first); a str is one file
    seeds: int = 5  # training seeds: first_seed, first_seed + 1, ...
    first_seed: int = 0  # seed of the first run
    external: tuple[str, ...] = ()  # binary .npz files of other hospitals, every row scored (external sites)
    external_labels: tuple[tuple[str, str], ...] = ()  # (site class name, our class name) pairs where names differ
    allow_patient_overlap: bool = False  # accept a patient in two splits (counted and printed); off = an error
    allow_unknown_patients: bool = False  # accept a data file whose split was made per image, patients unknown
    device: str = "auto"  # torch device of every model the run trains: auto (CUDA when present), cpu, cuda
    precision: str = "auto"  # autocast asked for (auto, bf16, fp16, fp32); the classifier config holds the result
    target_mde: float | None = None  # --target-mde: add seeds in rounds until every tested row can detect this Δ
    budget_seconds: float | None = None  # --budget: wall time a target run's rounds may spend (None: no limit)
    max_seeds: int = 30  # --max-seeds: the most seeds any row of a target run gets

    def __post_init__(self) -> None:
        if isinstance(self.data, str):  # one path given as a string: the one-file tuple
            object.__setattr__(self, "data", (self.data,))

    @property
    def file(self) -> str:
        """The data file of a recipe that reads one."""
        return self.data[0]

    @property
    def seed_range(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)

    def torch_device(self) -> torch.device:
        """The device every model of the run uses: ``auto`` is CUDA when present (never silently the CPU)."""
        return resolve_device(self.device)

    def check(self) -> None:
        """Refuse settings no run can use, before any data is read."""
        if self.seeds < 1:
            raise CxrganError(f"--seeds must be at least 1, got {self.seeds}")
        if not self.data:
            raise CxrganError("no data file given")
        if self.target_mde is None:
            if self.budget_seconds is not None or self.max_seeds != RunSpec.max_seeds:
                raise CxrganError("--budget and --max-seeds bound the rounds of --target-mde; give --target-mde too")
        else:
            if not 0 < self.target_mde < 1:
                raise CxrganError(f"--target-mde {self.target_mde:g}: an AUC difference in (0, 1), e.g. 0.01")
            if self.seeds < 2:
                raise CxrganError(f"--target-mde needs --seeds of at least 2 in its first round, got {self.seeds}")
            if self.max_seeds < self.seeds:
                raise CxrganError(f"--max-seeds {self.max_seeds}: fewer than the first round's --seeds {self.seeds}")
            if self.budget_seconds is not None and self.budget_seconds <= 0:
                raise CxrganError(f"--budget {self.budget_seconds:g} s: must be positive")
        self.torch_device()


def nest_run_fields(values: dict[str, Any], device: str | None = None) -> dict[str, Any]:
    """A config dict written before ``RunSpec`` existed (run fields at its top level), with those fields moved into
    ``run``; ``device`` is the device the old config kept in its classifier (or SGAN) settings."""
    if "run" in values:
        return values
    values = dict(values)
    run = {name: values.pop(name) for name in FLAT_FIELDS if name in values}
    if device is not None:
        run["device"] = device
    return {"run": run, **values}


class HoldsRunSpec:
    """Base of a recipe config whose ``run`` field is a ``RunSpec``: reads a config.json written before ``RunSpec``
    existed with its run fields moved into ``run``, the device taken from the section named ``device_section``
    (where the old config kept it)."""

    device_section: ClassVar[str] = "train"

    @classmethod
    def upgrade_stored(cls, values: dict) -> dict:
        """A config.json written before ``RunSpec``: its run fields moved into ``run``."""
        return nest_run_fields(values, values.get(cls.device_section, {}).get("device"))


def run_spec_of(config: Any) -> RunSpec | None:
    """The ``RunSpec`` a recipe config contains (directly, or in a contained config such as a ``CompareConfig``)."""
    for field in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
        value = getattr(config, field.name)
        found = value if isinstance(value, RunSpec) else run_spec_of(value)
        if found is not None:
            return found
    return None


def with_run(config: Any, **changes: Any) -> Any:
    """A copy of a recipe config whose contained ``RunSpec`` has ``changes`` (e.g. ``seeds=8``)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if isinstance(value, RunSpec):
            return dataclasses.replace(config, **{field.name: dataclasses.replace(value, **changes)})
        if run_spec_of(value) is not None:
            return dataclasses.replace(config, **{field.name: with_run(value, **changes)})
    raise CxrganError(f"{type(config).__name__} contains no RunSpec")
