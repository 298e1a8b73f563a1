"""What a recipe declares to the engine: the cells of its grid, what running one yields, its plan (cells, the
evaluation sets' labels, a summary) and its tables; and the shards a plan's cells are spread over."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

from cxrgan.errors import CxrganError
from cxrgan.evaluate.verdicts import Comparison

LEADING = ("analysis", "method", "row")  # coordinates a cell's name and label start with, shown without their key


@dataclass(frozen=True)
class Cell:
    """One point of a recipe's grid, e.g. (method "dcgan", seed 0) or (regime 0.1, method "gan", seed 2), or one
    analysis of the trained models, e.g. (analysis "tstr", generator "cdcgan-4f2a...").

    A cell that reads what other cells leave behind (a saved model) names them in ``after``; the engine runs
    them first, or waits while another process runs them.
    """

    coords: tuple[tuple[str, Any], ...]
    after: tuple[str, ...] = ()  # names of the cells whose outputs this cell reads

    @classmethod
    def of(cls, after: tuple[str, ...] = (), **coords: Any) -> Cell:
        return cls(tuple(coords.items()), after)

    def __getitem__(self, name: str) -> Any:
        return dict(self.coords)[name]

    @property
    def key(self) -> tuple:
        return tuple(value for _, value in self.coords)

    def _reading_order(self) -> list[tuple[str, Any]]:
        """The method (or row) first, the seed last: ``dcgan seed 0``, ``gan regime 0.1 seed 2``."""
        first = [(k, v) for k, v in self.coords if k in LEADING]
        seed = [(k, v) for k, v in self.coords if k == "seed"]
        return first + [(k, v) for k, v in self.coords if (k, v) not in first and k != "seed"] + seed

    @property
    def name(self) -> str:
        """File-safe id: ``dcgan-seed0``, ``gan-0.1-seed2``."""
        return "-".join(f"seed{v}" if k == "seed" else re.sub(r"[^A-Za-z0-9.]+", "_", str(v)).strip("_")
                        for k, v in self._reading_order())

    @property
    def label(self) -> str:
        """Human-readable: ``dcgan seed 0``, ``gan regime 0.1 seed 2``."""
        return " ".join(str(v) if k in LEADING else f"{k} {v}" for k, v in self._reading_order())


@dataclass
class CellResult:
    """What running one cell produced: a JSON-ready record and the model's scores on each evaluation set."""

    record: dict[str, Any]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    summary: str = ""  # one line for the progress log, e.g. "ROC AUC 0.931"


@dataclass
class Plan:
    """Everything checked before training: the cells, the evaluation sets' real labels, and what the run will do."""

    cells: list[Cell]
    evaluation_sets: dict[str, np.ndarray]  # name -> (N, K) real labels that every cell's scores refer to
    label_names: tuple[str, ...]
    summary: str = ""  # data and settings in a few lines, printed by --dry-run and when a run starts
    data_tables: list["Table"] = field(default_factory=list)  # counts of the data used, written when a run starts
    class_names: tuple[str, str] | None = None  # names of the values 0 / 1 of a binary task
    subgroups: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # set -> subgroup -> row mask
    groups: dict[str, np.ndarray] = field(default_factory=dict)  # set -> (N,) patient of each row, for clustered tests


@dataclass
class Table:
    """One table of a run, written as ``<stem>.md`` and ``<stem>.csv`` and shown in the report in role order."""

    stem: str
    title: str
    frame: pd.DataFrame
    notes: str = ""
    role: str = "detail"  # "verdict" opens the report, then "main" (the paper-shaped table), then "detail"


@dataclass(frozen=True)
class TargetRow:
    """One tested row of the primary (internal test) split that a ``--target-mde`` run adds seeds for: its
    comparison and the cells of its two arms, as coordinates without the seed (e.g. ``{"method": "oversample"}`` and
    ``{"method": "none"}``); every cell of the plan matching an arm is run for each seed the row gets."""

    comparison: Comparison
    arms: tuple[dict[str, Any], ...]

    @property
    def name(self) -> str:
        """The row's identity in one string, e.g. ``method oversample, vs none``."""
        return ", ".join(f"{key} {value}" for key, value in self.comparison.row.items())


ROLE_ORDER = {"verdict": 0, "main": 1, "detail": 2}


@dataclass(frozen=True)
class Shard:
    """The K-th of N disjoint subsets of a plan's cells (``--shard K/N``, K from 1): every N-th cell from the K-th."""

    index: int  # K, 1..count
    count: int  # N

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise CxrganError(f"--shard {text!r}: expected K/N such as 1/4") from None
        if not 1 <= index <= count:
            raise CxrganError(f"--shard {text}: K must lie in 1..N")
        return cls(index, count)

    def select(self, cells: list[Cell]) -> list[Cell]:
        return [cell for i, cell in enumerate(cells) if i % self.count == self.index - 1]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def grid(**axes: Iterable[Any]) -> list[Cell]:
    """All combinations of the axes, the first axis outermost: ``grid(seed=range(3), method=("a", "b"))``."""
    cells = [Cell(())]
    for name, values in axes.items():
        cells = [Cell((*c.coords, (name, v))) for c in cells for v in values]
    return cells
