"""Benchmark: data-parallel classifier training under torchrun -- training images/s with 1 and 2 processes (one thread
each, gloo on the CPU, NCCL on GPUs) and the scaling efficiency (speed-up / processes).

Each run trains ``--model`` on ``--rows`` random training images of ``--data`` for ``--epochs`` epochs with the
same global batch; throughput counts the images of every process over the training seconds (validation excluded).
On a shared 2-core CPU the two processes compete with everything else running, so expect well under 2x there; the
numbers that matter for GPUs come from running it on GPUs (``--device cuda``).

    python benchmarks/ddp.py [--data FILE] [--model resnet18] [--rows 1024] [--epochs 2] [--processes 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

DEFAULT_DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def worker(args: argparse.Namespace) -> None:
    """One process of a torchrun job: train and (rank 0) print the measurement as JSON."""
    import numpy as np

    from cxrgan import distributed
    from cxrgan.classify import TrainConfig, train_classifier
    from cxrgan.data import load_npz

    distributed.setup(args.device)
    dataset = load_npz(args.data)
    train = dataset.split("train")
    rows = np.random.default_rng(0).choice(len(train), min(args.rows, len(train)), replace=False)
    train = train.subset(np.sort(rows))
    val = dataset.split("val")
    config = TrainConfig(model=args.model, epochs=args.epochs, patience=args.epochs, batch_size=args.batch_size,
                         lr=1e-3, bf16=False, device=args.device, progress=False, augment="flip")
    result = train_classifier(train, val, config, seed=0)
    if distributed.is_main():
        print(json.dumps({"processes": distributed.world_size(), "images_per_second": result.images_per_second,
                          "train_seconds": sum(r["seconds"] for r in result.history),
                          "val_auc": result.history[-1]["val_auc"]}))
    distributed.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA / "kermany_pneumonia" / "kermany_pneumonia_64.npz"))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--rows", type=int, default=1024, help="training images (a seeded random subset)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="global batch, split over the processes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", default="1,2", help="process counts to compare")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items() if k not in ("processes", "worker")]
    rows = []
    for n in (int(p) for p in args.processes.split(",")):
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   __file__, "--worker", *flags]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["images_per_second"] / rows[0]["processes"]
    print(f"{args.model}, {args.rows} images of {Path(args.data).name}, {args.epochs} epochs, global batch "
          f"{args.batch_size}, {args.device}, one thread per process")
    print("| processes | images/s | speed-up | scaling efficiency | train s | val AUC |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        speedup = row["images_per_second"] / base
        print(f"| {row['processes']} | {row['images_per_second']:.0f} | {speedup:.2f}x | "
              f"{speedup / row['processes']:.2f} | {row['train_seconds']:.1f} | {row['val_auc']:.3f} |")


if __name__ == "__main__":
    main()
