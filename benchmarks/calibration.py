"""Benchmark: false-positive rate of each "method vs baseline" test under simulated nulls and on real runs.

Simulated nulls (seconds): test sets of 600 images (150 positive, patients with up to 5 images) drawn again in every
replicate, two arms of 3 and of 5 seeds; "same-method" (both arms one method) and "test-set" (the two methods differ
only on the drawn test set, by zero in expectation). Targets for the primary test: 0.025-0.07 in the same-method
null, <= 0.07 in the test-set null.

Real runs: trains ``none`` with a small fast model for --seeds seeds through ``cxrgan compare`` (or reuses the
``none`` runs of an existing run directory with --run-dir), splits the seeds into two arms of equal size in every
distinct way, tests arm A against arm B, and prints the share of splits each test calls significant at 0.05. The
primary test must stay at or below 0.05 (issue: p >= 0.05 in at least 90 % of the null comparisons).

    python benchmarks/calibration.py --simulated-only [--replicates 1000]
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
from cxrgan.engine.spec import RunSpec
from cxrgan.evaluate.calibration import NULLS, SIMULATED_TESTS, TESTS, calibrate, simulated_null
from cxrgan.recipes.compare import CompareConfig, run_compare
from cxrgan.engine import Results

DEFAULT_DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def simulated(replicates: int) -> None:
    """Rejection rates of every test in both simulated nulls at 3 and 5 seeds per arm."""
    print(f"simulated nulls: {replicates} replicates each, rejection rate at 0.05 "
          "(primary target: 0.025-0.07 same-method, <= 0.07 test-set)")
    header = "".join(f"{f'{null}, {n} seeds':>22s}" for null in NULLS for n in (3, 5))
    print(f"{'test':<60s}{header}")
    started = time.perf_counter()
    runs = {(null, n): simulated_null(null, n, replicates, random_state=n + 10 * NULLS.index(null))
            for null in NULLS for n in (3, 5)}
    for name in SIMULATED_TESTS:
        print(f"{TESTS[name]:<60s}" + "".join(f"{run.false_positive_rate(name):22.3f}" for run in runs.values()))
    print(f"{time.perf_counter() - started:.1f} s")


def real_runs(args: argparse.Namespace) -> None:
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
    calibration = calibrate(results.labels["test"][:, 0], scores, results.patients("test"), max_splits=args.max_splits)
    print(f"\n{calibration.n_seeds} seeds of 'none' ({run_dir}), {calibration.n_splits} null splits into two arms "
          f"of {calibration.n_seeds // 2}; {time.perf_counter() - started:.0f} s in all"
          + ("" if results.patients("test") is not None else " (no patient ids stored: images independent)"))
    print(f"{'test':<60s}false-positive rate at 0.05")
    for name, label in TESTS.items():
        print(f"{label:<60s}{calibration.false_positive_rate(name):.3f}")
    rate = calibration.false_positive_rate("primary")
    print(f"primary test p >= 0.05 in {1 - rate:.1%} of null comparisons; target >= 90%: "
          f"{'met' if 1 - rate >= 0.9 else 'not met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA / "kermany_pneumonia" / "kermany_pneumonia_64.npz"))
    parser.add_argument("--run-dir", default=None, help="reuse the 'none' runs of this compare run directory")
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--train-fraction", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-splits", type=int, default=None, help="cap on the number of null splits")
    parser.add_argument("--replicates", type=int, default=1000, help="replicates of each simulated null")
    parser.add_argument("--simulated-only", action="store_true", help="skip the real-run null (no training)")
    args = parser.parse_args()
    simulated(args.replicates)
    if not args.simulated_only:
        real_runs(args)


if __name__ == "__main__":
    main()
