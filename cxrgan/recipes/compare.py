"""``cxrgan compare``: every balancing method x seed on the same splits, one table with CIs and DeLong p-values."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrgan.balance import BalanceContext, make_balancer
from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.data import CXRDataset, load_npz
from cxrgan.data.splits import fraction_subset, induce_imbalance
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.evaluate.summary import evaluate_scores, summarise
from cxrgan.io import append_jsonl, atomic_write, read_jsonl
from cxrgan.report.html import write_report
from cxrgan.report.plots import plot_curves
from cxrgan.report.tables import to_markdown, write_tables
from cxrgan.runs import new_run_dir, write_config

CLASSIC_METHODS = ("none", "class-weights", "undersample", "oversample", "smote", "augment")


@dataclass(frozen=True)
class CompareConfig:
    """One comparison: data, methods, seeds, classifier; written to the run's config.json."""

    data: str  # compact .npz with train/val/test splits (cxrgan data prepare makes one)
    methods: tuple[str, ...] = CLASSIC_METHODS  # balancer names; the first is the baseline unless `baseline` is set
    seeds: int = 5  # number of seeds (first_seed, first_seed + 1, ...)
    first_seed: int = 0  # seed of the first run
    baseline: str = "none"  # method the DeLong tests compare against
    target: str = "labels"  # "labels" (binary) or "findings" (multi-label)
    uncertainty: str = "ignore"  # U-policy for multi-label -1 values: zeros, ones, ignore
    train_fraction: float = 1.0  # stratified patient-level fraction of the training split (data regimes)
    imbalance: tuple[int, int] | None = None  # induce negatives:positives ratio on the training split, e.g. (3, 1)
    data_seed: int = 0  # seed of subsetting / imbalance induction; fixed so every method and seed sees one split
    n_boot: int = 1000  # bootstrap resamples for each run's AUC CI
    train: TrainConfig = field(default_factory=TrainConfig)  # classifier settings
    full: bool = False  # paper-size generator settings (GPU) for generator-backed methods
    generator_overrides: tuple[tuple[str, Any], ...] = ()  # generator settings over the defaults, e.g. train_steps


def prepare_splits(config: CompareConfig) -> tuple[CXRDataset, CXRDataset, CXRDataset]:
    """Load the data and derive the (fixed) training split; val and test stay the file's real splits."""
    dataset = load_npz(config.data, target=config.target, uncertainty=config.uncertainty)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    if config.train_fraction < 1.0:
        train = fraction_subset(train, config.train_fraction, random_state=config.data_seed)
    if config.imbalance is not None:
        train = induce_imbalance(train, ratio_counts(train, config.imbalance), random_state=config.data_seed)
    for part in (train, val, test):
        if part.synthetic.any():
            raise CxrganError(f"{config.data}: the input file already holds synthetic rows; start from real data")
    return train, val, test


def ratio_counts(train: CXRDataset, ratio: tuple[int, int]) -> dict[int, int]:
    """The largest class counts with negatives : positives = ``ratio`` that removing rows can reach."""
    y = train.binary_targets()
    negatives, positives = int((y == 0).sum()), int((y == 1).sum())
    keep_positives = min(positives, negatives * ratio[1] // ratio[0])
    return {0: min(negatives, round(keep_positives * ratio[0] / ratio[1])), 1: keep_positives}


def run_compare(config: CompareConfig, out: str | Path, resume_dir: str | Path | None = None,
                command: str | None = None, description: str = "compare") -> Path:
    """Run (or resume) a comparison and return its run directory.

    ``command`` (the shell command line) is kept in ``command.txt`` for the report. Every finished (method, seed)
    appends one JSONL record after its scores are saved, so an interrupted run resumes at the first unfinished pair
    and repeats nothing.
    """
    if config.baseline not in config.methods:
        raise CxrganError(f"baseline {config.baseline!r} is not among the methods {list(config.methods)}")
    train, val, test = prepare_splits(config)
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(out, f"{description}-{Path(config.data).stem}")
    write_config(run_dir, config, kind="compare")
    if command:
        with open(run_dir / "command.txt", "a", encoding="utf-8") as f:  # appended: a resumed run adds its line
            f.write(command + "\n")
    write_tables(train.counts_table(), run_dir / "train_split", title="Training split used by every run")
    done = {(r["method"], r["seed"]) for r in read_jsonl(run_dir / "results.jsonl")}
    device = resolve_device(config.train.device)
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        for method in config.methods:
            if (method, seed) in done:
                continue
            record = run_one(config, method, seed, train, val, test, run_dir, str(device))
            append_jsonl(run_dir / "results.jsonl", record)
            print(f"  {method:>14s} seed {seed}: " + ", ".join(
                f"{k} {v:.3f}" for k, v in record["metrics"].items() if k in ("roc_auc", "pr_auc", "macro")))
    finish_compare(run_dir, config, test)
    return run_dir


def run_one(config: CompareConfig, method: str, seed: int, train: CXRDataset, val: CXRDataset, test: CXRDataset,
            run_dir: Path, device: str) -> dict:
    """Balance, train, predict and score one (method, seed); scores are saved before the record is returned."""
    started = time.perf_counter()
    context = BalanceContext(random_state=seed, device=device, work_dir=run_dir / "generators", full=config.full,
                             generator_overrides=config.generator_overrides)
    balancer = make_balancer(method, context)
    balanced = balancer.fit_resample(train)
    if set(balanced.meta["split"]) != {"train"}:
        raise CxrganError(f"method {method!r} returned rows outside the training split")
    train_config = balancer.adapt_training(config.train)  # loss-side methods change the loss or schedule
    checkpoint = run_dir / "checkpoints" / f"{method}-seed{seed}.pt"
    result = train_classifier(balanced, val, train_config, seed, checkpoint_path=checkpoint, resume=True)
    s_val = predict(result.model, val, device, config.train.eval_batch_size, config.train.bf16)
    s_test = predict(result.model, test, device, config.train.eval_batch_size, config.train.bf16)
    scores_path = run_dir / "scores" / f"{method}-seed{seed}.npz"
    atomic_write(scores_path, lambda tmp: _save_arrays(tmp, val=s_val, test=s_test))
    if seed == config.first_seed:  # keep one model per method for CAM panels; checkpoints are transient
        atomic_write(run_dir / "models" / f"{method}-seed{seed}.pt",
                     lambda tmp: torch.save({"model": result.model.state_dict(), "config": config.train.model,
                                             "n_outputs": train.n_labels}, tmp))
    checkpoint.unlink(missing_ok=True)
    metrics = evaluate_scores(val.labels, s_val, test.labels, s_test, test.label_names, config.n_boot, seed)
    y_train = balanced.labels
    return {
        "method": method,
        "seed": seed,
        "metrics": metrics,
        "train_rows": len(balanced),
        "train_synthetic": int(balanced.synthetic.sum()),
        "train_positives": np.nansum(y_train, axis=0).astype(int).tolist(),
        "class_weights": None if balanced.class_weights is None else balanced.class_weights.tolist(),
        "best_epoch": result.best_epoch,
        "best_val_auc": result.best_val_auc,
        "images_per_second": result.images_per_second,
        "history": result.history,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _save_arrays(path: str, **arrays: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def finish_compare(run_dir: Path, config: CompareConfig, test: CXRDataset) -> None:
    """Aggregate the finished records into results.md/.csv, summary.json and ROC/PR plots; print the table."""
    records = read_jsonl(run_dir / "results.jsonl")
    scores = {(r["method"], r["seed"]): np.load(run_dir / "scores" / f"{r['method']}-seed{r['seed']}.npz")["test"]
              for r in records}
    table, notes, summary = summarise(records, scores, test.labels, test.label_names, config.methods, config.baseline)
    title = f"cxrgan compare: {Path(config.data).name}, {config.train.model}, {config.seeds} seed(s)"
    write_tables(table, run_dir / "results", title=title, notes=notes)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if test.is_binary:
        y = test.labels[:, 0]
        curves = {m: (y, np.mean([scores[(m, s)][:, 0] for (mm, s) in scores if mm == m], axis=0))
                  for m in config.methods if any(mm == m for (mm, _) in scores)}
        plot_curves(curves, "roc", run_dir / "roc.png", title="ROC, test split (scores averaged over seeds)")
        plot_curves(curves, "pr", run_dir / "pr.png", title="Precision-recall, test split (seed-averaged scores)")
    report = write_report(run_dir)
    print(f"\n{title}\n\n{to_markdown(table)}\n\n{notes}\n\nresults: {run_dir}\nreport: {report}")


def config_from_dict(values: dict) -> CompareConfig:
    """Rebuild a config from its config.json form (tuples and the nested TrainConfig restored)."""
    values = dict(values)
    values["train"] = TrainConfig(**values["train"])
    values["methods"] = tuple(values["methods"])
    if values.get("imbalance") is not None:
        values["imbalance"] = tuple(values["imbalance"])
    values["generator_overrides"] = tuple(tuple(pair) for pair in values.get("generator_overrides", ()))
    return CompareConfig(**values)
