"""Benchmark: the classifier training step, today's default against the step main trained with before; then
ResNet-18 at 64 px on Kermany (train split, early stop on val, official test) with AUC and speed.

Speed. ``ratio`` = images/s of the default training step over images/s of the previous default step (ResNet-18
with every convolution in oneDNN, torch's default Adam, eager: the step of main until issue 25), both in the
precision ``--precision auto`` picks here (bf16 autocast on a CPU with AVX512-BF16 or AMX) on channels-last tensors
(main's layout too), timed on real training rows through the training loop's own epoch function, chunk by chunk,
the two interleaved pair by pair (which goes first alternates) so background load hits both alike. Target: >= 2x.
``--ablation`` adds each change alone, ``--nchw`` main's step in plain NCHW order, ``--compile`` the network through
torch.compile (inductor), without and with the small-map convolutions, and prints the compile time. Run with
``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` (no AMX) or ``ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ...
--no-bf16`` to see the step of a CPU without bf16 matrix units. The CPU model and its bf16 / AMX flags are printed
with the ratio.

torch.compile is not the default: on the Sapphire Rapids this was measured on it compiled in 130-215 s (cold
cache, 1 thread, loaded machine) and stepped no faster than the eager default (1.91x vs 1.97x over main's step),
while a ResNet-18 cell of the README command trains for about a minute.

AUC. ``--auc-seeds N`` trains both steps on the README command's data (Kermany 3:1, its CPU defaults: 8 epochs,
cosine from lr 1e-3, flips) for seeds ``--auc-first-seed`` .. +N-1 and prints each test ROC AUC and the paired
difference.

Full training (foundation issue): test ROC AUC >= 0.96 within 10 minutes on a 2-core CPU (``--epochs 0`` skips it).
For reference, MedMNIST v2 reports 0.944 for ResNet-18 at 28 px and 0.962 for ResNet-50 at 224 px.

``--vs-commit REV`` times the whole training loop of this checkout against REV's (3d586b1: main when issue 25 was
filed), each run in its own process, pair by pair: ``TrainResult.images_per_second`` over every training step of
``--vs-epochs`` epochs on the training split, batch feed, host syncs and optimiser included as each version does them.

    python benchmarks/classifier.py [--pairs 7] [--ablation] [--nchw] [--compile] [--auc-seeds 3] [--epochs 20] [--vs-commit 3d586b1]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import cxrgan.classify.train as train_module
from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.balance.stages import Main
from cxrgan.classify.losses import build_loss
from cxrgan.classify.optimizers import adam
from cxrgan.classify.small_maps import SmallMapConv2d
from cxrgan.data import load_npz
from cxrgan.device import resolve_amp, resolve_device
from cxrgan.evaluate import bootstrap_ci, threshold_report

DEFAULT_DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KERMANY = DEFAULT_DATA / "kermany_pneumonia" / "kermany_pneumonia_64.npz"


def cpu_description() -> str:
    """The CPU model and the flags that decide the fast paths (Linux /proc/cpuinfo; elsewhere the platform)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    shown = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({os.cpu_count()} logical CPUs; {' '.join(shown) or 'no AVX2'})"


# ---- the previous default step ------------------------------------------------------------------------------------
def previous_model(model: nn.Module) -> nn.Module:
    """``model`` as main's network before issue 25: every convolution back in oneDNN and, in ResNet-18's stem, the
    ReLU before the max-pool; same weights, same numbers."""
    for layer in model.modules():
        if type(layer) is SmallMapConv2d:
            layer.__class__ = nn.Conv2d
    stem = model.features
    if isinstance(stem, nn.Sequential) and isinstance(stem[2], nn.MaxPool2d) and isinstance(stem[3], nn.ReLU):
        stem[2], stem[3] = stem[3], stem[2]
    return model


def previous_adam(parameters, lr: float, weight_decay: float) -> torch.optim.Adam:
    """torch's default Adam, as main used (on the CPU: one element-wise operation after another)."""
    return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One form of the training step."""

    small_maps: bool  # small output maps' convolutions as matrix products (cxrgan.classify.small_maps)
    fused_adam: bool  # torch's fused Adam (else its default, one element-wise operation after another)
    bf16_copies: bool = False  # the optimiser keeps bf16 weight copies (cxrgan.classify.bf16_weights)
    channels_last: bool = True  # channels-last weights and activations (both main and the default use them)
    compiled: bool = False  # the network through torch.compile (inductor), eager otherwise


VARIANTS = {
    "previous": Variant(False, False),  # main's step until issue 25
    "default": Variant(True, True, bf16_copies=True),  # the step train_classifier takes today
    "no bf16 copies": Variant(True, True),  # the default before the optimiser kept bf16 weight copies
    "previous NCHW": Variant(False, False, channels_last=False),  # the description of main's step
    "compiled": Variant(False, True, compiled=True),  # inductor's convolutions and fusions instead of small maps
    "default compiled": Variant(True, True, bf16_copies=True, compiled=True),  # the default step through inductor
    "small-maps only": Variant(True, False),
    "fused Adam only": Variant(False, True),
}


@contextlib.contextmanager
def step_variant(variant: Variant):
    """Make ``train_classifier`` build its network and optimiser as ``variant`` (benchmark only; eager, channels-last)."""
    build, training_adam = train_module.build_classifier, train_module.training_adam
    if not variant.small_maps:
        train_module.build_classifier = lambda *args, **kwargs: previous_model(build(*args, **kwargs))
    if not variant.bf16_copies:
        train_module.training_adam = lambda model, parameters, lr, weight_decay, *rest: optimizer_of(
            variant, model, parameters, lr, weight_decay)
    try:
        yield
    finally:
        train_module.build_classifier, train_module.training_adam = build, training_adam


def optimizer_of(variant: Variant, model: nn.Module, parameters, lr: float, weight_decay: float,
                 device: torch.device = torch.device("cpu"), config: TrainConfig | None = None) -> torch.optim.Adam:
    """The optimiser of ``variant``'s step: torch's default Adam, its fused kernel, or the loop's own choice."""
    if not variant.fused_adam:
        return previous_adam(parameters, lr, weight_decay)
    if not variant.bf16_copies:
        return adam(parameters, lr, weight_decay)
    return train_module.training_adam(model, parameters, lr, weight_decay, device, config.bf16, config.fp16, 1)


@contextlib.contextmanager
def input_format(channels_last: bool):
    """Batches handed to the network channels-last (the loop's) or in plain NCHW order."""
    to_input = train_module.to_input
    if not channels_last:
        train_module.to_input = lambda *args, **kwargs: to_input(*args, **kwargs).contiguous()
    try:
        yield
    finally:
        train_module.to_input = to_input


class TimedStep:
    """One variant of the training step on the real training rows, through the loop's own ``_train_epoch``."""

    def __init__(self, name: str, train, config: TrainConfig, seed: int = 0):
        self.variant = variant = VARIANTS[name]
        device = resolve_device(config.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = train_module.build_classifier(config.model, train.n_labels)
        if not variant.small_maps:
            previous_model(model)
        layout = torch.channels_last if variant.channels_last else torch.contiguous_format
        self.model = model.to(device, memory_format=layout).train()
        optimizer = optimizer_of(variant, self.model, self.model.parameters(), config.lr, config.weight_decay,
                                 device, config)
        self.step_model = torch.compile(self.model) if variant.compiled else self.model
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        scaler = torch.amp.GradScaler(device.type, enabled=config.fp16)
        loss_fn = build_loss(Main().loss, train_module._label_counts(train, Main()))
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = train_module.Steps(optimizer, scheduler, scaler, loss_fn, config, device, self.generator)
        self.train, self.config = train, config

    def images_per_second(self, batches: int) -> float:
        rows = torch.randperm(len(self.train), generator=self.generator)[:batches * self.config.batch_size]
        timing = {"seconds": 0.0, "images": 0}
        with input_format(self.variant.channels_last):
            train_module._train_epoch(self.step_model, self.steps, None, self.train, rows, timing, "timed")
        return timing["images"] / timing["seconds"]


def measure_ratio(train, config: TrainConfig, pairs: int, batches: int, names: list[str]) -> None:
    """Each of ``names`` timed against "previous", pair by pair (which goes first alternates); the "default" ratio
    is printed last as ``ratio``."""
    names = ["previous", *names]
    started = time.perf_counter()
    steps = {name: TimedStep(name, train, config) for name in names}
    for name, step in steps.items():
        warm = time.perf_counter()
        step.images_per_second(2)  # warm-up: oneDNN primitives, allocator; torch.compile compiles here
        if step.variant.compiled:
            print(f"  torch.compile: first two steps {time.perf_counter() - warm:.0f} s (compilation)", flush=True)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    previous: dict[str, list[float]] = {name: [] for name in names}
    for pair in range(pairs):
        for name in names[1:]:
            order = ("previous", name) if pair % 2 == 0 else (name, "previous")
            measured = {n: steps[n].images_per_second(batches) for n in order}
            previous[name].append(measured["previous"])
            speeds[name].append(measured[name])
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA")
    print(f"CPU: {cpu_description()}{f'; oneDNN limited to {isa}' if isa else ''}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {'bf16' if config.bf16 else 'fp32'} autocast, batch "
          f"{config.batch_size}, {batches} batches per timing, {pairs} pairs ({time.perf_counter() - started:.0f} s)")
    ratios = {}
    for name in names[1:]:
        ratios[name] = [new / old for new, old in zip(speeds[name], previous[name])]
        print(f"  {name:16s} {statistics.median(speeds[name]):6.0f} images/s vs previous "
              f"{statistics.median(previous[name]):6.0f}: ratio median {statistics.median(ratios[name]):.2f}x "
              f"(min {min(ratios[name]):.2f}, max {max(ratios[name]):.2f})")
    if "previous NCHW" in ratios and "default" in ratios:  # default / NCHW = (default / previous) / (NCHW / previous)
        over_nchw = [d / n for d, n in zip(speeds["default"], speeds["previous NCHW"])]
        print(f"  default over previous NCHW (not timed as a pair; medians of their own pairs): "
              f"{statistics.median(over_nchw):.2f}x")
    if "default" in ratios:
        print(f"ratio {statistics.median(ratios['default']):.2f}x")


# ---- the whole training loop against an earlier commit's ---------------------------------------------------------
# One training run in a fresh process: the checkout on sys.path decides which loop it is. Only arguments both the
# current TrainConfig and the issue-25 commit's accept.
LOOP_RUN = """
import json, sys
import numpy as np
from cxrgan.classify import TrainConfig, train_classifier
from cxrgan.data import load_npz
data, model, epochs, bf16 = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
dataset = load_npz(data)
train, val = dataset.split("train"), dataset.split("val")
y = val.labels[:, 0]
val = val.subset(np.sort(np.concatenate([np.flatnonzero(y == 0)[:64], np.flatnonzero(y == 1)[:64]])))
config = TrainConfig(model=model, epochs=epochs, patience=epochs, batch_size=64, lr=1e-3, bf16=bf16, augment="flip",
                     progress=False, device="cpu")
print(json.dumps({"images_per_second": train_classifier(train, val, config, seed=0).images_per_second}))
"""


def measure_against_commit(revision: str, data: str, model: str, epochs: int, bf16: bool, pairs: int) -> None:
    """Training throughput (``TrainResult.images_per_second``: every training step of ``epochs`` epochs, validation
    excluded) of this checkout's loop over ``revision``'s loop (exported with ``git archive``), each run in its own
    process, the two alternating pair by pair. Unlike the step ratio above, this includes everything the loop does
    per step (batch feed, host syncs, optimiser), as each version does it."""
    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="cxrgan-vs-") as folder:
        archive = subprocess.run(["git", "-C", str(repo), "archive", revision], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        checkouts = {"current": str(repo), revision: folder}

        def images_per_second(checkout: str) -> float:
            env = {**os.environ, "PYTHONPATH": checkout}
            out = subprocess.run([sys.executable, "-c", LOOP_RUN, data, model, str(epochs), "1" if bf16 else "0"],
                                 check=True, capture_output=True, text=True, env=env, cwd=checkout).stdout
            return json.loads(out.strip().splitlines()[-1])["images_per_second"]

        speeds: dict[str, list[float]] = {name: [] for name in checkouts}
        started = time.perf_counter()
        for pair in range(pairs):
            order = list(checkouts) if pair % 2 == 0 else list(checkouts)[::-1]
            for name in order:
                speeds[name].append(images_per_second(checkouts[name]))
    ratios = [new / old for new, old in zip(speeds["current"], speeds[revision])]
    print(f"CPU: {cpu_description()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'bf16' if bf16 else 'fp32'} autocast; {model}, {epochs} epoch(s) of {Path(data).name}'s training split "
          f"per run, {pairs} pairs ({time.perf_counter() - started:.0f} s)")
    print(f"  training loop {statistics.median(speeds['current']):.0f} images/s vs {revision} "
          f"{statistics.median(speeds[revision]):.0f}: ratio median {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


# ---- test AUC of both steps ---------------------------------------------------------------------------------------
def readme_splits(data: str):
    """The README command's splits (Kermany made 3:1) and its classifier settings, as the CLI builds them."""
    from cxrgan.cli import build_parser
    from cxrgan.cli.flags import run_spec, train_config
    from cxrgan.recipes.compare_setup import CompareConfig, prepare_splits

    args = build_parser().parse_args(["compare", data, "--imbalance", "3:1", "--no-progress"])
    config = CompareConfig(run=run_spec(args, data), imbalance=args.imbalance, train=train_config(args))
    return (*prepare_splits(config), config.train)


def compare_auc(data: str, seeds: int, first_seed: int = 0) -> None:
    from sklearn.metrics import roc_auc_score

    train, val, test, config = readme_splits(data)
    aucs: dict[str, list[float]] = {"previous": [], "default": []}
    for seed in range(first_seed, first_seed + seeds):
        for name in aucs:
            with step_variant(VARIANTS[name]):
                started = time.perf_counter()
                result = train_classifier(train, val, config, seed=seed)
            device = resolve_device(config.device)
            scores = predict(result.model, test, device, config.eval_batch_size, config.bf16)[:, 0]
            aucs[name].append(float(roc_auc_score(test.labels[:, 0], scores)))
            print(f"  seed {seed} {name:8s} test ROC AUC {aucs[name][-1]:.4f} (best epoch {result.best_epoch}, "
                  f"{result.images_per_second:.0f} images/s, {time.perf_counter() - started:.0f} s)", flush=True)
    differences = np.subtract(aucs["default"], aucs["previous"])
    spread = float(np.std(aucs["previous"], ddof=1)) if seeds > 1 else math.nan
    print(f"test ROC AUC over {seeds} seed(s): previous {np.mean(aucs['previous']):.4f}, default "
          f"{np.mean(aucs['default']):.4f}; paired difference {differences.mean():+.4f} (per seed "
          f"{', '.join(f'{d:+.4f}' for d in differences)}); seed-to-seed SD of the previous step {spread:.4f}")


# ---- full training --------------------------------------------------------------------------------------------------
def full_training(args, config: TrainConfig) -> None:
    dataset = load_npz(args.data)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(KERMANY))
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--pairs", type=int, default=7, help="timed pairs of the two steps (0 = no ratio)")
    parser.add_argument("--batches", type=int, default=8, help="training batches per timing")
    parser.add_argument("--ablation", action="store_true", help="also time each change alone")
    parser.add_argument("--nchw", action="store_true", help="also time main's step in plain NCHW order")
    parser.add_argument("--compile", action="store_true",
                        help="also time the network through torch.compile (inductor; prints the compile time)")
    parser.add_argument("--vs-commit", metavar="REV", help="also time this checkout's whole training loop against "
                        "REV's (e.g. 3d586b1, main when issue 25 was filed), each in its own process")
    parser.add_argument("--vs-epochs", type=int, default=1, help="training epochs per --vs-commit run")
    parser.add_argument("--data-workers", type=int, default=0, help="processes reading batches in the timed steps")
    parser.add_argument("--auc-seeds", type=int, default=0, help="seeds of the test-AUC comparison (0 = none)")
    parser.add_argument("--auc-first-seed", type=int, default=0, help="first seed of the test-AUC comparison")
    parser.add_argument("--epochs", type=int, default=20, help="full training epochs (0 = no full training)")
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-bf16", action="store_true")
    parser.add_argument("--augment", default="flip-affine", choices=["none", "flip", "flip-affine"])
    parser.add_argument("--lr-schedule", default="cosine", choices=["constant", "cosine"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    bf16 = not args.no_bf16 and resolve_amp("auto") == "bf16"
    if args.pairs:
        train = load_npz(args.data).split("train")
        timed = TrainConfig(model=args.model, batch_size=args.batch_size, lr=args.lr, bf16=bf16, augment="flip",
                            progress=False, data_workers=args.data_workers)
        names = ["default", *(["previous NCHW"] if args.nchw else []), *(["compiled", "default compiled"] if args.compile else []),
                 *(["small-maps only", "fused Adam only", "no bf16 copies"] if args.ablation else [])]
        measure_ratio(train, timed, args.pairs, args.batches, names)
    if args.vs_commit:
        measure_against_commit(args.vs_commit, args.data, args.model, args.vs_epochs, bf16, max(args.pairs, 1))
    if args.auc_seeds:
        compare_auc(args.data, args.auc_seeds, args.auc_first_seed)
    if args.epochs:
        full_training(args, TrainConfig(model=args.model, epochs=args.epochs, patience=args.patience, lr=args.lr,
                                         batch_size=args.batch_size, bf16=bf16, augment=args.augment,
                                         lr_schedule=args.lr_schedule, device="auto", progress=False))


if __name__ == "__main__":
    main()
