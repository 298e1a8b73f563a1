"""Atomic file writes, so an interrupted run never leaves a half-written file that looks complete, and the one reader
of a run's JSON files, which turns a damaged file into an error naming it."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable

from cxrgan.errors import CxrganError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` in one rename.

    The temporary file lives in the destination folder so the rename never crosses file systems. Its name carries
    the writer's process id, so temporary files of this path left by a killed process (``kill -9`` skips every
    cleanup) are recognised and removed by the next write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        follow_umask(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # name the file the user knows, not the temporary
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    return path


def follow_umask(path: str | os.PathLike) -> None:
    """Give a file made by ``mkstemp`` (mode 0600) the mode of an ordinary new file: 0666 minus the umask, so other
    accounts of a shared cluster file system read run files as they read the user's other files."""
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    try:  # Linux: read it without changing it (setting it briefly would race with other threads creating files)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it; restored at once
    os.umask(mask)
    return mask


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete ``.{name}.{pid}.*.tmp`` files of ``path`` whose writing process no longer exists; return them."""
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = candidate.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not process_exists(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def create_exclusive(path: str | os.PathLike, text: str) -> bool:
    """Create ``path`` holding ``text`` unless it exists; True when this call created it.

    The text is written to a temporary file first and linked into place: ``link`` fails when the name exists and
    is atomic on local and network file systems, so no process ever sees the file empty or half written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        follow_umask(tmp)
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> Path:
    def _write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, _write)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line with a single write; a line cut short by a killed writer is dropped first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    _drop_partial_last_line(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _drop_partial_last_line(path: Path) -> None:
    """Truncate a JSONL file after its last newline (a process killed inside a write leaves a partial line)."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def read_jsonl(path: str | os.PathLike, remedy: str = "") -> list[dict]:
    """The records (JSON objects) of a JSONL file; a last line without its newline (a write cut short by a kill) is
    ignored. A damaged line is an error naming the file and the line; ``remedy`` is appended to its message."""
    path = Path(path)
    if not path.exists():
        return []
    text = _read_text(path, remedy)
    lines = text.split("\n")
    complete = lines if text.endswith("\n") else lines[:-1]
    records = []
    for number, line in enumerate(complete, 1):
        line = line.strip()
        if line:
            records.append(_parse_object(line, f"{path}, line {number}", remedy))
    return records


def read_json(path: str | os.PathLike, remedy: str = "") -> dict:
    """The JSON object in ``path``: a file that is not valid UTF-8 JSON, or holds no object, is an error naming it
    (``remedy``, e.g. how to re-run what wrote it, is appended to the message)."""
    path = Path(path)
    return _parse_object(_read_text(path, remedy), str(path), remedy)


def _read_text(path: Path, remedy: str) -> str:
    if path.is_dir():
        raise CxrganError(f"{path}: is a folder, not a file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CxrganError(f"{path}: not a text file ({exc.reason} at byte {exc.start}){_suffix(remedy)}") from None


def _parse_object(text: str, where: str, remedy: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CxrganError(f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
                          f"{_suffix(remedy)}") from None
    except RecursionError:
        raise CxrganError(f"{where}: JSON nested too deeply{_suffix(remedy)}") from None
    if not isinstance(value, dict):
        raise CxrganError(f"{where}: holds a JSON {type(value).__name__}, not an object{_suffix(remedy)}")
    return value


def _suffix(remedy: str) -> str:
    return f"; {remedy}" if remedy else ""


def save_torch(path: str | os.PathLike, obj: dict) -> Path:
    """``torch.save`` through a Python file object, atomically: a failed write (a full disk) raises ``OSError``
    naming ``path`` (given a file name, torch reports it as a ``RuntimeError`` of its C++ writer)."""
    import torch

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            try:
                torch.save(obj, f)
            except RuntimeError as exc:  # torch's writer, closing after a failed write, reports its own state
                cause = exc.__context__
                while cause is not None and not isinstance(cause, OSError):
                    cause = cause.__context__
                if cause is None:
                    raise
                raise cause from None

    return atomic_write(path, _write)


def load_torch(path: str | os.PathLike, what: str, remedy: str = "") -> dict:
    """The dict a ``torch.save`` file holds, loaded with ``weights_only=True``: a missing, damaged or truncated file,
    one holding Python objects beyond tensors and plain values (a pickle that could run code: never run), or one
    holding no dict is an error naming the file and ``what`` it should be; ``remedy`` is appended to the message."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    if path.is_dir():
        raise CxrganError(f"{path}: is a folder, not a {what}")
    if not path.exists():
        raise CxrganError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing
            value = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # its text is many lines; the last but one says what was refused
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-2][:160] if len(lines) >= 2 else type(exc).__name__
        raise CxrganError(f"{path}: not a readable {what} (refused by torch's weights-only loader: {reason}; a "
                          "damaged file, or Python objects beyond tensors and plain values, which cxrgan never loads)"
                          f"{_suffix(remedy)}") from None
    except Exception as exc:  # torch reports damage as RuntimeError, KeyError, EOFError, ... of its readers
        reason = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise CxrganError(f"{path}: not a readable {what} ({type(exc).__name__}: {reason}){_suffix(remedy)}") from None
    if not isinstance(value, dict):
        raise CxrganError(f"{path}: holds a {type(value).__name__}, not a {what} (a dict of tensors){_suffix(remedy)}")
    return value


def usable_or_discarded(path: str | os.PathLike, what: str) -> bool:
    """Whether the transient ``torch.save`` file ``path`` (a checkpoint to resume from) exists and loads. A damaged or
    hostile one is deleted with a one-line warning, so the work it held starts again instead of failing every
    resume."""
    if not Path(path).exists():
        return False
    try:
        load_torch(path, what)
    except CxrganError as exc:
        import sys

        print(f"cxrgan: warning: {exc}; discarded, its work starts again", file=sys.stderr, flush=True)
        Path(path).unlink(missing_ok=True)
        return False
    return True


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


# ---- input fingerprints ------------------------------------------------------------------------------------------
WHOLE_HASH_BYTES = 64 << 20  # files (and .npz members) up to this size are hashed whole
SAMPLED_BLOCKS = 512  # blocks hashed at evenly spaced offsets of a larger file or member
BLOCK_BYTES = 64 << 10


def fingerprint(path: str | os.PathLike) -> str:
    """A content fingerprint of an input file or folder, cheap on large files.

    * A file up to :data:`WHOLE_HASH_BYTES`: SHA-256 of its bytes.
    * A larger ``.npz`` (zip): its size, its zip directory (every member's name, sizes and CRC-32, which every
      writer of the file updates), every member up to :data:`WHOLE_HASH_BYTES` whole (labels, splits, patient ids),
      and :data:`SAMPLED_BLOCKS` blocks of each larger member (the images) with its ``.npy`` header.
    * Any other larger file: its size, first and last MiB and the sampled blocks.
    * A folder (a CSV layout's image tree): every file's relative path and size, and the fingerprint of each CSV
      directly in it (the label tables).

    A change to the labels, splits or ids of a compact file, any rewrite of it, or an edit in place of a sampled
    block changes the fingerprint; an edit in place of unsampled image bytes of a file above 64 MiB does not.
    """
    path = Path(path)
    if path.is_dir():
        digest = hashlib.sha256(b"folder\n")
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{child.relative_to(path).as_posix()}\0{child.stat().st_size}\n".encode())
        for table in sorted(path.glob("*.csv")):
            digest.update(f"{table.name}\0{fingerprint(table)}\n".encode())
        return f"folder-sha256:{digest.hexdigest()}"
    size = path.stat().st_size
    digest = hashlib.sha256(f"{size}\n".encode())
    with open(path, "rb") as f:
        if size <= WHOLE_HASH_BYTES:
            _hash_range(f, 0, size, digest)
            return f"sha256:{digest.hexdigest()}"
        if zipfile.is_zipfile(f):
            _hash_zip(f, digest)
        else:
            _hash_sampled(f, 0, size, digest)
    return f"sampled-sha256:{digest.hexdigest()}"


def _hash_range(f, start: int, length: int, digest) -> None:
    f.seek(start)
    while length > 0:
        block = f.read(min(length, 16 << 20))
        if not block:
            break
        digest.update(block)
        length -= len(block)


def _hash_sampled(f, start: int, length: int, digest) -> None:
    """The first and last MiB of ``f[start:start + length]`` and evenly spaced blocks between them."""
    edge = min(length, 1 << 20)
    _hash_range(f, start, edge, digest)
    _hash_range(f, start + length - edge, edge, digest)
    span = max(0, length - BLOCK_BYTES)
    for i in range(SAMPLED_BLOCKS):
        _hash_range(f, start + span * i // (SAMPLED_BLOCKS - 1), min(BLOCK_BYTES, length), digest)


def _hash_zip(f, digest) -> None:
    with zipfile.ZipFile(f) as archive:
        for info in archive.infolist():
            digest.update(f"{info.filename}\0{info.compress_type}\0{info.file_size}\0{info.compress_size}\0"
                          f"{info.CRC}\0{info.header_offset}\n".encode())
            start = info.header_offset  # the member's bytes as stored: its local header, .npy header and data
            length = zip_data_offset(f, info) - start + info.compress_size
            if length <= WHOLE_HASH_BYTES:
                _hash_range(f, start, length, digest)
            else:
                _hash_sampled(f, start, length, digest)


def zip_data_offset(f, info: zipfile.ZipInfo) -> int:
    """Offset in the open zip file ``f`` of the first byte of member ``info``'s stored data (after its local header,
    whose extra field may differ in length from the central directory's)."""
    f.seek(info.header_offset)
    local_header = f.read(30)
    if len(local_header) < 30 or local_header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"member {info.filename!r}: no local header at offset {info.header_offset}")
    name_length = int.from_bytes(local_header[26:28], "little")
    extra_length = int.from_bytes(local_header[28:30], "little")
    return info.header_offset + 30 + name_length + extra_length
