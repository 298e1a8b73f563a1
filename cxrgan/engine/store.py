"""What a run directory keeps per cell -- scores, record, claim -- and reading it back (``Results``), laid out so that
several processes on several machines can fill one run directory (``--shard``, ``--workers``) without locks.

Per cell, ``scores/<cell>.npz`` is written first, then ``records/<cell>.json``; both atomically (temporary file and
rename), so a record exists only for a finished cell and the set of records is the done-set. ``claims/<cell>``
marks a cell a process is running (:mod:`cxrgan.claims`). ``results.jsonl`` holds every record in plan order; it
is rebuilt from ``records/`` after each cell and by every report, so it is complete whenever a report exists. Run
directories written before ``records/`` existed (``results.jsonl`` only) are read as they are and given
``records/`` the first time a process writes to them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrgan.errors import CxrganError
from cxrgan.io import atomic_write, read_jsonl, write_json, write_text

RESULTS_NAME = "results.jsonl"
RECORDS_DIR = "records"
SCORES_DIR = "scores"
CLAIMS_DIR = "claims"
LABELS_NAME = "labels.npz"
PATIENTS_PREFIX = "patients_"  # labels.npz key of an evaluation set's (N,) patient codes


# ---- records ---------------------------------------------------------------------------------------------------
def read_records(run_dir: str | Path, order: Sequence[str] = ()) -> list[dict]:
    """Every finished cell's record: from ``records/`` (sorted by ``order``, a list of cell names, then by name),
    or from ``results.jsonl`` in a run directory that has no ``records/``."""
    run_dir = Path(run_dir)
    folder = run_dir / RECORDS_DIR
    if not folder.is_dir():
        return read_jsonl(run_dir / RESULTS_NAME)
    records = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]
    position = {name: i for i, name in enumerate(order)}
    return sorted(records, key=lambda r: (position.get(r.get("cell"), len(position)), r.get("cell", "")))


def done_cells(run_dir: str | Path) -> set[str]:
    """Names of the cells whose record exists."""
    return {r["cell"] for r in read_records(run_dir) if "cell" in r}


def save_cell(run_dir: Path, cell_name: str, record: dict[str, Any], scores: dict[str, np.ndarray]) -> None:
    """The cell's scores, then its record (which marks the cell done)."""
    if scores:
        atomic_write(run_dir / SCORES_DIR / f"{cell_name}.npz", lambda tmp: savez(tmp, scores))
    write_json(run_dir / RECORDS_DIR / f"{cell_name}.json", record)


def write_results_view(run_dir: Path, order: Sequence[str] = ()) -> None:
    """Rewrite ``results.jsonl`` from ``records/`` in plan order."""
    records = read_records(run_dir, order)
    write_text(run_dir / RESULTS_NAME, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records))


def adopt_legacy_results(run_dir: Path) -> None:
    """Give a run directory written before ``records/`` existed one record file per line of ``results.jsonl``.

    The folder is filled under a private name and renamed into place, so concurrent processes see either no
    ``records/`` (and read ``results.jsonl``) or a complete one."""
    if (run_dir / RECORDS_DIR).is_dir():
        return
    staging = run_dir / f".{RECORDS_DIR}.{os.getpid()}"
    staging.mkdir(exist_ok=True)
    for record in read_jsonl(run_dir / RESULTS_NAME):
        (staging / f"{record['cell']}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    try:
        os.rename(staging, run_dir / RECORDS_DIR)
    except OSError:  # another process adopted them first
        for path in staging.iterdir():
            path.unlink()
        staging.rmdir()


def claim_path(run_dir: Path, cell_name: str) -> Path:
    return run_dir / CLAIMS_DIR / cell_name


def savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# ---- reading a run back ----------------------------------------------------------------------------------------
class Results:
    """A run directory's finished cells: records, their stored scores and the evaluation sets' labels.

    ``records`` holds the cells that trained and scored a model; ``analyses`` the records of analysis cells (those
    with an ``analysis`` coordinate: audits, train-on-synthetic scores, ...), read with :meth:`analysis`.

    Args:
        run_dir: the run directory.
        order: cell names in plan order; records are listed in that order (others after them, by name).
    """

    def __init__(self, run_dir: str | Path, order: Sequence[str] = ()):
        self.run_dir = Path(run_dir)
        everything = read_records(self.run_dir, order)
        self.records = [r for r in everything if "analysis" not in r]
        self.analyses = [r for r in everything if "analysis" in r]
        path = self.run_dir / LABELS_NAME
        self.labels: dict[str, np.ndarray] = {}
        self.label_names: tuple[str, ...] = ()
        self.class_names: tuple[str, ...] | None = None
        self.subgroups: dict[str, dict[str, np.ndarray]] = {}
        self.groups: dict[str, np.ndarray] = {}  # set -> (N,) patient of each row; absent in older run directories
        if path.exists():
            with np.load(path, allow_pickle=False) as archive:
                self.labels = {k[len("set_"):]: archive[k] for k in archive.files if k.startswith("set_")}
                self.label_names = tuple(str(s) for s in archive["label_names"])
                if "class_names" in archive.files:
                    self.class_names = tuple(str(s) for s in archive["class_names"])
                for key in (k for k in archive.files if k.startswith("group_")):
                    set_name, group = key[len("group_"):].split("|", 1)
                    self.subgroups.setdefault(set_name, {})[group] = archive[key].astype(bool)
                self.groups = {k[len(PATIENTS_PREFIX):]: archive[k] for k in archive.files
                               if k.startswith(PATIENTS_PREFIX)}

    def patients(self, set_name: str) -> np.ndarray | None:
        """(N,) patient of each row of ``set_name`` (for patient-clustered tests), None when the run did not store it."""
        return self.groups.get(set_name)

    def where(self, **coords: Any) -> list[dict]:
        """Records whose coordinates equal ``coords``, in seed order."""
        found = [r for r in self.records if all(r.get(k) == v for k, v in coords.items())]
        return sorted(found, key=lambda r: r.get("seed", 0))

    def analysis(self, kind: str, **coords: Any) -> list[dict]:
        """Records of the ``kind`` analysis cells whose coordinates equal ``coords``."""
        return [r for r in self.analyses if r["analysis"] == kind and all(r.get(k) == v for k, v in coords.items())]

    def scores(self, record: dict, set_name: str) -> np.ndarray:
        path = self.run_dir / SCORES_DIR / f"{record['cell']}.npz"
        with np.load(path, allow_pickle=False) as archive:
            if set_name not in archive.files:
                raise CxrganError(f"{path}: no scores for evaluation set {set_name!r}")
            return archive[set_name]

    def seed_scores(self, set_name: str, **coords: Any) -> dict[int, np.ndarray]:
        """Per seed, the stored scores of the cells matching ``coords`` on ``set_name``."""
        return {r["seed"]: self.scores(r, set_name) for r in self.where(**coords)}


def save_labels(run_dir: Path, evaluation_sets: dict[str, np.ndarray], label_names: Sequence[str],
                class_names: Sequence[str] | None, subgroups: dict[str, dict[str, np.ndarray]],
                groups: dict[str, np.ndarray] | None = None) -> None:
    """Write the evaluation sets' labels and patients (``groups``: set -> (N,) patient of each row); on resume,
    refuse data whose labels or patients changed since the run began, and add patients a run lacks."""
    path = run_dir / LABELS_NAME
    groups = groups or {}
    if path.exists():
        saved = Results(run_dir)
        for name, labels in evaluation_sets.items():
            if name in saved.labels and not np.array_equal(saved.labels[name], labels, equal_nan=True):
                raise CxrganError(f"{run_dir}: the {name!r} labels differ from those the run started with; "
                                  "resume with the same data files and settings")
            if name in saved.groups and name in groups and not np.array_equal(saved.groups[name], groups[name]):
                raise CxrganError(f"{run_dir}: the {name!r} patients differ from those the run started with; "
                                  "resume with the same data files and settings")
        if set(evaluation_sets) <= set(saved.labels) and set(groups) <= set(saved.groups):
            return
    arrays = {f"set_{name}": np.asarray(labels, np.float32) for name, labels in evaluation_sets.items()}
    arrays["label_names"] = np.array(label_names)
    if class_names:
        arrays["class_names"] = np.array(class_names)
    for set_name, masks in subgroups.items():
        arrays.update({f"group_{set_name}|{group}": mask for group, mask in masks.items()})
    arrays.update({f"{PATIENTS_PREFIX}{name}": np.asarray(patients, np.int64) for name, patients in groups.items()})
    atomic_write(path, lambda tmp: savez(tmp, arrays))
