"""The one run engine: a recipe declares its grid of cells, how to run one and how to tabulate; the engine checks the
plan before anything trains, then owns the run directory, resume, progress with ETA, stored scores, tables and report.

A run directory holds ``config.json`` (the resolved config and the recipe's kind), ``command.txt``,
``labels.npz`` (the real labels of every evaluation set, so tables can be rebuilt without the data),
``results.jsonl`` (one record per finished cell, appended after its scores are saved: the done-set),
``scores/<cell>.npz`` (per evaluation set, the (N, K) scores of that cell's model), the tables (``<stem>.md`` /
``.csv``, listed in ``tables.json`` in reading order), figures, and ``report.html``. ``cxrgan report RUN_DIR``
rebuilds tables and report from these files alone (:func:`report_run`).
"""

from __future__ import annotations

import json
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import pandas as pd

from cxrgan.errors import CxrganError
from cxrgan.io import append_jsonl, atomic_write, read_jsonl, write_json
from cxrgan.report.html import write_report
from cxrgan.report.tables import to_markdown, write_tables
from cxrgan.runs import check_output_folder, from_dict, new_run_dir, read_config, write_config

RESULTS_NAME = "results.jsonl"
LABELS_NAME = "labels.npz"
TABLES_MANIFEST = "tables.json"


# ---- what a recipe declares -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One point of a recipe's grid, e.g. (method "dcgan", seed 0) or (regime 0.1, method "gan", seed 2)."""

    coords: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, **coords: Any) -> Cell:
        return cls(tuple(coords.items()))

    def __getitem__(self, name: str) -> Any:
        return dict(self.coords)[name]

    @property
    def key(self) -> tuple:
        return tuple(value for _, value in self.coords)

    def _reading_order(self) -> list[tuple[str, Any]]:
        """The method (or row) first, the seed last: ``dcgan seed 0``, ``gan regime 0.1 seed 2``."""
        first = [(k, v) for k, v in self.coords if k in ("method", "row")]
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
        return " ".join(str(v) if k in ("method", "row") else f"{k} {v}" for k, v in self._reading_order())


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


@dataclass
class Table:
    """One table of a run, written as ``<stem>.md`` and ``<stem>.csv`` and shown in the report in role order."""

    stem: str
    title: str
    frame: pd.DataFrame
    notes: str = ""
    role: str = "detail"  # "verdict" opens the report, then "main" (the paper-shaped table), then "detail"


ROLE_ORDER = {"verdict": 0, "main": 1, "detail": 2}


class Results:
    """A run directory's finished cells: records, their stored scores and the evaluation sets' labels."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.records = read_jsonl(self.run_dir / RESULTS_NAME)
        path = self.run_dir / LABELS_NAME
        self.labels: dict[str, np.ndarray] = {}
        self.label_names: tuple[str, ...] = ()
        self.class_names: tuple[str, ...] | None = None
        self.subgroups: dict[str, dict[str, np.ndarray]] = {}
        if path.exists():
            with np.load(path, allow_pickle=False) as archive:
                self.labels = {k[len("set_"):]: archive[k] for k in archive.files if k.startswith("set_")}
                self.label_names = tuple(str(s) for s in archive["label_names"])
                if "class_names" in archive.files:
                    self.class_names = tuple(str(s) for s in archive["class_names"])
                for key in (k for k in archive.files if k.startswith("group_")):
                    set_name, group = key[len("group_"):].split("|", 1)
                    self.subgroups.setdefault(set_name, {})[group] = archive[key].astype(bool)

    def where(self, **coords: Any) -> list[dict]:
        """Records whose coordinates equal ``coords``, in seed order."""
        found = [r for r in self.records if all(r.get(k) == v for k, v in coords.items())]
        return sorted(found, key=lambda r: r.get("seed", 0))

    def scores(self, record: dict, set_name: str) -> np.ndarray:
        path = self.run_dir / "scores" / f"{record['cell']}.npz"
        with np.load(path, allow_pickle=False) as archive:
            if set_name not in archive.files:
                raise CxrganError(f"{path}: no scores for evaluation set {set_name!r}")
            return archive[set_name]

    def seed_scores(self, set_name: str, **coords: Any) -> dict[int, np.ndarray]:
        """Per seed, the stored scores of the cells matching ``coords`` on ``set_name``."""
        return {r["seed"]: self.scores(r, set_name) for r in self.where(**coords)}


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

    def finish(self, run: RunContext, results: Results) -> None:
        """Analyses after every cell (resumable on their own), e.g. generator audits; default none."""

    @abstractmethod
    def tables(self, results: Results) -> list[Table]:
        """The recipe's tables from the finished cells (the verdict table first)."""

    def figures(self, results: Results) -> list[tuple[str, str]]:
        """Write the recipe's figures into ``results.run_dir``; return (file name, caption) pairs in reading order."""
        return []

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
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CxrganError(f"{run_dir}: not a cxrgan run directory (no config.json)")
    kind = json.loads(path.read_text()).get("kind")
    import cxrgan.recipes.all  # noqa: F401  (registers every recipe)

    if kind not in RECIPES:
        raise CxrganError(f"{run_dir}: made by {kind!r}, which has no tables to rebuild")
    cls = RECIPES[kind]
    return cls(from_dict(cls.config_class, read_config(run_dir)))


# ---- running -------------------------------------------------------------------------------------------------
def _save_labels(run_dir: Path, plan: Plan) -> None:
    """Write the evaluation sets' labels; on resume, refuse data whose labels changed since the run began."""
    path = run_dir / LABELS_NAME
    if path.exists():
        saved = Results(run_dir)
        for name, labels in plan.evaluation_sets.items():
            if name in saved.labels and not np.array_equal(saved.labels[name], labels, equal_nan=True):
                raise CxrganError(f"{run_dir}: the {name!r} labels differ from those the run started with; "
                                  "resume with the same data files and settings")
        if set(plan.evaluation_sets) <= set(saved.labels):
            return
    arrays = {f"set_{name}": np.asarray(labels, np.float32) for name, labels in plan.evaluation_sets.items()}
    arrays["label_names"] = np.array(plan.label_names)
    if plan.class_names:
        arrays["class_names"] = np.array(plan.class_names)
    for set_name, groups in plan.subgroups.items():
        arrays.update({f"group_{set_name}|{group}": mask for group, mask in groups.items()})
    atomic_write(path, lambda tmp: _savez(tmp, arrays))


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def open_run(recipe: Recipe, out: str | Path, resume_dir: str | Path | None) -> Path:
    """The run directory: ``resume_dir`` checked to be a run of this recipe, or a new numbered one in ``out``."""
    if resume_dir is None:
        return new_run_dir(out, recipe.description())
    run_dir = Path(resume_dir)
    if not (run_dir / "config.json").is_file():
        raise CxrganError(f"--resume {run_dir}: not a cxrgan run directory (no config.json)")
    return run_dir


def run_recipe(recipe: Recipe, out: str | Path, resume_dir: str | Path | None = None, command: str | None = None,
               dry_run: bool = False, progress: bool = True) -> Path | None:
    """Plan, check, run (or resume) every cell, then tabulate and report. Returns the run directory (None for a
    dry run, which prints the plan with a measured time estimate and writes nothing)."""
    plan = recipe.plan()
    if not plan.cells:
        raise CxrganError(f"{recipe.kind}: the plan has no cells (no methods or seeds)")
    if dry_run:
        print(dry_run_text(recipe, plan))
        return None
    if resume_dir is None:
        check_output_folder(out)
    run_dir = open_run(recipe, out, resume_dir)
    write_config(run_dir, recipe.config, kind=recipe.kind)
    if command:
        with open(run_dir / "command.txt", "a", encoding="utf-8") as f:  # appended: a resumed run adds its line
            f.write(command + "\n")
    _save_labels(run_dir, plan)
    for table in plan.data_tables:
        write_tables(table.frame, run_dir / table.stem, title=table.title, notes=table.notes)
    axes = [name for name, _ in plan.cells[0].coords]
    done = {tuple(r.get(name) for name in axes) for r in read_jsonl(run_dir / RESULTS_NAME)}
    todo = [c for c in plan.cells if c.key not in done]
    print(f"{recipe.kind}: {run_dir}\n{plan.summary}\n{len(plan.cells)} cells, {len(plan.cells) - len(todo)} done, "
          f"{len(todo)} to run", flush=True)
    context = RunContext(run_dir=run_dir, progress=progress)
    started = time.perf_counter()
    for i, cell in enumerate(todo, 1):
        position = f"[{len(plan.cells) - len(todo) + i}/{len(plan.cells)}]"
        print(f"{position} {cell.label} ...", flush=True)
        cell_started = time.perf_counter()
        result = recipe.run_cell(cell, context)
        for name, scores in result.scores.items():
            if name not in plan.evaluation_sets:
                raise CxrganError(f"{recipe.kind}: cell {cell.label} scored an undeclared set {name!r}")
        if result.scores:
            atomic_write(run_dir / "scores" / f"{cell.name}.npz", lambda tmp: _savez(tmp, result.scores))
        seconds = time.perf_counter() - cell_started
        record = {**dict(cell.coords), "cell": cell.name, **result.record, "seconds": round(seconds, 1)}
        append_jsonl(run_dir / RESULTS_NAME, record)
        elapsed = time.perf_counter() - started
        eta = elapsed / i * (len(todo) - i)
        print(f"{position} {cell.label}: {result.summary} ({seconds:.0f} s; elapsed {_clock(elapsed)}, "
              f"ETA {_clock(eta)})", flush=True)
    recipe.finish(context, Results(run_dir))
    report_run(run_dir, recipe)
    return run_dir


def report_run(run_dir: str | Path, recipe: Recipe | None = None) -> Path:
    """Rebuild every table, figure and ``report.html`` of a run from its stored records and scores, print the
    verdict and main tables, and return the report's path (``cxrgan report RUN_DIR``)."""
    run_dir = Path(run_dir)
    if recipe is None:  # rebuilt from config.json: its plan (data, chosen findings, splits) is made again, cheaply
        recipe = recipe_from_run(run_dir)
        recipe.plan()
    results = Results(run_dir)
    if not results.records:
        raise CxrganError(f"{run_dir}: no finished cells yet ({RESULTS_NAME} is empty); nothing to tabulate")
    # a table with no columns (e.g. verdicts of a run that holds only its baseline) is left out
    tables = sorted((t for t in recipe.tables(results) if len(t.frame.columns)), key=lambda t: ROLE_ORDER.get(t.role, 9))
    for table in tables:
        write_tables(table.frame, run_dir / table.stem, title=table.title, notes=table.notes)
    figures = recipe.figures(results)
    write_json(run_dir / TABLES_MANIFEST, {"tables": [{"stem": t.stem, "title": t.title, "role": t.role} for t in tables],
                                           "figures": [{"file": f, "caption": c} for f, c in figures]})
    report = write_report(run_dir)
    for table in tables:
        if table.role in ("verdict", "main"):
            print(f"\n{table.title}\n\n{to_markdown(table.frame)}\n\n{table.notes}")
    print(f"\nresults: {run_dir}\nreport: {report}")
    return report


def dry_run_text(recipe: Recipe, plan: Plan) -> str:
    """The plan of a run: config, data summary, the grid, and a wall-time estimate from a measured probe."""
    from dataclasses import asdict

    estimates = recipe.estimate(plan)
    lines = [json.dumps(asdict(recipe.config), indent=2, default=str), "", plan.summary, "",
             f"{len(plan.cells)} cells:"]
    for cell in plan.cells:
        seconds = estimates.get(cell.name)
        lines.append(f"  {cell.label}" + (f"  (~{_clock(seconds)})" if seconds is not None else ""))
    if estimates:
        total = sum(estimates.get(c.name, 0.0) for c in plan.cells)
        lines.append(f"estimated wall time: {_clock(total)} on this machine (from a probe of a few timed steps of "
                     "each model; load from other programs makes it longer)")
    return "\n".join(lines)


def grid(**axes: Iterable[Any]) -> list[Cell]:
    """All combinations of the axes, the first axis outermost: ``grid(seed=range(3), method=("a", "b"))``."""
    cells = [Cell(())]
    for name, values in axes.items():
        cells = [Cell((*c.coords, (name, v))) for c in cells for v in values]
    return cells
