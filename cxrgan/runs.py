"""Numbered run directories (``00003-compare-kermany``), the marker that tells cxrgan's folders from a user's, and the
config each run keeps: written with a content fingerprint of every input file, checked on resume and report, and
rebuilt into typed dataclasses."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import types
import typing
import uuid
from pathlib import Path
from typing import Any

from cxrgan.errors import CxrganError
from cxrgan.io import create_exclusive, fingerprint, read_json, write_json

_RUN_NAME = re.compile(r"^(\d{5,})-")  # five digits, more after 99999
# Written into every folder cxrgan creates for a run (compare, recipes, train-gan, audits): only folders holding it
# (or inside one) are written into by ``cxrgan report``. Folders made before it existed are recognised by their
# config.json (see ``is_run_dir``).
RUN_MARKER = ".cxrgan-run"

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
# Counts a resumed run may raise: more training seeds of the same cells (not in a --target-mde run, whose rounds
# decide the seeds after the first).
GROWABLE_COUNTS = frozenset({"seeds"})
# Config fields naming input files (a path or a list of paths): each file's content fingerprint is kept in
# config.json, and a resume or report whose files differ is refused. Matched on the last component of a field path.
INPUT_FIELDS = frozenset({"data", "second_data", "extra_data", "external", "weights_path", "data_path",
                          "pretrain_data", "paths"})  # paths: the --synthetic files


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
    """Create and mark ``out/NNNNN-description`` with the next free number (StyleGAN2-ADA's layout)."""
    out = check_output_folder(out)
    slug = run_slug(description)
    for _ in range(100):  # another process may take the same number first: then the next one
        numbers = [int(m.group(1)) for p in out.iterdir() if (m := _RUN_NAME.match(p.name))]
        run_dir = out / f"{max(numbers, default=-1) + 1:05d}-{slug}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            continue
        mark_run_dir(run_dir)
        return run_dir
    raise CxrganError(f"--out {out}: could not create a new numbered run directory (other processes keep taking the "
                      "next number)")


def shared_run_dir(out: str | Path, description: str) -> Path:
    """``out/<description>-shared``, the run directory every shard of a sharded run writes into: created and marked by
    the first shard; an existing folder of that name must be a cxrgan run directory."""
    out = check_output_folder(out)
    run_dir = out / f"{run_slug(description)}-shared"
    if not run_dir.exists():  # the folder appears with its marker inside: a shard starting at the same moment never
        staging = out / f".{run_dir.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # sees it unmarked and not empty
        staging.mkdir()
        mark_run_dir(staging)
        try:
            os.rename(staging, run_dir)
        except OSError:  # another shard's folder took the name first
            shutil.rmtree(staging, ignore_errors=True)
    if not is_run_dir(run_dir) and any(run_dir.iterdir()):
        raise CxrganError(f"{run_dir}: exists and is not a cxrgan run directory; move it away or choose another --out")
    mark_run_dir(run_dir)
    return run_dir


def mark_run_dir(folder: Path) -> None:
    """Mark ``folder`` as made by cxrgan (see ``RUN_MARKER``); a no-op when it is marked."""
    create_exclusive(Path(folder) / RUN_MARKER, json.dumps({"made_by": "cxrgan"}) + "\n")


def is_run_dir(folder: str | Path) -> bool:
    """Whether cxrgan made ``folder`` or a folder holding it: it (or a parent) holds ``RUN_MARKER``, or, for folders
    written before the marker existed (or copied without hidden files), a ``config.json`` of exactly cxrgan's shape
    (an object with a text ``kind``, a ``config`` object and optionally ``inputs``, nothing else), or an
    ``audit.json`` naming its ``generator_run``."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / RUN_MARKER).is_file() or _legacy_run_dir(candidate):
            return True
    return False


def _legacy_run_dir(folder: Path) -> bool:
    for name, looks_like_ours in (("config.json", _is_legacy_config), ("audit.json", _is_legacy_audit)):
        path = folder / name
        if path.is_file():
            try:
                if looks_like_ours(read_json(path)):
                    return True
            except (CxrganError, OSError):
                continue
    return False


def _is_legacy_config(record: dict) -> bool:
    return ({"kind", "config"} <= set(record) <= {"kind", "config", "inputs"} and isinstance(record["kind"], str)
            and isinstance(record["config"], dict))


def _is_legacy_audit(record: dict) -> bool:
    return isinstance(record.get("generator_run"), str)


def check_own_folder(folder: str | Path, what: str) -> Path:
    """``folder`` when cxrgan made it (``is_run_dir``); else one line saying that ``what`` writes only into its own run
    directories, so no file of a user's folder is ever replaced."""
    folder = Path(folder)
    if not folder.exists():
        raise CxrganError(f"{folder}: no such run directory")
    if not folder.is_dir():
        raise CxrganError(f"{folder}: is a file, not a run directory")
    if not is_run_dir(folder):
        raise CxrganError(f"{folder}: not a cxrgan run directory (no {RUN_MARKER} marker or cxrgan config.json); "
                          f"{what} writes only into folders cxrgan made")
    return folder


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
    """Scientific differences between two config dicts as ``field: old -> new``; cosmetic fields, grown lists and
    raised counts (see ``COSMETIC_FIELDS``, ``GROWABLE_FIELDS``, ``GROWABLE_COUNTS``) are allowed and not listed."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    changes = []
    for key in sorted(set(flat_old) | set(flat_new)):
        before, after = flat_old.get(key, "<absent>"), flat_new.get(key, "<absent>")
        leaf = key.rsplit(".", 1)[-1]
        if before == after or leaf in COSMETIC_FIELDS:
            continue
        if leaf in GROWABLE_FIELDS and isinstance(before, list) and isinstance(after, list) and set(before) <= set(after):
            continue
        target = f"{key[:-len(leaf)]}target_mde"
        if (leaf in GROWABLE_COUNTS and isinstance(before, int) and isinstance(after, int) and after >= before
                and flat_old.get(target) is None and flat_new.get(target) is None):
            continue
        changes.append(f"{key}: {before!r} -> {after!r}")
    return changes


def input_files(values: dict) -> list[str]:
    """The input files a config names (fields in ``INPUT_FIELDS``), in field order."""
    files = []
    for key, value in _flatten(values).items():
        if key.rsplit(".", 1)[-1] in INPUT_FIELDS:
            files += [str(v) for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v]
    return list(dict.fromkeys(files))


def input_fingerprints(values: dict) -> dict[str, str]:
    """Path -> content fingerprint (:func:`cxrgan.io.fingerprint`) of every existing input file a config names."""
    return {path: fingerprint(path) for path in input_files(values) if Path(path).exists()}


def run_record(config: Any, kind: str) -> dict:
    """What ``config.json`` holds: the run's kind, its resolved config and its input files' fingerprints."""
    values = config_dict(config)
    return {"kind": kind, "config": values, "inputs": input_fingerprints(values)}


def write_config(run_dir: Path, config: Any, kind: str) -> None:
    """Write ``config.json``; on resume, refuse a config that differs in a scientific setting or an input file.

    Cosmetic settings (progress bars, device) may change, and a run may add methods (rows) to its ``methods``,
    keeping every earlier one; the file then holds the newest config. Any other change is refused with the field
    names and both values, and an input file whose content changed is refused by name (:func:`check_config`). A
    setting added to the config class since the run began counts as having had its default value. The first writer
    creates the file exclusively, so processes starting one shared run together (shards) never overwrite each
    other's settings unchecked.
    """
    record = run_record(config, kind)
    path = Path(run_dir) / "config.json"
    if create_exclusive(path, _json_text(record)):
        return
    existing = check_config(run_dir, config, kind, record)
    kept = {key: value for key, value in existing.items() if key not in record}  # e.g. a target run's rounds
    if {key: value for key, value in existing.items() if key in record} != record:
        if "inputs" not in existing:
            print(f"cxrgan: note: {path} was written before cxrgan kept input fingerprints: the input files could not "
                  "be checked against those the run began with; they are recorded from now on", file=sys.stderr)
        write_json(path, {**record, **kept})


def check_config(run_dir: str | Path, config: Any, kind: str, record: dict | None = None) -> dict:
    """Refuse to continue ``run_dir`` with ``config``: another kind of run, a changed scientific setting, or an input
    file whose content differs from the run's (named). Returns the stored record. Writes nothing.

    A run written before fingerprints were kept has none to compare: it is accepted (``write_config`` says so)."""
    record = record if record is not None else run_record(config, kind)
    path = Path(run_dir) / "config.json"
    existing = read_json(path, remedy="restore it from a copy or start a new run")
    if existing.get("kind") != kind:
        raise CxrganError(f"{run_dir}: is a {existing.get('kind')!r} run, cannot resume it as {kind!r}")
    if not isinstance(existing.get("config"), dict):
        raise CxrganError(f"{path}: holds no 'config' object; not a cxrgan run config")
    changes = config_changes(_with_defaults(existing["config"], config), record["config"])
    if changes:
        raise CxrganError(f"{path}: this run was started with other settings ({'; '.join(changes)}); resume "
                          "with the same flags (more --methods or --seeds may be added) or start a new run")
    changed_inputs(path, existing.get("inputs"), record["inputs"], raise_on_change=True)
    return existing


def changed_inputs(path: Path, recorded: dict | None, current: dict[str, str], raise_on_change: bool = False) -> list[str]:
    """The input files whose fingerprint differs from the one recorded in ``path`` (a config.json); with
    ``raise_on_change`` the first is refused in one line naming it. Files the record does not hold are not compared."""
    changed = [name for name, value in current.items() if isinstance(recorded, dict) and name in recorded
               and recorded[name] != value]
    if changed and raise_on_change:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise CxrganError(f"{changed[0]}: this input file changed since the run began (its content fingerprint differs "
                          f"from the one in {path}){more}; use the files the run was started with, or start a new run")
    return changed


def check_inputs(run_dir: str | Path) -> None:
    """Refuse to rebuild a run whose input files changed since it began (``cxrgan report``); a run written before
    fingerprints were kept is not checked."""
    path = Path(run_dir) / "config.json"
    record = read_json(path, remedy="restore it from a copy or start a new run")
    recorded = record.get("inputs")
    if isinstance(recorded, dict):
        current = {name: fingerprint(name) for name in recorded if Path(name).exists()}
        changed_inputs(path, recorded, current, raise_on_change=True)


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
    if not path.is_file():
        raise CxrganError(f"{run_dir}: not a cxrgan run directory (no config.json)")
    record = read_json(path, remedy="restore it from a copy or start a new run")
    if kind is not None and record.get("kind") != kind:
        raise CxrganError(f"{run_dir}: is a {record.get('kind')!r} run, expected {kind!r}")
    if not isinstance(record.get("config"), dict):
        raise CxrganError(f"{path}: holds no 'config' object; not a cxrgan run config")
    return record["config"]


def config_data_file(config: dict) -> str | None:
    """The one data file a run's config (``read_config``) names: its run spec's (configs since ``RunSpec``), else
    the top-level ``data`` / ``data_path`` of older configs and generator runs; None when it names none or several."""
    spec = config.get("run")
    data = spec.get("data") if isinstance(spec, dict) else config.get("data") or config.get("data_path")
    if isinstance(data, list):
        data = data[0] if len(data) == 1 else None
    return data if isinstance(data, str) else None


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
