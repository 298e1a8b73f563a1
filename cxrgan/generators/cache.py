"""One fit-or-load cache of trained generators, keyed by everything that decides what a generator learns.

The key is (generator name, its typed config without the run-only fields -- the seed is a config field --, the
training rows' image fingerprint, their labels and label names). Every balancer and recipe gets its generators
through ``fit_or_load``, so one trained model serves every method and recipe that asks for the same one (the three
cDCGAN alphas share one: alpha only chooses labels at sampling time), and an interrupted entry resumes from its
checkpoint. ``cache_entries`` lists what a folder of runs holds (``cxrgan generators list``).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cxrgan import distributed
from cxrgan.claims import release, try_claim
from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.io import load_torch, read_json
from cxrgan.generators.base import GENERATORS, GenerativeModel, image_fingerprint
from cxrgan.generators.settings import GeneratorSpec
from cxrgan.generators.trainer_config import config_record, training_record
from cxrgan.generators.training import CHECKPOINT_NAME, STATUS_NAME

CACHE_FOLDER = "gan"  # entries live in WORK_DIR/gan/<generator>-<key>
CLAIM_NAME = "training.claim"  # held by the process training an entry


def cache_key(spec: GeneratorSpec, dataset: CXRDataset) -> str:
    """12 hex digits identifying (generator, trained config fields, training images, labels, label names)."""
    record = {"method": spec.name, "config": training_record(spec.config), "images": image_fingerprint(dataset.images),
              "labels": hashlib.sha1(np.nan_to_num(dataset.labels, nan=-1).tobytes()).hexdigest(),
              "label_names": list(dataset.label_names)}
    return hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:12]


def entry_name(spec: GeneratorSpec, dataset: CXRDataset) -> str:
    """The folder name of the cache entry of ``spec`` trained on ``dataset``: ``<generator>-<key>``."""
    return f"{spec.name}-{cache_key(spec, dataset)}"


def cache_dir(work_dir: str | Path, spec: GeneratorSpec, dataset: CXRDataset) -> Path:
    return Path(work_dir) / CACHE_FOLDER / entry_name(spec, dataset)


def fit_or_load(spec: GeneratorSpec, dataset: CXRDataset, work_dir: str | Path | None, device: str | torch.device = "cpu",
                step_hook: Callable[[int], None] | None = None) -> GenerativeModel:
    """The generator ``spec`` fitted on ``dataset`` (a training split): loaded when ``work_dir`` caches a finished
    entry for it, resumed when the entry was interrupted, trained and cached otherwise; trained in memory when
    ``work_dir`` is None. Processes sharing ``work_dir`` (shards, workers) take turns on an entry: one trains it
    while the others wait, then load it."""
    spec = spec.on(device)  # the key of what this device trains (bf16 only where native)
    if work_dir is None:
        return spec.build(device=device, step_hook=step_hook).fit(dataset)
    run_dir = cache_dir(work_dir, spec, dataset)
    claim = run_dir / CLAIM_NAME
    _wait_for(claim)
    try:
        return spec.build(device=device, run_dir=run_dir, step_hook=step_hook).fit(dataset, resume=True)
    finally:
        if distributed.is_main():
            release(claim)


def _wait_for(claim: Path, poll_seconds: float = 5.0) -> None:
    """Hold ``claim`` (all processes of a torchrun job together), waiting while another process holds it."""
    waiting = False
    while (owner := distributed.on_main(lambda: try_claim(claim))) is not None:
        if not waiting and distributed.is_main():
            print(f"{claim.parent.name}: trained by {owner}; waiting for it", flush=True)
        waiting = True
        time.sleep(poll_seconds)


def _status(folder: Path) -> dict[str, Any]:
    """The run's status.json, or the same facts read from its checkpoint."""
    path = folder / STATUS_NAME
    if path.exists():
        return read_json(path, "delete it (it is rewritten from the checkpoint)")
    state = load_torch(folder / CHECKPOINT_NAME, "generator checkpoint")
    return {"method": state.get("method"), "config": state.get("config", {}), "step": state.get("step"),
            "steps": state.get("config", {}).get("steps"), "done": state.get("done"), "best": state.get("best"),
            "n_train": state.get("data_info", {}).get("n_train")}


def _config_summary(method: str, config: dict) -> str:
    """The config fields that differ from the generator's defaults (seed and steps always), as ``k=v`` pairs."""
    cls = GENERATORS.get(method)
    defaults = config_record(cls.config_class()) if cls is not None else {}
    run_only = cls.config_class.RUN_ONLY_FIELDS if cls is not None else frozenset()
    shown = {k: v for k, v in config.items() if k in ("seed", "steps") or (k not in run_only and defaults.get(k) != v)}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def _audit_summary(folder: Path) -> str:
    path = folder / "audit" / "audit.json"
    if not path.exists():
        return ""
    metrics = read_json(path, "delete it and audit the generator again").get("metrics", {})
    parts = [f"{label} {metrics[key]['synthetic']:.3g} (ref {metrics[key]['reference']:.3g})"
             for key, label in (("frechet_distance", "FD"), ("two_sample_auc", "two-sample AUC"), ("recall", "recall"))
             if key in metrics]
    return ", ".join(parts)


def cache_entries(folder: str | Path) -> list[dict[str, Any]]:
    """One row per trained generator under ``folder`` (a cache, a compare / recipe run, or a train-gan output):
    where it is, method, steps done, best fidelity score, config (differences from the defaults), rows, audit."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CxrganError(f"{folder}: no such folder")
    rows = []
    for run in sorted({p.parent for p in folder.rglob(CHECKPOINT_NAME)}):
        status = _status(run)
        best = status.get("best")
        rows.append({
            "entry": str(run.relative_to(folder)) if run != folder else ".",
            "method": status.get("method"),
            "steps": f"{status.get('step')}/{status.get('steps')}" + ("" if status.get("done") else " (unfinished)"),
            "quality FD (best @ step)": f"{best['quality_fd']:.4g} @ {best['step']}" if best else "",
            "training rows": status.get("n_train"),
            "config": _config_summary(status.get("method"), status.get("config") or {}),
            "audit": _audit_summary(run),
        })
    return rows
