"""The recipe interface (a grid of cells, how to run one, how to tabulate) and the registry recipes add themselves to;
the engine knows recipes only through it."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cxrgan.engine.cells import Cell, CellResult, Plan, Table, TargetRow
from cxrgan.engine.store import Results, read_config_kind
from cxrgan.errors import CxrganError
from cxrgan.runs import from_dict, read_config


@dataclass(frozen=True)
class RunContext:
    """What a running cell may use from the engine."""

    run_dir: Path
    progress: bool  # show per-epoch / per-step bars inside a cell


class Recipe(ABC):
    """An experiment as a grid of cells. Subclasses set ``kind`` and ``config_class`` and are registered."""

    kind: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config: Any):
        if not isinstance(config, self.config_class):
            raise CxrganError(f"recipe {self.kind} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    @abstractmethod
    def description(self) -> str:
        """Slug of the numbered run directory, e.g. ``compare-kermany_pneumonia_64``."""

    @abstractmethod
    def plan(self) -> Plan:
        """Load and check everything (names, paths, classes per split, shapes, seeds) and list the cells.

        Raises CxrganError on any bad input, before a run directory exists or a model trains."""

    @abstractmethod
    def run_cell(self, cell: Cell, run: RunContext) -> CellResult:
        """Train and score one cell; everything random comes from the cell's seed."""

    @abstractmethod
    def tables(self, results: Results) -> list[Table]:
        """The recipe's tables from the finished cells (the verdict table first)."""

    def figures(self, results: Results) -> list[tuple[str, str]]:
        """Write the recipe's figures into ``results.run_dir``; return (file name, caption) pairs in reading order."""
        return []

    def target_rows(self, results: Results) -> list[TargetRow] | None:
        """The tested rows of the primary (internal test) split, each with the cells of its two arms, that a
        ``--target-mde`` run adds seeds for; None: this recipe cannot run with --target-mde."""
        return None

    def estimate(self, plan: Plan) -> dict[str, float]:
        """Seconds per cell name from a short measured probe on this machine, for --dry-run; default unknown."""
        return {}


RECIPES: dict[str, type[Recipe]] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    if cls.kind in RECIPES:
        raise ValueError(f"recipe {cls.kind!r} is registered twice")
    RECIPES[cls.kind] = cls
    return cls


def recipe_from_run(run_dir: str | Path) -> Recipe:
    """The recipe a run directory was made by, rebuilt from its ``config.json``."""
    kind = read_config_kind(run_dir)  # refuses a folder that is no run, a damaged config or changed input files
    if kind not in RECIPES:  # recipes register themselves when their modules are imported (the command line does)
        raise CxrganError(f"{run_dir}: made by {kind!r}, which has no tables to rebuild")
    cls = RECIPES[kind]
    return cls(from_dict(cls.config_class, read_config(run_dir)))
