"""What a run directory keeps per cell -- scores, record, claim -- and reading it back (``Results``), laid out so that
several processes on several machines can fill one run directory (``--shard``, ``--workers``) without locks.

Per cell, ``scores/<cell>.npz`` is written first, then ``records/<cell>.json``; both atomically (temporary file and
rename). A cell is done when both exist: a record whose scores file was lost is not, and ``--resume`` runs it again.
``claims/<cell>`` marks a cell a process is running (:mod:`cxrgan.claims`). ``results.jsonl`` holds every record in
plan order; it is rebuilt from ``records/`` after each cell and by every report, so it is complete whenever a report
exists. Run directories written before ``records/`` existed (``results.jsonl`` only) are read as they are and given
``records/`` the first time a process writes to them.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrgan.errors import CxrganError
from cxrgan.io import atomic_write, read_json, read_jsonl, write_json, write_text
from cxrgan.runs import check_config, check_inputs, check_own_folder, read_config

RESULTS_NAME = "results.jsonl"
RECORDS_DIR = "records"
SCORES_DIR = "scores"
CLAIMS_DIR = "claims"
LABELS_NAME = "labels.npz"
PATIENTS_PREFIX = "patients_"  # labels.npz key of an evaluation set's (N,) patient codes


# ---- records ---------------------------------------------------------------------------------------------------
def read_records(run_dir: str | Path, order: Sequence[str] = ()) -> list[dict]:
    """Every finished cell's record: from ``records/`` (sorted by ``order``, a list of cell names, then by name),
    or from ``results.jsonl`` in a run directory that has no ``records/``. Records whose scores file is missing are
    left out (the cell is not done). A damaged file is an error naming it and how to re-run the cell."""
    run_dir = Path(run_dir)
    folder = run_dir / RECORDS_DIR
    if not folder.is_dir():
        records = read_jsonl(run_dir / RESULTS_NAME, remedy=_RERUN_ALL)
    else:
        records = [read_json(path, remedy=f"delete it and --resume {run_dir} runs that cell again")
                   for path in sorted(folder.glob("*.json"))]
    records = [r for r in records if (run_dir / SCORES_DIR / f"{r.get('cell')}.npz").is_file()]
    position = {name: i for i, name in enumerate(order)}
    return sorted(records, key=lambda r: (position.get(r.get("cell"), len(position)), str(r.get("cell", ""))))


_RERUN_ALL = "fix or delete the line (its cell then runs again on --resume)"


def done_cells(run_dir: str | Path) -> set[str]:
    """Names of the cells whose record and scores exist."""
    return {r["cell"] for r in read_records(run_dir) if "cell" in r}


def save_cell(run_dir: Path, cell_name: str, record: dict[str, Any], scores: dict[str, np.ndarray]) -> None:
    """The cell's scores (an empty file when it scored nothing), then its record (which marks the cell done)."""
    atomic_write(run_dir / SCORES_DIR / f"{cell_name}.npz", lambda tmp: savez(tmp, scores))
    write_json(run_dir / RECORDS_DIR / f"{cell_name}.json", record)


def write_results_view(run_dir: Path, order: Sequence[str] = ()) -> None:
    """Rewrite ``results.jsonl`` from ``records/`` in plan order."""
    records = read_records(run_dir, order)
    write_text(run_dir / RESULTS_NAME, "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records))


def adopt_legacy_results(run_dir: Path) -> None:
    """Give a run directory written before ``records/`` existed one record file per line of ``results.jsonl``.

    The folder is filled under a private name and renamed into place, so concurrent processes see either no
    ``records/`` (and read ``results.jsonl``) or a complete one; a failure removes the private folder."""
    if (run_dir / RECORDS_DIR).is_dir() or not (run_dir / RESULTS_NAME).is_file():
        return
    records = read_jsonl(run_dir / RESULTS_NAME, remedy=_RERUN_ALL)  # read (and checked) before anything is made
    staging = run_dir / f".{RECORDS_DIR}.{os.getpid()}"
    staging.mkdir(exist_ok=True)
    try:
        for record in records:
            if not isinstance(record.get("cell"), str):
                raise CxrganError(f"{run_dir / RESULTS_NAME}: a record without its 'cell' name; {_RERUN_ALL}")
            write_json(staging / f"{record['cell']}.json", record)
        try:
            os.rename(staging, run_dir / RECORDS_DIR)
        except OSError:  # another process adopted them first
            pass
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def read_config_kind(run_dir: str | Path) -> str:
    """The kind of run ``run_dir`` holds, for rebuilding it (``cxrgan report``, workers): refused when it is no cxrgan
    run directory, its config.json is damaged, or an input file changed since the run began."""
    run_dir = Path(run_dir)
    check_own_folder(run_dir, "cxrgan report")
    if not (run_dir / "config.json").is_file():
        raise CxrganError(f"{run_dir}: not a cxrgan run directory (no config.json)")
    read_config(run_dir)
    check_inputs(run_dir)
    return read_json(run_dir / "config.json")["kind"]


def check_resumable(run_dir: Path, kind: str, config: Any, evaluation_sets: dict[str, np.ndarray],
                    groups: dict[str, np.ndarray] | None = None) -> None:
    """Refuse to continue ``run_dir`` before anything is written to it: not a run directory, another kind of run,
    changed settings or input files, damaged records, or evaluation labels that differ from the run's."""
    if not run_dir.exists():
        raise CxrganError(f"--resume {run_dir}: no such folder")
    if not run_dir.is_dir():
        raise CxrganError(f"--resume {run_dir}: is a file, not a run directory")
    if not (run_dir / "config.json").is_file():
        raise CxrganError(f"--resume {run_dir}: not a cxrgan run directory (no config.json)")
    check_config(run_dir, config, kind)
    read_records(run_dir)
    check_labels(run_dir, evaluation_sets, groups)


def claim_path(run_dir: Path, cell_name: str) -> Path:
    return run_dir / CLAIMS_DIR / cell_name


def savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


# ---- reading a run back ----------------------------------------------------------------------------------------
class _open_run_file:
    """``np.load`` of an .npz the run wrote, every array read inside the block: damage is one line naming the file."""

    def __init__(self, path: Path, remedy: str):
        self.path, self.remedy = path, remedy

    def __enter__(self):
        try:
            self.archive = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise CxrganError(f"{self.path}: damaged ({exc}); {self.remedy}") from None
        return self.archive

    def __exit__(self, kind, exc, traceback) -> bool:
        self.archive.close()
        if isinstance(exc, (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)):
            raise CxrganError(f"{self.path}: damaged ({exc}); {self.remedy}") from None
        return False


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
            with _open_run_file(path, "it is rewritten from the data by --resume; delete it and resume") as archive:
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
        remedy = f"delete it and --resume {self.run_dir} runs that cell again"
        with _open_run_file(path, remedy) as archive:
            if set_name not in archive.files:
                raise CxrganError(f"{path}: no scores for evaluation set {set_name!r}; {remedy}")
            return archive[set_name]

    def seed_scores(self, set_name: str, **coords: Any) -> dict[int, np.ndarray]:
        """Per seed, the stored scores of the cells matching ``coords`` on ``set_name``."""
        return {r["seed"]: self.scores(r, set_name) for r in self.where(**coords)}


def check_labels(run_dir: Path, evaluation_sets: dict[str, np.ndarray], groups: dict[str, np.ndarray] | None = None
                 ) -> bool:
    """Refuse data whose evaluation labels or patients (``groups``: set -> (N,) patient of each row) differ from
    those the run began with; True when every set's labels and patients are stored."""
    if not (run_dir / LABELS_NAME).exists():
        return False
    groups = groups or {}
    saved = Results(run_dir)
    for name, labels in evaluation_sets.items():
        if name in saved.labels and not np.array_equal(saved.labels[name], labels, equal_nan=True):
            raise CxrganError(f"{run_dir}: the {name!r} labels differ from those the run started with; "
                              "resume with the same data files and settings")
        if name in saved.groups and name in groups and not np.array_equal(saved.groups[name], groups[name]):
            raise CxrganError(f"{run_dir}: the {name!r} patients differ from those the run started with; "
                              "resume with the same data files and settings")
    return set(evaluation_sets) <= set(saved.labels) and set(groups) <= set(saved.groups)


def save_labels(run_dir: Path, evaluation_sets: dict[str, np.ndarray], label_names: Sequence[str],
                class_names: Sequence[str] | None, subgroups: dict[str, dict[str, np.ndarray]],
                groups: dict[str, np.ndarray] | None = None) -> None:
    """Write the evaluation sets' labels and patients (``groups``: set -> (N,) patient of each row); on resume,
    refuse data whose labels or patients changed since the run began, and add patients a run lacks."""
    groups = groups or {}
    if check_labels(run_dir, evaluation_sets, groups):
        return
    arrays = {f"set_{name}": np.asarray(labels, np.float32) for name, labels in evaluation_sets.items()}
    arrays["label_names"] = np.array(label_names)
    if class_names:
        arrays["class_names"] = np.array(class_names)
    for set_name, masks in subgroups.items():
        arrays.update({f"group_{set_name}|{group}": mask for group, mask in masks.items()})
    arrays.update({f"{PATIENTS_PREFIX}{name}": np.asarray(patients, np.int64) for name, patients in groups.items()})
    atomic_write(run_dir / LABELS_NAME, lambda tmp: savez(tmp, arrays))
