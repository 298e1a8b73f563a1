"""Benchmark: ResNet-18 at 64 px on Kermany (train split, early stop on val, official test); prints AUC and speed.

Target (foundation issue): test ROC AUC >= 0.96 within 10 minutes on a 2-core CPU. For reference, MedMNIST v2
reports 0.944 for ResNet-18 at 28 px and 0.962 for ResNet-50 at 224 px on the same test images.

    python benchmarks/classifier.py [--data FILE] [--epochs 20] [--no-bf16] [--lr 1e-3]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.data import load_npz
from cxrgan.evaluate import bootstrap_ci, threshold_report

DEFAULT_DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA / "kermany_pneumonia" / "kermany_pneumonia_64.npz"))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--augment", default="flip-affine", choices=["none", "flip", "flip-affine"])
    parser.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = load_npz(args.data)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    config = TrainConfig(model=args.model, epochs=args.epochs, patience=args.patience, lr=args.lr,
                         batch_size=args.batch_size, bf16=not args.no_bf16, augment=args.augment, lr_schedule=args.lr_schedule,
                         device="auto", progress=False)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {config}")
    started = time.perf_counter()
    result = train_classifier(train, val, config, seed=args.seed,
                              on_epoch=lambda r: print(f"  epoch {r['epoch']:2d} loss {r['train_loss']:.4f} "
                                                       f"val AUC {r['val_auc']:.4f} ({r['seconds']:.0f} s)"))
    wall = time.perf_counter() - started
    s_val = predict(result.model, val, bf16=config.bf16)[:, 0]
    s_test = predict(result.model, test, bf16=config.bf16)[:, 0]
    y_val, y_test = val.labels[:, 0], test.labels[:, 0]
    report = threshold_report(y_test, s_test, y_val, s_val)
    auc = bootstrap_ci(y_test, s_test, "roc_auc", n_boot=2000, random_state=0)
    print(f"\nbest epoch {result.best_epoch} (val AUC {result.best_val_auc:.4f})")
    print(f"test ROC AUC {auc.estimate:.4f} [95% bootstrap CI {auc.low:.4f}, {auc.high:.4f}]")
    print(f"test accuracy {report['default']['accuracy']:.4f} at 0.5, {report['youden']['accuracy']:.4f} at the "
          f"validation Youden threshold {report['youden']['threshold']:.3f}")
    print(f"wall time {wall / 60:.1f} min (training + validation), training throughput "
          f"{result.images_per_second:.0f} images/s; target AUC >= 0.96 in <= 10 min: "
          f"{'met' if auc.estimate >= 0.96 and wall <= 600 else 'not met'}")


if __name__ == "__main__":
    main()
