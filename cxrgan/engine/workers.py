"""``--workers N``: the cells of one run directory spread over N local processes, each with a slice of the CPU cores
or one GPU; every worker takes the next cell nobody has claimed (``cxrgan run-cells``), so the fastest finish first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cxrgan.errors import CxrganError

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def worker_environment(index: int, count: int, base: dict[str, str] | None = None,
                       device: str = "auto") -> dict[str, str]:
    """The environment of worker ``index`` (0-based) of ``count``: its share of the cores as its thread count
    (unless the user set one), and one GPU of the visible ones (round robin) when there are GPUs; a ``device``
    naming one GPU (``cuda:N``) leaves every GPU visible, so each worker's ``cuda:N`` is that GPU."""
    env = dict(os.environ if base is None else base)
    threads = str(max(1, (os.cpu_count() or 1) // count))
    for name in THREAD_VARIABLES:
        env.setdefault(name, threads)
    if device.startswith("cuda:"):
        return env
    gpus = _visible_gpus(env)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def _visible_gpus(env: dict[str, str]) -> list[str]:
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


def run_with_workers(run_dir: Path, count: int, progress: bool, device: str = "auto") -> None:
    """Start ``count`` worker processes on ``run_dir`` (prepared by the caller) and wait for all of them (``device``:
    the run's ``--device``, see :func:`worker_environment`)."""
    commands = [[sys.executable, "-m", "cxrgan", "run-cells", str(run_dir), "--worker", f"{i + 1}/{count}",
                 *([] if progress else ["--no-progress"])] for i in range(count)]
    print(f"{run_dir}: {count} worker processes", flush=True)
    processes = [subprocess.Popen(command, env=worker_environment(i, count, device=device))
                 for i, command in enumerate(commands)]
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:  # the workers got the same interrupt; let them stop
        for process in processes:
            process.wait()
        raise
    failed = [(i + 1, code) for i, code in enumerate(codes) if code != 0]
    if failed:
        raise CxrganError(f"worker(s) {', '.join(f'{i}/{count} (exit code {code})' for i, code in failed)} "
                          f"stopped; see their messages above; continue with --resume {run_dir}")
