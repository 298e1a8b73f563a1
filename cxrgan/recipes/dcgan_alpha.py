"""Recipe ``dcgan-alpha``: DCGAN and cDCGAN(alpha) oversampling against classic fixes on imbalanced pneumonia data.

Sun & Li (Stanford), "DCGAN and cDCGAN for pneumonia oversampling" (poster): Kermany pediatric CXRs made imbalanced
(4385 normal : 1460 pneumonia, i.e. 3 : 1), ResNet-18, rows = baseline, class weights, undersampling, oversampling,
DCGAN on the minority class, cDCGAN with alpha = P(sampled label is healthy) in {0.25, 0.5, 0.75}; columns =
precision, recall, specificity, F1. We add SMOTE, the loss-side long-tail fixes (focal, LDAM-DRW, logit adjustment,
cRT: a GAN should beat the best cheap fix) and ROC AUC, report every cell as mean [95% CI] over seeds with DeLong
tests against the baseline, and measure each generator's sample quality as train-on-synthetic / test-on-real AUC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cxrgan.balance import BalanceContext, make_balancer
from cxrgan.balance.gan import GANOversampler
from cxrgan.classify import TrainConfig
from cxrgan.data import CXRDataset
from cxrgan.evaluate.audit import AuditConfig, audit_generators, train_on_synthetic
from cxrgan.generators import DCGAN
from cxrgan.io import append_jsonl, read_jsonl, write_json
from cxrgan.recipes.compare import CompareConfig, prepare_splits, run_compare
from cxrgan.report.html import write_report
from cxrgan.report.tables import to_markdown, write_tables

# The paper's rows, SMOTE, the strongest loss-side fixes of the long-tail literature (Holste et al. 2022), then GANs.
# Not here: logit-adjust-posthoc (a per-class logit shift leaves AUC and the Youden-threshold metrics of this table
# unchanged, so its row would repeat "none") and ml-ros / ml-rus / mlsmote (on a binary task they are partial
# versions of the oversample / undersample / smote rows; they are for multi-label data).
METHODS = ("none", "class-weights", "undersample", "oversample", "smote", "focal", "ldam-drw", "logit-adjust", "crt",
           "dcgan", "cdcgan-a0.25", "cdcgan-a0.5", "cdcgan-a0.75")
PAPER_COLUMNS = ("precision", "recall (sens.)", "specificity", "F1", "ROC AUC")

# CPU default classifier: standard ResNet-18 at 64 px with bf16 autocast (about 2x fp32 here), few epochs.
CPU_CLASSIFIER = TrainConfig(model="resnet18", epochs=8, patience=3, lr=1e-3, bf16=True, augment="flip",
                             lr_schedule="cosine", progress=False)
FULL_CLASSIFIER = TrainConfig(model="resnet18", epochs=30, patience=5, lr=1e-4, augment="flip")


@dataclass(frozen=True)
class DcganAlphaConfig:
    """The recipe's settings; written with the run."""

    data: str  # compact Kermany-style .npz (binary normal / pneumonia, train/val/test)
    seeds: int = 3  # seeds per method (GANs are retrained per seed)
    first_seed: int = 0  # seed of the first run
    imbalance: tuple[int, int] = (3, 1)  # normal : pneumonia of the training split (paper: 4385 : 1460)
    methods: tuple[str, ...] = METHODS  # rows of the table, baseline first
    train: TrainConfig = field(default_factory=lambda: CPU_CLASSIFIER)  # the ResNet-18 settings
    tstr_images: int = 1000  # synthetic images per class for the train-on-synthetic / test-on-real AUC
    full: bool = False  # paper-size GANs and classifier training (for GPUs)
    generator_overrides: tuple[tuple[str, Any], ...] = ()  # GAN settings over the defaults, e.g. (("train_steps", 2000),)


def run_dcgan_alpha(config: DcganAlphaConfig, out: str | Path, resume_dir: str | Path | None = None,
                    command: str | None = None) -> Path:
    """Run every method x seed (through ``compare``), then the paper-shaped table and generator quality."""
    compare_config = CompareConfig(data=config.data, methods=config.methods, seeds=config.seeds,
                                   first_seed=config.first_seed, baseline=config.methods[0],
                                   imbalance=config.imbalance, train=config.train, full=config.full,
                                   generator_overrides=config.generator_overrides)
    run_dir = run_compare(compare_config, out, resume_dir=resume_dir, command=command, description="dcgan-alpha")
    write_json(run_dir / "recipe.json", {"recipe": "dcgan-alpha", "config": dataclasses.asdict(config)})
    train, val, test = prepare_splits(compare_config)
    quality = sample_quality(config, train, val, test, run_dir)
    audits = audit_table_of_generators(run_dir, config)
    table = paper_table(run_dir, config.methods, quality)
    notes = ("Rows as in Sun & Li's poster, plus SMOTE and the loss-side long-tail fixes (focal, LDAM-DRW, "
             "logit-adjust, cRT); cells are mean [95% CI over seeds], threshold metrics at the "
             "validation Youden threshold; DeLong p vs the baseline on seed-averaged scores. TSTR AUC: a small CNN "
             f"trained only on {config.tstr_images} synthetic images per class (seed {config.first_seed}'s generator), "
             "tested on the real test split; real-data reference in the 'none' row.")
    write_tables(table, run_dir / "paper_table", title="dcgan-alpha: GAN vs classic fixes", notes=notes)
    print(f"\ndcgan-alpha (Sun & Li table shape)\n\n{to_markdown(table)}\n\n{notes}\n")
    if len(audits):
        print(f"Synthetic-image audit (feature space of a small CNN trained on real images; reference = real train "
              f"vs real test)\n\n{to_markdown(audits)}\n")
    print(f"results: {run_dir}\nreport: {write_report(run_dir)}")
    return run_dir


AUDIT_COLUMNS = {"frechet_distance": "FD", "precision": "precision", "recall": "recall", "coverage": "coverage",
                 "two_sample_auc": "real-vs-synthetic AUC", "memorised_feature": "memorised (features)"}


def audit_table_of_generators(run_dir: Path, config: DcganAlphaConfig) -> pd.DataFrame:
    """Audit every generator the run trained (one shared feature model) and tabulate the headline numbers."""
    audit_config = AuditConfig(seed=config.first_seed, tstr=False,
                               device=config.train.device if config.train.device != "auto" else "cpu")
    results = audit_generators(run_dir, config.data, audit_config)
    rows = []
    for folder, result in results.items():
        metrics = result["metrics"]
        row = {"generator": Path(folder).name}
        for key, label in AUDIT_COLUMNS.items():
            if key in metrics:
                row[label] = f"{metrics[key]['synthetic']:.3f} (ref {metrics[key]['reference']:.3f})"
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        write_tables(table, run_dir / "audit_summary", title="Synthetic-image audit of every trained generator")
    return table


def paper_table(run_dir: Path, methods: tuple[str, ...], quality: dict[str, float]) -> pd.DataFrame:
    """The compare table cut to the paper's columns, with the DeLong p and the TSTR AUC per generator."""
    results = pd.read_csv(run_dir / "results.csv", dtype=str).fillna("")
    p_column = next((c for c in results.columns if c.startswith("DeLong p (seed-avg)")), None)
    rows = []
    for method in methods:
        match = results[results["method"] == method]
        if match.empty:
            continue
        row = {"method": method, **{c: match.iloc[0][c] for c in PAPER_COLUMNS}}
        row["DeLong p vs baseline"] = match.iloc[0][p_column] if p_column else ""
        row["TSTR AUC"] = f"{quality[method]:.3f}" if method in quality else ""
        rows.append(row)
    return pd.DataFrame(rows)


def sample_quality(config: DcganAlphaConfig, train: CXRDataset, val: CXRDataset, test: CXRDataset,
                   run_dir: Path) -> dict[str, float]:
    """Train-on-synthetic / test-on-real ROC AUC of the first seed's generators (and a train-on-real reference).

    The DCGAN row models pneumonia only, so its TSTR set pairs its samples with those of a DCGAN trained the same
    way on the normal class; each cDCGAN row samples both classes from its one conditional model. Cached in
    ``quality.jsonl`` so a resumed run does not retrain.
    """
    path = run_dir / "quality.jsonl"
    done = {r["method"]: r["tstr_auc"] for r in read_jsonl(path)}
    seed, n = config.first_seed, config.tstr_images
    audit = AuditConfig(seed=seed, device=config.train.device if config.train.device != "auto" else "cpu")
    context = BalanceContext(random_state=seed, device=audit.device, work_dir=run_dir / "generators", full=config.full,
                             generator_overrides=config.generator_overrides)
    for method in config.methods:
        if method in done or not (method == "none" or method.startswith(("dcgan", "cdcgan"))):
            continue
        rng = torch.Generator().manual_seed(seed)
        if method == "none":  # reference: the same classifier trained on n real images per class
            y = train.binary_targets()
            index = np.concatenate([np.random.default_rng(seed).choice(np.flatnonzero(y == c), n, replace=True)
                                    for c in (0, 1)])
            images, labels = train.images[index], train.labels[index]
        elif method == "dcgan":
            balancer = make_balancer(method, context)
            balancer.fit_resample(train)  # trained (or loaded from the run's cache) for the comparison
            value = int(balancer.model_.data_info_["target_value"])
            minority, _ = balancer.model_.sample(n, generator=rng)
            majority, _ = _other_class_dcgan(balancer, train, context, 1 - value).sample(n, generator=rng)
            images = np.concatenate([minority, majority])
            labels = np.array([[value]] * n + [[1 - value]] * n, dtype=np.float32)
        else:
            balancer = make_balancer(method, context)
            balancer.fit_resample(train)
            labels = np.array([[0.0]] * n + [[1.0]] * n, dtype=np.float32)
            images, _ = balancer.model_.sample(2 * n, labels=labels, generator=rng)
        done[method] = train_on_synthetic(images, labels, val, test, audit)
        append_jsonl(path, {"method": method, "tstr_auc": done[method]})
    return done


def _other_class_dcgan(balancer: GANOversampler, train: CXRDataset, context: BalanceContext, value: int) -> DCGAN:
    """A DCGAN of class ``value`` trained exactly as the balancer trains its minority DCGAN (two-class TSTR set)."""
    n_train = int((train.binary_targets() == value).sum())
    config = balancer.config_for(value, n_train)
    run_dir = Path(context.work_dir) / "gan" / f"dcgan-class{value}-seed{context.random_state}"
    return DCGAN(config, device=context.device, run_dir=run_dir).fit(train, resume=True)
