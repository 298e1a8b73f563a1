"""Write a compact file from image files without ever holding the images: decode them in parallel, chunk by chunk,
into a resumable work file, then copy that into the uncompressed (memory-mappable) .npz.

Rows are stored split by split (train, val, test, each in source order), so a split of the finished file is a
contiguous run of rows that ``CXRDataset.split`` keeps on disk. The work file is ``.<out>.partial.npy`` beside
the output, with ``.<out>.partial.json`` recording how many rows are decoded: a killed run continues where it
stopped when started again with the same source and size. Peak memory is one chunk of images (about
:data:`CHUNK_BYTES`) plus the labels and metadata, whatever the number of images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cxrgan.data.dataset import SourceRows
from cxrgan.data.images import load_square
from cxrgan.data.npz import label_arrays
from cxrgan.errors import CxrganError
from cxrgan.io import atomic_write, write_json

CHUNK_BYTES = 16 << 20  # decoded pixels held at a time (and written per step of the work file)
COPY_BYTES = 16 << 20  # block size of the copy into the .npz


def write_streamed(rows: SourceRows, size: int, out: str | os.PathLike, workers: int = 1,
                   progress: bool = True, split_method: str | None = None) -> Path:
    """Decode every image of ``rows`` to ``size`` x ``size`` and write the compact file ``out`` (atomically).

    Args:
        rows: the dataset's rows (``cxrgan.data.nih.nih_rows``, ``cxrgan.data.chexpert.chexpert_rows``).
        size: output side in pixels (centre crop + area resize).
        out: the .npz to write.
        workers: decoding threads (Pillow releases the GIL while decoding and resizing).
        progress: show a progress bar and print the throughput.
        split_method: how the rows' split was made, recorded in the file (``cxrgan.data.leakage.SPLIT_METHODS``).
    """
    if workers < 1:
        raise CxrganError(f"workers must be at least 1, got {workers}")
    out = Path(out)
    rows = rows.grouped_by_split()
    work, state_path = out.with_name(f".{out.name}.partial.npy"), out.with_name(f".{out.name}.partial.json")
    shape = (len(rows), size, size)
    fingerprint = _fingerprint(rows, size)
    done = _resume_point(work, state_path, fingerprint, shape)
    if done is None:
        np.lib.format.open_memmap(work, mode="w+", dtype=np.uint8, shape=shape).flush()  # header + sparse body
        done = 0
        write_json(state_path, {"fingerprint": fingerprint, "rows_done": 0, "rows": len(rows)})
    started, first = time.perf_counter(), done
    _decode_into(work, rows, size, done, workers, state_path, fingerprint, progress)
    if progress and len(rows) > first:
        seconds = time.perf_counter() - started
        print(f"decoded {len(rows) - first} images in {seconds:.1f} s ({(len(rows) - first) / seconds:.0f} images/s, "
              f"{workers} thread(s))", flush=True)
    meta = rows.stand_in().meta  # the metadata as a dataset normalises it (synthetic, view, ... columns)
    arrays = label_arrays(rows.labels, rows.label_names, rows.class_names, meta, rows.raw_findings, split_method)
    atomic_write(out, lambda tmp: _write_npz(tmp, work, arrays))
    work.unlink()
    state_path.unlink()
    return out


def _fingerprint(rows: SourceRows, size: int) -> str:
    digest = hashlib.sha1(f"{size}\n".encode())
    for path in rows.paths:
        digest.update(f"{path}\n".encode())
    return digest.hexdigest()


def _resume_point(work: Path, state_path: Path, fingerprint: str, shape: tuple[int, int, int]) -> int | None:
    """Rows already decoded by an interrupted run of the same source and size, or None to start afresh."""
    if not (work.exists() and state_path.exists()):
        return None
    try:
        state = json.loads(state_path.read_text())
        header_shape = np.load(work, mmap_mode="r").shape
    except (ValueError, OSError):
        return None
    if state.get("fingerprint") != fingerprint or tuple(header_shape) != shape:
        return None
    return int(state.get("rows_done", 0))


def _decode_into(work: Path, rows: SourceRows, size: int, start: int, workers: int, state_path: Path,
                 fingerprint: str, progress: bool) -> None:
    """Decode rows ``start``.. into the work file, recording each finished chunk."""
    data_offset = np.load(work, mmap_mode="r").offset  # the .npy header's length
    chunk = max(1, CHUNK_BYTES // (size * size))
    buffer = np.empty((chunk, size, size), np.uint8)
    bar = tqdm(total=len(rows), initial=start, desc="decoding", unit="img", disable=not progress, smoothing=0.05)
    fd = os.open(work, os.O_RDWR)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for first in range(start, len(rows), chunk):
            paths = rows.paths[first:first + chunk]
            for i, image in enumerate(pool.map(lambda p: load_square(p, size), paths)):
                buffer[i] = image
            _pwrite_all(fd, memoryview(buffer[:len(paths)]).cast("B"), data_offset + first * size * size)
            write_json(state_path, {"fingerprint": fingerprint, "rows_done": first + len(paths), "rows": len(rows)})
            bar.update(len(paths))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        os.close(fd)
        bar.close()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def _write_npz(tmp: str, work: Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed .npz: ``images.npy`` copied block by block from the work file, then the small arrays."""
    total = work.stat().st_size
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("images.npy", "w", force_zip64=total > zipfile.ZIP64_LIMIT) as member, open(work, "rb") as f:
            block = bytearray(COPY_BYTES)
            while n := f.readinto(block):
                member.write(memoryview(block)[:n])
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
