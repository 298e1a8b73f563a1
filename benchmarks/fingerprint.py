"""What fingerprinting an input file costs on a resume or a report: cxrgan's content fingerprint
(``cxrgan.io.fingerprint``: zip directory with every member's CRC-32, small members whole, sampled blocks of the
images) against a full streaming SHA-256, on a CheXpert-size compact file (224,316 images at 224 px, 11.3 GB,
uncompressed as ``cxrgan data prepare`` writes it). The file's pages are dropped from the page cache before each
first run (``posix_fadvise``, this file only), so the first figure of each is a cold read.

    python benchmarks/fingerprint.py --folder /big/disk [--rows 224316] [--size 224] [--keep]

Writes the file into ``--folder`` (it needs rows x size^2 bytes free), prints the times, and deletes it unless
``--keep``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import zipfile
from pathlib import Path

import numpy as np

from cxrgan.io import fingerprint


def write_compact(path: Path, rows: int, size: int) -> None:
    """An uncompressed compact file of ``rows`` random images (every 1000-image block distinct) and its label table."""
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=(1000, size, size), dtype=np.uint8)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "|u1", "fortran_order": False,
                                                          "shape": (rows, size, size)})
            for start in range(0, rows, 1000):
                block[0, 0, :8] = np.frombuffer(start.to_bytes(8, "little"), np.uint8)
                member.write(memoryview(block[:min(1000, rows - start)]).cast("B"))
        arrays = {"labels": rng.integers(0, 2, rows).astype(np.int8), "label_names": np.array(["normal", "abnormal"]),
                  "split": np.array(["train", "val", "test"])[rng.integers(0, 3, rows)],
                  "patient_id": np.array([f"patient{i // 3:05d}" for i in range(rows)]),
                  "findings": rng.integers(-1, 2, (rows, 14)).astype(np.float32),
                  "path": np.array([f"CheXpert-v1.0/train/patient{i // 3:05d}/study1/view1_frontal.jpg"
                                    for i in range(rows)])}
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def full_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(16 << 20):
            digest.update(block)
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", required=True, help="where to write the test file")
    parser.add_argument("--rows", type=int, default=224_316)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    path = Path(args.folder) / "fingerprint_benchmark.npz"
    if not path.exists():
        write_compact(path, args.rows, args.size)
    try:
        gigabytes = path.stat().st_size / 1e9
        for label, measure in (("cxrgan fingerprint", fingerprint), ("full streaming SHA-256", full_sha256)):
            drop_cache(path)
            started = time.perf_counter()
            measure(path)
            cold = time.perf_counter() - started
            started = time.perf_counter()
            measure(path)
            print(f"{label}: {cold:.2f} s from a cold cache, {time.perf_counter() - started:.2f} s again "
                  f"({gigabytes:.2f} GB file)", flush=True)
    finally:
        if not args.keep:
            path.unlink()


if __name__ == "__main__":
    main()
