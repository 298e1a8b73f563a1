"""How far the pinned generator training curves (``tests/pinned_curves.json``) move on this CPU, and between one and
two torch threads on it: the figures behind the cross-machine tolerance of ``tests/test_generators_pinned.py``.

The curves were recorded with one torch thread on an AMD CPU. Kernels differ by instruction set (AVX2 on one CPU,
AVX-512 / AMX on another) and by thread count in the order of their floating-point sums, so a value can move in its
last digits and the difference grows over the training steps. For every pinned generator this prints, over every
per-step statistic and final weight sum, the largest ``|got - pinned| / max(|pinned|, 1)`` (the smallest
``rel = abs`` tolerance of ``pytest.approx`` that accepts the run):

* ``this CPU, 1 thread vs pinned``: what a fresh machine of another CPU family sees;
* ``2 threads vs 1 thread``: the same machine with another thread count.

    python benchmarks/pinned_drift.py
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from generator_contract import small_train_split  # noqa: E402
from test_generators_pinned import CASES, PINNED, model_values, pinned_values  # noqa: E402

from cxrgan.data import CXRDataset, load_npz  # noqa: E402
from cxrgan.recipes import KERMANY_64  # noqa: E402


def kermany_small() -> CXRDataset:
    """The tests' ``kermany_small`` fixture (conftest.py): 240 real images, 1:3 normal : pneumonia."""
    kermany = load_npz(KERMANY_64)
    rng = np.random.default_rng(0)
    parts = []
    for split_name, n in (("train", 160), ("val", 40), ("test", 40)):
        part = kermany.split(split_name)
        y = part.binary_targets()
        idx = np.concatenate([rng.choice(np.flatnonzero(y == 0), n // 4, replace=False),
                              rng.choice(np.flatnonzero(y == 1), 3 * n // 4, replace=False)])
        parts.append(part.subset(np.sort(idx)))
    return CXRDataset.concat(parts)


def drift(got: dict[str, float], reference: dict[str, float]) -> tuple[float, str]:
    """The largest ``|got - reference| / max(|reference|, 1)`` and the value it occurs at."""
    worst = max(reference, key=lambda k: abs(got[k] - reference[k]) / max(abs(reference[k]), 1.0))
    return abs(got[worst] - reference[worst]) / max(abs(reference[worst]), 1.0), worst


def main() -> None:
    train = small_train_split(kermany_small())
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    print(f"CPU: {cpu}; torch {torch.__version__}")
    for name in sorted(CASES):
        runs = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs[threads] = model_values(CASES[name]().fit(train), PINNED[name])
        pinned = pinned_values(PINNED[name])
        cross, where = drift(runs[1], pinned)
        threads, where2 = drift(runs[2], runs[1])
        print(f"{name:9s} {len(PINNED[name]['steps']):3d} steps  this CPU, 1 thread vs pinned: {cross:.2e} ({where})  "
              f"2 threads vs 1 thread: {threads:.2e} ({where2})")


if __name__ == "__main__":
    main()
