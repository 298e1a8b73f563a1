"""Numbered run directories (``00003-compare-kermany``) and the config each run keeps: written, checked on resume,
and rebuilt into typed dataclasses."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

from cxrgan.errors import CxrganError
from cxrgan.io import create_exclusive, write_json

_RUN_NAME = re.compile(r"^(\d{5})-")

# Settings that change how a run is shown or where it computes, never what it computes: they may differ between
# a run and its resumption. Matched on the last component of a dotted field path (``train.progress``).
# ``precision`` is the autocast asked for; the autocast it resolved to (the classifier's bf16 / fp16) is compared.
# ``budget_seconds`` and ``max_seeds`` say how long a --target-mde run goes on, never what a cell computes: a resumed
# run may be given more.
COSMETIC_FIELDS = frozenset({"progress", "device", "precision", "eval_batch_size", "workers", "data_workers",
                             "sync_batchnorm", "budget_seconds", "max_seeds", "checkpoint_seconds",
                             "checkpoint_epochs"})
# Lists a resumed run may extend (more rows), keeping every earlier entry.
GROWABLE_FIELDS = frozenset({"methods"})


def check_output_folder(out: str | Path) -> Path:
    """Create ``out`` if needed and make sure runs can be written there; every OS problem becomes one line."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CxrganError(f"--out {out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CxrganError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CxrganError(f"--out {out}: the folder is not writable")
    return out


def run_slug(description: str) -> str:
    """``description`` as a file-safe folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", description).strip("_") or "run"


def new_run_dir(out: str | Path, description: str) -> Path:
    """Create ``out/NNNNN-description`` with the next free number (StyleGAN2-ADA's layout)."""
    out = check_output_folder(out)
    numbers = [int(m.group(1)) for p in out.iterdir() if (m := _RUN_NAME.match(p.name))]
    run_dir = out / f"{max(numbers, default=-1) + 1:05d}-{run_slug(description)}"
    run_dir.mkdir()
    return run_dir


def config_dict(config: Any) -> dict:
    """A config (dataclass or dict) as plain JSON values."""
    values = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps(values, default=str))


def _flatten(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict):
        flat: dict[str, Any] = {}
        for key, value in values.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: values}


def config_changes(old: dict, new: dict) -> list[str]:
    """Scientific differences between two config dicts as ``field: old -> new``; cosmetic fields and grown
    lists (see ``COSMETIC_FIELDS``, ``GROWABLE_FIELDS``) are allowed and not listed."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, "<absent>"), flat_new.get(key, "<absent>")
        leaf = key.rsplit(".", 1)[-1]
        if before == after or leaf in COSMETIC_FIELDS:
            continue
        if leaf in GROWABLE_FIELDS and isinstance(before, list) and isinstance(after, list) and set(before) <= set(after):
            continue
        changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def write_config(run_dir: Path, config: Any, kind: str) -> None:
    """Write ``config.json``; on resume, refuse a config that differs in a scientific setting.

    Cosmetic settings (progress bars, device) may change, and a run may add methods (rows) to its ``methods``,
    keeping every earlier one; the file then holds the newest config. Any other change is refused with the field
    names and both values. A setting added to the config class since the run began counts as having had its default
    value. The first writer creates the file exclusively, so processes starting one shared run together (shards)
    never overwrite each other's settings unchecked.
    """
    record = {"kind": kind, "config": config_dict(config)}
    path = Path(run_dir) / "config.json"
    if create_exclusive(path, _json_text(record)):
        return
    existing = json.loads(path.read_text())
    kept = {key: value for key, value in existing.items() if key not in record}  # e.g. a target run's rounds
    existing = {key: value for key, value in existing.items() if key in record}
    if existing != record:
        if existing.get("kind") != kind:
            raise CxrganError(f"{run_dir}: is a {existing.get('kind')!r} run, cannot resume it as {kind!r}")
        changes = config_changes(_with_defaults(existing.get("config", {}), config), record["config"])
        if changes:
            raise CxrganError(f"{path}: this run was started with other settings ({'; '.join(changes)}); resume "
                              "with the same flags (more --methods may be added) or start a new run")
        write_json(path, {**record, **kept})


def _json_text(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _with_defaults(old: dict, config: Any) -> dict:
    """``old`` (a stored config) with the fields its class gained since at their defaults; as stored otherwise."""
    if not dataclasses.is_dataclass(config):
        return old
    try:
        return config_dict(from_dict(type(config), old))
    except (CxrganError, TypeError, ValueError):  # a removed or renamed field: compare as stored
        return old


def read_config(run_dir: str | Path, kind: str | None = None) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CxrganError(f"{run_dir}: not a cxrgan run directory (no config.json)")
    record = json.loads(path.read_text())
    if kind is not None and record.get("kind") != kind:
        raise CxrganError(f"{run_dir}: is a {record.get('kind')!r} run, expected {kind!r}")
    return record["config"]


def from_dict(cls: type, values: dict) -> Any:
    """Rebuild the frozen dataclass ``cls`` from its ``config_dict`` form: nested dataclasses and tuples restored
    from their type hints; keys the class does not have are an error, missing ones take the defaults. A class whose
    shape changed reads the dicts of older versions through its classmethod ``upgrade_stored(values) -> values``."""
    upgrade = getattr(cls, "upgrade_stored", None)
    if upgrade is not None:
        values = upgrade(values)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise CxrganError(f"{cls.__name__} has no setting(s) {unknown}")
    return cls(**{name: _coerce(hints[name], value) for name, value in values.items()})


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(options[0], value) if len(options) == 1 else value
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return from_dict(hint, value)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(a, v) for a, v in zip(args, value))
        return tuple(value)
    return value
