"""Recipe ``sgan-scarcity``: semi-supervised GAN vs a matched CNN as the number of labelled images per class shrinks.

Madani et al. (ISBI 2018), Table 1 and Figure 5: n labelled images per class in {10, 25, 100, 250, 500, 1000,
2000}, the rest of the training split used without labels by the SGAN; the CNN (same network, ``MatchedCNN``)
sees only the n labelled images. Accuracy (argmax of p(y | x, y < K+1)) and ROC AUC on the real test split, mean
[95% CI] over seeds (Student t over training seeds, ``aggregate_seeds``). Default data: Kermany pediatric
normal / pneumonia, 64 px area-resized to the paper's 32 px. Results are appended per (n, method, seed) to
``results.jsonl`` so an interrupted run resumes where it stopped.

CPU budget (measured on this 2-core machine with one torch thread while another benchmark kept the load near 3;
100-step runs on Kermany at 32 px, after warm-up): the default SGAN (ndf = ngf = 32, virtual batch norm with a
64-image reference batch, 32 labelled + 32 unlabelled + 32 generated images per step) takes 0.09-0.11 s per step
and the matched CNN 0.026-0.05 s. 7 sizes x 3 seeds x 900 steps -> 21 x (90 + 35) s, about 44 minutes. ``--full``
(width 64, 6000 steps, batch 64) is meant for a GPU.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxrgan.classify.sgan import MatchedCNN, SemiSupervisedGAN, SGANConfig, strip_labels
from cxrgan.data import CXRDataset, load_npz
from cxrgan.data.images import resize_stack
from cxrgan.errors import CxrganError
from cxrgan.evaluate.metrics import accuracy, roc_auc
from cxrgan.evaluate.stats import aggregate_seeds
from cxrgan.evaluate.summary import paired_seed_cells, seed_cell
from cxrgan.io import append_jsonl, atomic_write, read_jsonl
from cxrgan.recipes import KERMANY_64
from cxrgan.report.tables import to_markdown, write_tables
from cxrgan.runs import new_run_dir, write_config

DEFAULT_DATA = KERMANY_64
PER_CLASS = (10, 25, 100, 250, 500, 1000, 2000)
METHODS = {"CNN": MatchedCNN, "SGAN": SemiSupervisedGAN}
CPU_SGAN = SGANConfig(steps=900)  # see the module docstring for the measured basis
FULL_SGAN = SGANConfig(ndf=64, ngf=64, steps=6000, batch_size=64, device="auto")


@dataclass(frozen=True)
class SganScarcityConfig:
    """The recipe's settings; written to the run's config.json."""

    data: str = DEFAULT_DATA  # binary .npz (normal / abnormal) with train and test splits
    per_class: tuple[int, ...] = PER_CLASS  # labelled images per class (capped by the smaller training class)
    seeds: int = 3  # training seeds (each also draws its own labelled subset)
    first_seed: int = 0  # seed of the first run
    sgan: SGANConfig = field(default_factory=lambda: CPU_SGAN)  # shared by the SGAN and its matched CNN
    full: bool = False  # paper-size settings (FULL_SGAN) for GPUs


# ---- helpers shared with sgan-domain ---------------------------------------------------------------------------
def load_binary(path: str | os.PathLike, size: int) -> CXRDataset:
    """A binary .npz with its images centre-cropped and area-resized to ``size`` pixels."""
    dataset = load_npz(path)
    if not dataset.is_binary:
        raise CxrganError(f"{path}: a binary (normal / abnormal) dataset is needed, "
                          f"found labels {list(dataset.label_names)}")
    return dataclasses.replace(dataset, images=resize_stack(np.asarray(dataset.images), size))


def evaluate(model: MatchedCNN | SemiSupervisedGAN, test: CXRDataset) -> dict[str, float]:
    """Accuracy (argmax over the K real classes) and ROC AUC of p(abnormal) on ``test``."""
    scores = model.predict_proba(test)[:, 1]
    y = test.binary_targets()
    return {"accuracy": accuracy(y, scores, threshold=0.5), "roc_auc": roc_auc(y, scores)}


def open_run(out: str | Path, resume_dir: str | Path | None, description: str, config, kind: str,
             command: str | None) -> Path:
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(out, description)
    write_config(run_dir, config, kind=kind)
    if command:
        with open(run_dir / "command.txt", "a", encoding="utf-8") as f:
            f.write(command + "\n")
    return run_dir


# ---- the recipe ------------------------------------------------------------------------------------------------
def labelled_split(train: CXRDataset, n: int, random_state: int) -> tuple[CXRDataset, CXRDataset]:
    """``n`` random images of each class keep their labels; the rest of ``train`` comes back label-free."""
    rng = np.random.default_rng(random_state)
    y = train.binary_targets()
    chosen = np.concatenate([rng.choice(np.flatnonzero(y == k), n, replace=False) for k in (0, 1)])
    rest = np.setdiff1d(np.arange(len(train)), chosen)
    return train.subset(np.sort(chosen)), strip_labels(train.subset(rest))


def effective_sizes(train: CXRDataset, per_class: tuple[int, ...]) -> tuple[int, ...]:
    """The requested sizes capped by the smaller class of the training split (duplicates dropped, order kept)."""
    cap = int(np.bincount(train.binary_targets(), minlength=2).min())
    return tuple(dict.fromkeys(min(n, cap) for n in per_class))


def run_sgan_scarcity(config: SganScarcityConfig, out: str | Path, resume_dir: str | Path | None = None,
                      command: str | None = None) -> Path:
    """Train CNN and SGAN for every labelled size x seed (resumable), then write Table 1 and the Figure 5 curve."""
    dataset = load_binary(config.data, config.sgan.image_size)
    train, test = dataset.split("train"), dataset.split("test")
    sizes = effective_sizes(train, config.per_class)
    run_dir = open_run(out, resume_dir, f"sgan-scarcity-{Path(config.data).stem}", config, "sgan-scarcity", command)
    records_path = run_dir / "results.jsonl"
    done = {(r["n"], r["method"], r["seed"]) for r in read_jsonl(records_path)}
    for n in sizes:
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            labeled, unlabeled = labelled_split(train, n, seed)
            for method, model_type in METHODS.items():
                if (n, method, seed) in done:
                    continue
                start = time.perf_counter()
                model = model_type(config.sgan)
                model = model.fit(labeled, random_state=seed) if method == "CNN" else \
                    model.fit(labeled, [unlabeled], random_state=seed)
                record = {"n": n, "method": method, "seed": seed, "n_labeled": len(labeled),
                          "n_unlabeled": len(unlabeled) if method == "SGAN" else 0, **evaluate(model, test),
                          "seconds": round(time.perf_counter() - start, 1), "parameters": model.n_parameters()}
                append_jsonl(records_path, record)
                print(f"n={n:>5} {method:<4} seed {seed}: accuracy {record['accuracy']:.3f}, "
                      f"ROC AUC {record['roc_auc']:.3f} ({record['seconds']} s)", flush=True)
    records = pd.DataFrame(read_jsonl(records_path))
    table = scarcity_table(records, sizes)
    notes = (f"Madani et al. Table 1 shape. n labelled images per class (capped at the smaller training class); the "
             f"SGAN also uses the other {len(train)} - 2n training images without labels. Test: {len(test)} real "
             f"images of the test split at {config.sgan.image_size} px. Cells: mean [95% CI] over {config.seeds} "
             f"seed(s); SGAN - CNN pairs the two models trained on the same labelled images. CNN = the SGAN's discriminator network trained on the labelled images only "
             f"({int(records['parameters'].iloc[0])} parameters each).")
    write_tables(table, run_dir / "table1", title="sgan-scarcity: CNN vs semi-supervised GAN", notes=notes)
    plot_scarcity(records, sizes, run_dir / "figure5.png")
    print(f"\nsgan-scarcity (Madani et al. Table 1 shape)\n\n{to_markdown(table)}\n\n{notes}\n\nresults: {run_dir}")
    return run_dir


def plan_sgan_scarcity(config: SganScarcityConfig) -> pd.DataFrame:
    """What a run would train (for ``--dry-run``): per labelled size, labelled and unlabelled counts per seed."""
    dataset = load_binary(config.data, config.sgan.image_size)
    train, test = dataset.split("train"), dataset.split("test")
    return pd.DataFrame([{"labelled / class": n, "labelled": 2 * n, "unlabelled (SGAN)": len(train) - 2 * n,
                          "test": len(test), "runs": 2 * config.seeds, "steps each": config.sgan.steps}
                         for n in effective_sizes(train, config.per_class)])


def scarcity_table(records: pd.DataFrame, sizes: tuple[int, ...]) -> pd.DataFrame:
    """One row per labelled size: CNN and SGAN accuracy and ROC AUC as mean [CI], and the paired SGAN - CNN AUC
    difference over seeds (same labelled subset per seed) with its paired t-test p-value."""
    rows = []
    for n in sizes:
        at_n = records[records["n"] == n]
        row: dict[str, object] = {"labelled / class": n}
        for metric, label in (("accuracy", "accuracy"), ("roc_auc", "ROC AUC")):
            for method in METHODS:
                values = at_n[at_n["method"] == method][metric].tolist()
                row[f"{method} {label}"] = seed_cell(values) if values else ""
        auc = {method: at_n[at_n["method"] == method].set_index("seed")["roc_auc"] for method in METHODS}
        row["SGAN - CNN ROC AUC"], row["paired t p"] = paired_seed_cells(auc["SGAN"], auc["CNN"])
        rows.append(row)
    return pd.DataFrame(rows)


def plot_scarcity(records: pd.DataFrame, sizes: tuple[int, ...], path: Path) -> Path:
    """Figure 5: accuracy and ROC AUC against labelled images per class (log axis), mean and 95% CI band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, (metric, label) in zip(axes, (("accuracy", "accuracy"), ("roc_auc", "ROC AUC"))):
        for method in METHODS:
            stats = [aggregate_seeds(records[(records["n"] == n) & (records["method"] == method)][metric].tolist())
                     for n in sizes]
            means = np.array([s["mean"] for s in stats])
            ax.plot(sizes, means, marker="o", label=method)
            low, high = np.array([s["ci_low"] for s in stats]), np.array([s["ci_high"] for s in stats])
            if not np.isnan(low).all():
                ax.fill_between(sizes, low, high, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("labelled images per class")
        ax.set_ylabel(f"test {label}")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
