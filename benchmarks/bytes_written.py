"""Benchmark: bytes a small comparison writes to disk (issue 25: checkpoint writes).

Runs ``cxrgan compare`` in this process on the README command's data (Kermany 64 px made 3:1), by default 2 methods
x 2 seeds x 2 epochs with the CLI's default checkpoint cadence, into a fresh directory on the disk holding
``--dir``, and prints what the process wrote: ``write_bytes`` of ``/proc/self/io`` (bytes sent to the block layer,
what ``/usr/bin/time -v`` reports as "File system outputs" x 512), the same less ``cancelled_write_bytes`` (dirty pages
of files deleted before they reached the disk, such as a finished cell's checkpoint), and ``wchar`` (bytes passed to
write calls, on any file system). Target: < 600 MB. Linux only (``/proc``). Flags after ``--`` go to the command:

    python benchmarks/bytes_written.py [--dir .] [-- --checkpoint-epochs 1]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KERMANY = DEFAULT_DATA / "kermany_pneumonia" / "kermany_pneumonia_64.npz"
SMALL_RUN = ["--imbalance", "3:1", "--methods", "none,oversample", "--seeds", "2", "--epochs", "2", "--no-progress"]


def process_io() -> dict[str, int]:
    """This process's I/O counters (``/proc/self/io``)."""
    lines = Path("/proc/self/io").read_text().splitlines()
    return {key: int(value) for key, value in (line.split(": ") for line in lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(KERMANY))
    parser.add_argument("--dir", default=".", help="the run directory is made in a fresh folder here (on a disk: "
                                                   "tmpfs writes reach no block device and count as 0)")
    parser.add_argument("extra", nargs="*", help="more flags for cxrgan compare (after --)")
    args = parser.parse_args()

    from cxrgan.cli import main as cxrgan_main

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bytes-written-") as out:
        argv = ["compare", args.data, *SMALL_RUN, *args.extra, "--out", out]
        os.sync()  # earlier writes of this process (none expected) are not counted as this run's
        before, started = process_io(), time.perf_counter()
        code = cxrgan_main(argv)
        os.sync()
        after, wall = process_io(), time.perf_counter() - started
        stored = sum(f.stat().st_size for f in Path(out).rglob("*") if f.is_file())
    if code:
        sys.exit(code)
    written = {key: after[key] - before[key] for key in ("write_bytes", "cancelled_write_bytes", "wchar")}
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512  # data-reading processes, if any
    print(f"command: cxrgan {' '.join(argv[:-2])} --out DIR ({wall:.0f} s)")
    print(f"  written to the block layer (write_bytes; time -v 'File system outputs' x 512): "
          f"{written['write_bytes'] / 1e6:.1f} MB; less cancelled writes of deleted files: "
          f"{(written['write_bytes'] - written['cancelled_write_bytes']) / 1e6:.1f} MB")
    print(f"  passed to write calls (wchar): {written['wchar'] / 1e6:.1f} MB; child processes: {children / 1e6:.1f} MB")
    print(f"  left in the run directory: {stored / 1e6:.1f} MB")
    print(f"bytes written {written['write_bytes'] / 1e6:.1f} MB (target < 600 MB)")


if __name__ == "__main__":
    main()
