"""Run ``cxrgan data prepare`` on a CSV layout and one epoch of training-batch loading from the result, under a
hard limit on this process's private memory, and print what it measured as one JSON line.

The limit is ``RLIMIT_DATA`` (Linux >= 4.7: private writable mappings, heap included; a read-only memory map of a
file is page cache and does not count), set at the start of each phase (prepare, loading, the control) to the
memory then in use plus ``--budget-mb``: holding the image set, or any split of it, in memory fails with MemoryError, which the run checks at the end by trying
(``control_memory_error``). Peak RSS (``VmHWM``, reset after the imports; it also counts the file pages a memory
map has touched) and the peak of private resident memory (``RssAnon``, sampled every 5 ms) are reported beside
their values after the imports.

    python tests/_memory_probe.py CSV OUT.npz --size 320 --budget-mb 64
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
from pathlib import Path

import numpy as np
import torch

import cxrgan.data.loader  # noqa: F401  (imported before the limit: imports are not what is measured)
import cxrgan.data.streamed  # noqa: F401
from cxrgan.cli import build_parser, main
from cxrgan.data import load_npz
from cxrgan.data.loader import batch_loader


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class PeakSampler(threading.Thread):
    """Largest private resident memory (RssAnon) seen while running."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak_kb, self.running = status_kb("RssAnon"), True

    def run(self) -> None:
        while self.running:
            self.peak_kb = max(self.peak_kb, status_kb("RssAnon"))
            time.sleep(0.005)


def limit_data(budget_mb: int) -> None:
    """Cap this process's private data (RLIMIT_DATA) at what it holds now plus ``budget_mb``."""
    limit = (status_kb("VmData") + budget_mb * 1024) * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))


def epoch_loading(path: Path, batch_size: int, workers: int) -> dict:
    """Every training row once, in random batches, through the training loop's loader (data loading alone), read
    by this process (``workers`` = 0) or by worker processes (forked: they inherit the memory limit)."""
    train = load_npz(path, target="findings").split("train")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0)).numpy()
    batches = [np.sort(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    started, checksum = time.perf_counter(), 0
    for images, labels in batch_loader(train.images, train.labels, batches, workers=workers):
        checksum += int(images[:, ::16, ::16].sum())  # touch the batch as a training step would
    seconds = time.perf_counter() - started
    return {"train_rows": len(train), f"load_{workers}_workers_seconds": round(seconds, 2),
            f"load_{workers}_workers_images_per_s": round(len(train) / seconds, 1),
            "lazy": isinstance(train.images, np.memmap)}


def run() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--budget-mb", type=int, default=64)
    parser.add_argument("--decoders", type=int, default=2)
    parser.add_argument("--data-workers", type=int, default=2)
    args = parser.parse_args()
    build_parser()  # imports every command's modules, as `cxrgan` does before running one
    sampler = PeakSampler()
    sampler.start()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    baseline_kb, rss_kb, private_kb = status_kb("VmData"), status_kb("VmRSS"), status_kb("RssAnon")
    limit_data(args.budget_mb)
    started = time.perf_counter()
    code = main(["data", "prepare", args.csv, "--size", str(args.size), "--out", args.out,
                 "--workers", str(args.decoders)])
    prepare_seconds = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"prepare failed with exit code {code}")
    with np.load(args.out, mmap_mode="r") as archive:
        n_images = len(archive["split"])
    # Each phase gets the budget on top of what the process holds when it starts: the prepare's decoder threads
    # leave malloc arenas mapped (counted by RLIMIT_DATA, mostly not resident), and forked loader workers inherit
    # the parent's mappings, so a limit fixed before the prepare would make the workers' headroom depend on them.
    limit_data(args.budget_mb)
    loading = epoch_loading(Path(args.out), 64, 0)
    limit_data(args.budget_mb)
    loading.update(epoch_loading(Path(args.out), 64, args.data_workers))
    limit_data(args.budget_mb)
    sampler.running = False
    sampler.join()
    try:  # the control: the old way, every image in memory, must not fit in the budget
        np.array(load_npz(args.out, target="findings").images)
        control = False
    except MemoryError:
        control = True
    print(json.dumps({
        "images": n_images, "size": args.size, "file_mb": round(Path(args.out).stat().st_size / 2**20, 1),
        "budget_mb": args.budget_mb, "private_baseline_mb": round(baseline_kb / 1024, 1),
        "prepare_seconds": round(prepare_seconds, 2), "prepare_images_per_s": round(n_images / prepare_seconds, 1),
        **loading,
        "rss_after_imports_mb": round(rss_kb / 1024, 1), "peak_rss_mb": round(status_kb("VmHWM") / 1024, 1),
        "private_rss_after_imports_mb": round(private_kb / 1024, 1),
        "peak_private_rss_mb": round(sampler.peak_kb / 1024, 1), "control_memory_error": control,
    }))


if __name__ == "__main__":
    run()
