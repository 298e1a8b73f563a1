"""Benchmark: false-positive rate of each "method vs baseline" test when both arms are the same method (``none``).

Trains ``none`` with a small fast model for --seeds seeds through ``cxrgan compare`` (or reuses the ``none`` runs of
an existing run directory with --run-dir), splits the seeds into two arms of equal size in every distinct way, tests
arm A against arm B, and prints the share of splits each test calls significant at 0.05. The primary seed-level
test must stay at or below 0.05 (issue: p >= 0.05 in at least 90 % of the null comparisons); DeLong on one pair of
models is printed beside it for contrast.

    python benchmarks/calibration.py [--seeds 12] [--model small-cnn] [--train-fraction 0.05] [--epochs 2]
    python benchmarks/calibration.py --run-dir runs/00003-compare-kermany_pneumonia_64   # reuse its 'none' runs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from cxrgan.classify import TrainConfig
from cxrgan.evaluate.calibration import TESTS, calibrate
from cxrgan.engine.spec import RunSpec
from cxrgan.recipes.compare import CompareConfig, run_compare
from cxrgan.engine import Results

DEFAULT_DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA / "kermany_pneumonia" / "kermany_pneumonia_64.npz"))
    parser.add_argument("--run-dir", default=None, help="reuse the 'none' runs of this compare run directory")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--train-fraction", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-splits", type=int, default=None, help="cap on the number of null splits")
    args = parser.parse_args()

    started = time.perf_counter()
    if args.run_dir is None:
        config = CompareConfig(run=RunSpec(args.data, seeds=args.seeds), methods=("none",), train_fraction=args.train_fraction,
                               train=TrainConfig(model=args.model, epochs=args.epochs, batch_size=32, lr=1e-3,
                                                 progress=False))
        run_dir = run_compare(config, tempfile.mkdtemp(prefix="cxrgan-calibration-"), progress=False)
    else:
        run_dir = Path(args.run_dir)
    results = Results(run_dir)
    scores = {s: v[:, 0] for s, v in results.seed_scores("test", method="none").items()}
    if len(scores) % 2:
        scores.pop(max(scores))
    calibration = calibrate(results.labels["test"][:, 0], scores, max_splits=args.max_splits)
    print(f"\n{calibration.n_seeds} seeds of 'none' ({run_dir}), {calibration.n_splits} null splits into two arms "
          f"of {calibration.n_seeds // 2}; {time.perf_counter() - started:.0f} s in all")
    print("test                                                  false-positive rate at 0.05")
    for name, label in TESTS.items():
        print(f"{label:<54s}{calibration.false_positive_rate(name):.3f}")
    rate = calibration.false_positive_rate("primary")
    print(f"primary test p >= 0.05 in {1 - rate:.1%} of null comparisons; target >= 90%: "
          f"{'met' if 1 - rate >= 0.9 else 'not met'}")


if __name__ == "__main__":
    main()
