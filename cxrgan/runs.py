"""Numbered run directories (``00003-compare-kermany``) holding a run's config, JSONL metrics and artefacts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from cxrgan.errors import CxrganError
from cxrgan.io import write_json

_RUN_NAME = re.compile(r"^(\d{5})-")


def new_run_dir(out: str | Path, description: str) -> Path:
    """Create ``out/NNNNN-description`` with the next free number (StyleGAN2-ADA's layout)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    numbers = [int(m.group(1)) for p in out.iterdir() if (m := _RUN_NAME.match(p.name))]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", description).strip("_") or "run"
    run_dir = out / f"{max(numbers, default=-1) + 1:05d}-{slug}"
    run_dir.mkdir()
    return run_dir


def config_dict(config: Any) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)


def write_config(run_dir: Path, config: Any, kind: str) -> None:
    """Write ``config.json``; on resume, refuse a config that differs from the one the run started with.

    One change is allowed: a resumed run may add methods (rows) to its ``methods`` list, keeping every earlier
    one, so a finished comparison can gain a row without retraining the others; the file is then rewritten.
    """
    record = {"kind": kind, "config": json.loads(json.dumps(config_dict(config), default=str))}
    path = Path(run_dir) / "config.json"
    if path.exists():
        existing = json.loads(path.read_text())
        if existing == record:
            return
        old = existing.get("config", {})
        changed = sorted(k for k in record["config"] if old.get(k) != record["config"][k])
        grows_methods = (changed == ["methods"] and existing.get("kind") == kind
                         and set(old["methods"]) <= set(record["config"]["methods"]))
        if not grows_methods:
            raise CxrganError(
                f"{path}: this run was started with another config (differs in {changed or ['kind']}); "
                "resume with the same flags (more --methods may be added) or start a new run"
            )
    write_json(path, record)


def read_config(run_dir: str | Path, kind: str | None = None) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CxrganError(f"{run_dir}: not a cxrgan run directory (no config.json)")
    record = json.loads(path.read_text())
    if kind is not None and record.get("kind") != kind:
        raise CxrganError(f"{run_dir}: is a {record.get('kind')!r} run, expected {kind!r}")
    return record["config"]
