"""Recipe ``cgan-regimes``: no / flip / label-vector cGAN augmentation of rare findings across 1-100 % data regimes.

Sundaram & Hulkund (2021), "GAN-based Data Augmentation for Chest X-ray Classification" (KDD DSHealth): CheXpert,
three findings present in < 5 % of images, a conditional GAN on 14-dim label vectors (method A of
``cxrgan.balance.multilabel``: minimum images so each is >= 15 % of the combined set), stratified training
regimes of 1 %, 10 %, 50 %, 100 % with one fixed held-out test set, and per-finding test AUC of the augmented
findings for no augmentation, flips on the fly (p = 0.5) and GAN augmentation (their Tables 1 and 2).

As in the paper the GAN is trained once per seed on the full training split (theirs was pretrained on all of
CheXpert) and reused by every regime; the label vectors come from the regime's own rows. Regimes are nested
(1 % inside 10 % inside ...; ``cxrgan.data.splits.nested_fractions``). Cells are mean [95 % CI] over seeds
(Student t; training-seed variation on fixed splits). The helpers here (data loading, one scored run, seed
tables) are shared with ``dcgan_rare_findings``.

CPU budget of the defaults on the NIH subset (463 training rows; measured with one thread while another job
used the second core): the cDCGAN (width 32, bf16, DiffAugment, 500 steps) takes 0.47 s a step, about 4 min per
seed; ResNet-18 bf16 trains at about 205 images/s, and the regimes hold 5 / 47 / 294 / 463 real rows (660 with
GAN images at 100 %), so 3 methods x 4 regimes x 12 epochs is about 3 min per seed. Five seeds: about 35 min.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from cxrgan.balance.multilabel import (
    DEFAULT_MIN_POSITIVES,
    LabelVectorCGAN,
    choose_rare_findings,
    plan_label_vectors,
)
from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.data import CXRDataset, apply_uncertainty_policy, detect_layout, load_chexpert_raw, load_nih, load_npz, nested_fractions
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.evaluate.metrics import multilabel_auc
from cxrgan.evaluate.summary import paired_seed_cells, seed_cell
from cxrgan.generators import GeneratorSettings, GeneratorSpec, fit_or_load
from cxrgan.io import append_jsonl, read_jsonl, write_text
from cxrgan.recipes import NIH_SUBSET_64
from cxrgan.report.tables import to_markdown, write_tables
from cxrgan.runs import new_run_dir, write_config

# ../shared/data relative to the repository (or $CXRGAN_DATA), as the tests find it
DEFAULT_DATA = NIH_SUBSET_64
METHODS = ("none", "flip", "gan")
# CPU default classifier: ResNet-18 with bf16 autocast at 64 px. Measured here (one thread, NIH subset, 713 rows):
# 205 images/s including validation, vs 145 for small-cnn; so a 463-row regime x 12 epochs is about 30 s.
CPU_CLASSIFIER = TrainConfig(model="resnet18", epochs=12, patience=4, lr=1e-3, bf16=True, lr_schedule="cosine",
                             progress=False)
FULL_CLASSIFIER = TrainConfig(model="densenet121", epochs=30, patience=5, lr=1e-4)


@dataclass(frozen=True)
class CganRegimesConfig:
    """The recipe's settings; written to the run's config.json."""

    data: str = DEFAULT_DATA  # compact .npz with findings, or a CheXpert / NIH CSV (or folder) with its images
    regimes: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)  # nested stratified shares of the training split
    methods: tuple[str, ...] = METHODS  # none, flip (on the fly, p = 0.5), gan (label-vector cGAN)
    seeds: int = 5  # classifier (and GAN) seeds
    first_seed: int = 0  # seed of the first run
    data_seed: int = 0  # seed of the regime subsets (and of CSV splits); one fixed split for every run
    uncertainty: str = "ones"  # U-policy (the paper maps uncertain to 1, U-Ones); NIH has no uncertain labels
    findings: tuple[str, ...] = ()  # findings to augment; empty = the rarest with enough positives
    n_findings: int = 3  # how many to choose (the paper: three findings under 5 %)
    min_positives: int = DEFAULT_MIN_POSITIVES  # floor on training positives of a chosen finding
    min_test_positives: int = 2  # and on test positives (a finding without them has no AUC)
    threshold: float = 0.15  # share each augmented finding must reach in the combined set
    size: int = 64  # image side when decoding a CSV source
    train: TrainConfig = field(default_factory=lambda: CPU_CLASSIFIER)  # classifier settings
    generators: GeneratorSettings = GeneratorSettings()  # GAN steps / width / full (paper-size, GPU) preset


# ---- shared by both multi-label recipes -------------------------------------------------------------------------
def load_findings(data: str | Path, uncertainty: str, size: int = 64, data_seed: int = 0) -> tuple[CXRDataset, np.ndarray]:
    """A multi-label dataset with ``uncertainty`` applied, and its row-aligned raw findings (1 / 0 / -1 / NaN).

    ``data`` is a compact .npz with ``findings`` (``cxrgan data prepare`` output), a CheXpert CSV or folder, or an
    NIH ``Data_Entry_2017.csv`` or its folder (decoded at ``size`` px, split by patient with ``data_seed``).
    """
    path = Path(data)
    layout = detect_layout(path)
    if layout == "compact":
        dataset = load_npz(path, target="findings", uncertainty=uncertainty)
        with np.load(path, allow_pickle=False) as archive:
            return dataset, archive["findings"].astype(np.float32)
    if layout == "chexpert":
        return load_chexpert_raw(path, size=size, uncertainty=uncertainty, random_state=data_seed)
    if layout == "nih":
        root, csv = (path.parent, path) if path.is_file() else (path, None)
        dataset = load_nih(root, size=size, csv=csv, random_state=data_seed)
        return dataset, dataset.labels.copy()  # NIH labels are 1 / 0 only
    raise CxrganError(f"{path}: a {layout!r} source has no findings; give a findings .npz, a CheXpert or NIH CSV")


def with_policy(dataset: CXRDataset, raw: np.ndarray, policy: str) -> CXRDataset:
    """The same rows and splits with the labels of another uncertainty policy (blank read as negative)."""
    return dataclasses.replace(dataset, labels=apply_uncertainty_policy(raw, policy, blank="zero"))


def train_and_score(train: CXRDataset, val: CXRDataset, test: CXRDataset, config: TrainConfig, seed: int) -> dict:
    """Train one classifier (best val AUC kept) and return its per-finding test ROC AUC plus ``macro``."""
    result = train_classifier(train, val, config, seed)
    device = resolve_device(config.device)
    scores = predict(result.model, test, device, config.eval_batch_size, config.bf16)
    return {"auc": multilabel_auc(test.labels, scores, test.label_names), "best_epoch": result.best_epoch,
            "best_val_auc": result.best_val_auc}


def test_positives_note(test: CXRDataset, findings: tuple[str, ...]) -> str:
    """How many test positives each reported finding has: with a handful, one image moves its AUC a lot, and the
    seed interval (training variation on one fixed test set) does not include that test-set uncertainty."""
    counts = ", ".join(f"{f} {int(test.positives()[test.label_names.index(f)])}" for f in findings)
    return (f"Test positives of {len(test)} test rows: {counts}; with this few, one image moves a finding's AUC by "
            "up to 1/positives, which the seed interval does not include.")


# ---- the recipe -------------------------------------------------------------------------------------------------
Prepared = tuple[CXRDataset, TrainConfig]
MethodFn = Callable[[CXRDataset, TrainConfig, "LabelVectorCGAN | None"], Prepared]
REGIME_METHODS: dict[str, MethodFn] = {
    "none": lambda train, config, balancer: (train, dataclasses.replace(config, augment="none")),
    "flip": lambda train, config, balancer: (train, dataclasses.replace(config, augment="flip")),
    "gan": lambda train, config, balancer: (balancer.fit_resample(train), dataclasses.replace(config, augment="none")),
}


def run_cgan_regimes(config: CganRegimesConfig, out: str | Path, resume_dir: str | Path | None = None,
                     command: str | None = None) -> Path:
    """Run every regime x method x seed (resumable) and write Tables 1 and 2; return the run directory."""
    unknown = [m for m in config.methods if m not in REGIME_METHODS]
    if unknown:
        raise CxrganError(f"unknown method(s) {unknown}; available: {list(REGIME_METHODS)}")
    dataset, _ = load_findings(config.data, config.uncertainty, config.size, config.data_seed)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    findings = config.findings or choose_rare_findings(train, config.n_findings, config.min_positives, test,
                                                       config.min_test_positives)
    regimes = nested_fractions(train, config.regimes, random_state=config.data_seed)
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(out, f"cgan-regimes-{Path(config.data).stem}")
    write_config(run_dir, config, kind="cgan-regimes")
    if command:
        with open(run_dir / "command.txt", "a", encoding="utf-8") as f:
            f.write(command + "\n")
    print(f"augmented findings: {', '.join(findings)} (training positives "
          f"{[int(train.positives()[train.label_names.index(f)]) for f in findings]})")
    done = {(r["regime"], r["method"], r["seed"]) for r in read_jsonl(run_dir / "results.jsonl")}
    device = str(resolve_device(config.train.device))
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        model = None
        for fraction, regime in regimes.items():
            for method in config.methods:
                if (fraction, method, seed) in done:
                    continue
                started = time.perf_counter()
                balancer = None
                if method == "gan":
                    if model is None:  # once per seed, on the full training split (the paper's pretrained GAN)
                        spec = GeneratorSpec.resolve("cgan-labelvec", config.generators, seed=seed)
                        model = fit_or_load(spec, train, run_dir / "generators", device)
                    balancer = LabelVectorCGAN(model.config, findings, config.threshold, model=model, device=device,
                                               random_state=seed)
                rows, train_config = REGIME_METHODS[method](regime, config.train, balancer)
                record = {"regime": fraction, "method": method, "seed": seed, "train_rows": len(rows),
                          "synthetic": int(rows.synthetic.sum())}
                if balancer is not None:
                    record["finding_table"] = balancer.table_.to_dict(orient="records")
                    record["skipped"] = list(balancer.skipped_)
                if balancer is not None:
                    print(f"  {fraction:>5g}   gan seed {seed}: generated " + ", ".join(
                        f"{t['finding']} {t['generated for it']}" for t in record["finding_table"]))
                record.update(train_and_score(rows, val, test, train_config, seed))
                record["seconds"] = round(time.perf_counter() - started, 1)
                append_jsonl(run_dir / "results.jsonl", record)
                print(f"  {fraction:>5g} {method:>5s} seed {seed}: "
                      + ", ".join(f"{f} {record['auc'][f]:.3f}" for f in findings) + f" ({record['seconds']} s)")
    return finish_cgan_regimes(run_dir, config, findings, regimes, test)


def plan_cgan_regimes(config: CganRegimesConfig) -> pd.DataFrame:
    """Dry run: the chosen findings and, per regime, real rows and the images the 15 % rule would generate for the
    first seed's label-vector draws; nothing is trained."""
    dataset, _ = load_findings(config.data, config.uncertainty, config.size, config.data_seed)
    train, test = dataset.split("train"), dataset.split("test")
    findings = config.findings or choose_rare_findings(train, config.n_findings, config.min_positives, test,
                                                       config.min_test_positives)
    rows = []
    for fraction, regime in nested_fractions(train, config.regimes, random_state=config.data_seed).items():
        present = [f for f in findings if regime.positives()[regime.label_names.index(f)] > 0]
        columns = [regime.label_names.index(f) for f in present]
        drawn_for = (plan_label_vectors(regime.labels, columns, config.threshold,
                                        np.random.default_rng(config.first_seed))[1] if columns else np.zeros(0))
        row: dict[str, Any] = {"regime": f"{fraction:.0%}", "real rows": len(regime)}
        for finding in findings:
            j = regime.label_names.index(finding)
            row[f"{finding} +"] = int(regime.positives()[j])
            row[f"{finding} generated"] = int((drawn_for == j).sum())
        row["augmented rows"] = len(regime) + len(drawn_for)
        rows.append(row)
    return pd.DataFrame(rows)


def finish_cgan_regimes(run_dir: Path, config: CganRegimesConfig, findings: tuple[str, ...],
                        regimes: dict[float, CXRDataset], test: CXRDataset) -> Path:
    """Tables from results.jsonl: generated counts per regime (Table 1), AUC per regime x method (Table 2)."""
    records = read_jsonl(run_dir / "results.jsonl")
    counts = counts_table(records, findings, regimes, config.first_seed)
    table = auc_table(records, findings, config.regimes, config.methods)
    notes = (f"Test ROC AUC of the augmented findings (real test split, {config.seeds} seed(s)); mean [95% CI over "
             "seeds]. 'mean augmented' averages the augmented findings' AUC per seed. flip = random horizontal/vertical "
             "flips on the fly with p = 0.5. A regime without a positive row of a finding generates nothing for it. "
             "'vs none' pairs each seed's mean augmented AUC with the no-augmentation run of the same seed and regime "
             f"(paired t-test). {test_positives_note(test, findings)}")
    write_tables(counts, run_dir / "table1_generated", title="cgan-regimes: images generated per finding (Table 1)")
    write_tables(table, run_dir / "table2_auc", title="cgan-regimes: AUC of augmented findings (Table 2)", notes=notes)
    text = (f"cgan-regimes: {Path(config.data).name}, findings {', '.join(findings)}, threshold {config.threshold:.0%}\n\n"
            f"Table 1 (seed {config.first_seed}): generated images per finding\n\n{to_markdown(counts)}\n\n"
            f"Table 2: test AUC\n\n{to_markdown(table)}\n\n{notes}\n\nresults: {run_dir}\n")
    write_text(run_dir / "summary.md", text)
    print("\n" + text)
    return run_dir


def counts_table(records: list[dict], findings: tuple[str, ...], regimes: dict[float, CXRDataset],
                 seed: int) -> pd.DataFrame:
    """Per regime: real rows, images generated for each finding, augmented set size (the paper's Table 1)."""
    rows = []
    for fraction, regime in regimes.items():
        row: dict[str, Any] = {"regime": f"{fraction:.0%}", "real rows": len(regime)}
        match = [r for r in records if r["regime"] == fraction and r["method"] == "gan" and r["seed"] == seed]
        generated = {t["finding"]: t["generated for it"] for t in match[0]["finding_table"]} if match else {}
        for finding in findings:
            row[finding] = generated.get(finding, 0) if match else "n/a"
        row["augmented rows"] = match[0]["train_rows"] if match else "n/a"
        rows.append(row)
    return pd.DataFrame(rows)


def auc_table(records: list[dict], findings: tuple[str, ...], fractions: tuple[float, ...],
              methods: tuple[str, ...]) -> pd.DataFrame:
    """Rows regime x method, columns the augmented findings, their per-seed mean, the all-finding macro AUC, and
    the per-seed mean augmented AUC paired against the ``none`` run of the same seed and regime."""
    def mean_augmented(run: dict) -> float:
        values = [run["auc"][f] for f in findings]
        return float(np.nanmean(values)) if np.isfinite(values).any() else np.nan

    rows = []
    for fraction in fractions:
        baseline = pd.Series({r["seed"]: mean_augmented(r) for r in records
                              if r["regime"] == fraction and r["method"] == "none"}, dtype=float)
        for method in methods:
            runs = [r for r in records if r["regime"] == fraction and r["method"] == method]
            if not runs:
                continue
            row = {"regime": f"{fraction:.0%}", "method": method, "seeds": len(runs)}
            for finding in findings:
                row[finding] = seed_cell([r["auc"][finding] for r in runs])
            row["mean augmented"] = seed_cell([mean_augmented(r) for r in runs])
            row["macro (all findings)"] = seed_cell([r["auc"]["macro"] for r in runs])
            row["vs none"], row["paired t p"] = ("", "") if method == "none" else paired_seed_cells(
                pd.Series({r["seed"]: mean_augmented(r) for r in runs}, dtype=float), baseline)
            rows.append(row)
    return pd.DataFrame(rows)
