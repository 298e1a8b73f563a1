"""Recipe ``dcgan-alpha``: DCGAN and cDCGAN(alpha) oversampling against classic fixes on imbalanced pneumonia data.

Sun & Li (Stanford), "DCGAN and cDCGAN for pneumonia oversampling" (poster): Kermany pediatric CXRs made imbalanced
(4385 normal : 1460 pneumonia, i.e. 3 : 1), ResNet-18, rows = baseline, class weights, undersampling, oversampling,
DCGAN on the minority class, cDCGAN with alpha = P(sampled label is healthy) in {0.25, 0.5, 0.75}; columns =
precision, recall, specificity, F1. We add SMOTE, the loss-side long-tail fixes (focal, LDAM-DRW, logit adjustment,
cRT: a GAN should beat the best cheap fix), stronger generators (issue 13: the one-class latent diffusion model
``ldm``, the class-conditional one ``cldm-a0.5``, and ``synth-pretrain``: pretraining on a balanced set of ``cldm``
images, then fine-tuning on the real rows, as RoentGen-v2) and ROC AUC, report every cell as mean [95% CI] over
seeds with the seed-level paired test against the baseline (``cxrgan.evaluate.inference``), and measure each
generator's sample quality as train-on-synthetic / test-on-real AUC and by the synthetic-image audit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrgan.balance import BalanceContext, make_balancer
from cxrgan.balance.gan import GANOversampler
from cxrgan.balance.pretrain import SyntheticPretraining
from cxrgan.balance.synthetic import SyntheticFileRows
from cxrgan.classify import TrainConfig
from cxrgan.data import CXRDataset
from cxrgan.data.synthetic import SyntheticFiles
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import AuditConfig, audit_generators, train_on_synthetic
from cxrgan.evaluate.inference import Verdicts
from cxrgan.evaluate.summary import seed_cell
from cxrgan.generators import GeneratorSettings, GeneratorSpec, cache_entries, fit_or_load
from cxrgan.io import append_jsonl, read_jsonl
from cxrgan.recipes.compare import Compare, CompareConfig
from cxrgan.recipes.engine import Plan, Results, RunContext, Table, register_recipe

# The paper's rows, SMOTE, the strongest loss-side fixes of the long-tail literature (Holste et al. 2022), then GANs.
# Not here: logit-adjust-posthoc (a per-class logit shift leaves AUC and the Youden-threshold metrics of this table
# unchanged, so its row would repeat "none") and ml-ros / ml-rus / mlsmote (on a binary task they are partial
# versions of the oversample / undersample / smote rows; they are for multi-label data).
METHODS = ("none", "class-weights", "undersample", "oversample", "smote", "focal", "ldam-drw", "logit-adjust", "crt",
           "dcgan", "cdcgan-a0.25", "cdcgan-a0.5", "cdcgan-a0.75", "ldm", "cldm-a0.5", "synth-pretrain")
# The count-matched control of the rows that add generated images: random oversampling to balance adds as many
# minority rows as such a row adds synthetic ones, so "beats oversample" separates new images from more minority rows.
CONTROL = "oversample"
PAPER_COLUMNS = {"precision": "precision", "recall": "recall (sens.)", "specificity": "specificity", "f1": "F1",
                 "roc_auc": "ROC AUC"}

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
    generators: GeneratorSettings = GeneratorSettings()  # GAN steps / width / full (paper-size, GPU) preset
    allow_patient_overlap: bool = False  # accept a patient in two splits (counted and printed); off = an error
    allow_unknown_patients: bool = False  # accept a data file whose split was made per image, patients unknown
    external: tuple[str, ...] = ()  # external sites (binary .npz of other hospitals); Kermany: NIH pneumonia
    external_labels: tuple[tuple[str, str], ...] = ()  # (site class name, our class name) where names differ
    synthetic: SyntheticFiles = SyntheticFiles()  # --synthetic files, one row synthetic:<stem> each, and their mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", self.synthetic.with_rows(tuple(self.methods)))


AUDIT_COLUMNS = {"frechet_distance": "FD", "precision": "precision", "recall": "recall", "coverage": "coverage",
                 "two_sample_auc": "real-vs-synthetic AUC", "memorised_feature": "memorised (features)"}


@register_recipe
class DcganAlpha(Compare):
    """Sun & Li's rows through the compare engine, then TSTR AUC and an audit of every generator."""

    kind = "dcgan-alpha"
    config_class = DcganAlphaConfig
    control = CONTROL

    def controlled_methods(self) -> tuple[str, ...]:
        """Every row that adds generated minority images (a ``GANOversampler``, or a --synthetic file in balance
        mode, which adds as many; not ``synth-pretrain``, which adds none) must beat count-matched oversampling as
        well as the baseline."""
        context = BalanceContext(random_state=self.config.first_seed, synthetic=self.config.synthetic)
        balancers = {m: make_balancer(m, context) for m in self.config.methods}
        return tuple(m for m, b in balancers.items() if isinstance(b, GANOversampler)
                     or (isinstance(b, SyntheticFileRows) and b.mode == "balance"))

    @property
    def compare_config(self) -> CompareConfig:
        c = self.config
        return CompareConfig(data=c.data, methods=c.methods, seeds=c.seeds, first_seed=c.first_seed,
                             baseline=c.methods[0], imbalance=c.imbalance, train=c.train, generators=c.generators,
                             allow_patient_overlap=c.allow_patient_overlap,
                             allow_unknown_patients=c.allow_unknown_patients, external=c.external,
                             external_labels=c.external_labels, synthetic=c.synthetic)

    def plan(self) -> Plan:
        if self.config.tstr_images < 1:
            raise CxrganError(f"--tstr-images must be at least 1, got {self.config.tstr_images}")
        return super().plan()

    def finish(self, run: RunContext, results: Results) -> None:
        """TSTR AUC of the first seed's generators (cached in quality.jsonl) and the audit of every generator."""
        super().finish(run, results)  # the --synthetic files' audits
        sample_quality(self.config, self.train_, self.val_, self.test_, run.run_dir)
        audit_config = AuditConfig(seed=self.config.first_seed, tstr=False,
                                   device=self.config.train.device if self.config.train.device != "auto" else "cpu")
        audit_generators(run.run_dir, self.config.data, audit_config)  # the generators not audited yet

    def tables(self, results: Results) -> list[Table]:
        tables = super().tables(results)
        quality = {r["method"]: r["tstr_auc"] for r in read_jsonl(results.run_dir / "quality.jsonl")}
        sites = self.external_sets(results)
        paper = paper_table(results, self.config.methods, quality, Verdicts(self.all_comparisons(results)), sites,
                            self.config.methods[0], self.controlled_methods() if CONTROL in self.config.methods else ())
        notes = ("Rows as in Sun & Li's poster, plus SMOTE and the loss-side long-tail fixes (focal, LDAM-DRW, "
                 "logit-adjust, cRT); cells are mean [95% CI over seeds], threshold metrics at "
                 "the validation Youden threshold; Δ ROC AUC and verdict vs the baseline, and for the generator rows "
                 f"vs the count-matched control '{CONTROL}', from the seed-level paired test with Holm adjustment over "
                 "all of them (see the verdict table). TSTR AUC: a small CNN trained only on "
                 f"{self.config.tstr_images} synthetic images per class (seed {self.config.first_seed}'s generator), "
                 "tested on the real test split; real-data reference in the 'none' row."
                 + (f" External site(s): {', '.join(sites)} (for Kermany, adult NIH pneumonia vs no finding: the same "
                    "labels at another hospital), every row scored by the same models." if sites else ""))
        tables.append(Table("paper_table", "dcgan-alpha: GAN vs classic fixes (Sun & Li table shape)", paper, notes,
                            role="main"))
        audits = audit_summary(results.run_dir)
        if len(audits):
            tables.append(Table("audit_summary", "Synthetic-image audit of every trained generator", audits,
                                "Feature space of a small CNN trained on real images; reference = real train vs real "
                                "test. Steps: done / planned, as each generator was trained.", role="detail"))
        return tables


def audit_summary(run_dir: Path) -> pd.DataFrame:
    """The headline audit numbers of every generator audited in the run (``generators/**/audit/audit.json``)."""
    rows = []
    for path in sorted((run_dir / "generators").rglob("audit/audit.json")):
        metrics = json.loads(path.read_text())["metrics"]
        trained = cache_entries(path.parent.parent)[0]  # a run grown later may hold generators of older presets
        row = {"generator": path.parent.parent.name, "steps": trained["steps"],
               "training rows": trained["training rows"]}
        for key, label in AUDIT_COLUMNS.items():
            if key in metrics:
                row[label] = f"{metrics[key]['synthetic']:.3f} (ref {metrics[key]['reference']:.3f})"
        rows.append(row)
    return pd.DataFrame(rows)


def paper_table(results: Results, methods: tuple[str, ...], quality: dict[str, float], verdicts: Verdicts,
                sites: list[str], baseline: str | None = None, controlled: tuple[str, ...] = ()) -> pd.DataFrame:
    """The paper's columns per method (mean [CI] over seeds), Δ and verdict against the baseline (default the first
    method) on the internal test split and on each external site, Δ and verdict of the ``controlled`` rows against
    the count-matched control ``CONTROL``, and the TSTR AUC. A run whose rows have finished different numbers of
    seeds (one grown by new methods and not finished) gets a "seeds" column, so no row looks more complete than it
    is."""
    rows = []
    baseline = baseline or methods[0]
    for method in methods:
        runs = results.where(method=method)
        if not runs:
            continue
        row = {"method": method, "seeds": len(runs)}
        for key, label in PAPER_COLUMNS.items():
            row[label] = seed_cell([r["metrics"][key] for r in runs])
        internal = {"site": "internal test"} if sites else {}
        row["Δ ROC AUC vs baseline"], row["verdict"] = verdicts.cells(method=method, vs=baseline, **internal)
        if controlled:
            row[f"Δ vs {CONTROL}"], row[f"verdict vs {CONTROL}"] = (
                verdicts.cells(method=method, vs=CONTROL, **internal) if method in controlled else ("", ""))
        for site in sites:
            row[f"ROC AUC @ {site}"] = seed_cell([r["metrics"][f"roc_auc@{site}"] for r in runs])
            row[f"Δ @ {site}"], row[f"verdict @ {site}"] = verdicts.cells(method=method, vs=baseline, site=site)
        row["TSTR AUC"] = f"{quality[method]:.3f}" if method in quality else ""
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table) and table["seeds"].nunique() == 1:  # every row has every seed: the title says how many
        table = table.drop(columns="seeds")
    return table


def sample_quality(config: DcganAlphaConfig, train: CXRDataset, val: CXRDataset, test: CXRDataset,
                   run_dir: Path) -> dict[str, float]:
    """Train-on-synthetic / test-on-real ROC AUC of the first seed's generators (and a train-on-real reference).

    A one-class row (``dcgan``, ``ldm``) models pneumonia only, so its TSTR set pairs its samples with those of the
    same generator trained the same way on the normal class; a conditional row (``cdcgan-aX``, ``cldm-aX``,
    ``synth-pretrain``) samples both classes from its one conditional model. Cached in ``quality.jsonl`` by method
    and by generator cache entry, so a resumed run does not retrain and rows sharing a generator (``cldm-a0.5`` and
    ``synth-pretrain``) share one TSTR.
    """
    path = run_dir / "quality.jsonl"
    records = read_jsonl(path)
    done = {r["method"]: r["tstr_auc"] for r in records}
    by_generator = {r["generator"]: r["tstr_auc"] for r in records if r.get("generator")}
    seed, n = config.first_seed, config.tstr_images
    audit = AuditConfig(seed=seed, device=config.train.device if config.train.device != "auto" else "cpu")
    context = BalanceContext(random_state=seed, device=audit.device, work_dir=run_dir / "generators",
                             generators=config.generators, synthetic=config.synthetic)
    for method in config.methods:
        balancer = None if method == "none" else make_balancer(method, context)
        if method in done or not (method == "none" or isinstance(balancer, (GANOversampler, SyntheticPretraining))):
            continue
        rng = torch.Generator().manual_seed(seed)
        generator = None
        if method != "none":
            balancer.fit_resample(train)  # trained (or loaded from the run's cache) for the comparison
            generator = balancer.model_.run_dir.name if balancer.model_.run_dir is not None else None
        if generator in by_generator:  # another row's generator: its TSTR is this row's
            done[method] = by_generator[generator]
            append_jsonl(path, {"method": method, "tstr_auc": done[method], "generator": generator})
            continue
        if method == "none":  # reference: the same classifier trained on n real images per class
            y = train.binary_targets()
            index = np.concatenate([np.random.default_rng(seed).choice(np.flatnonzero(y == c), n, replace=True)
                                    for c in (0, 1)])
            images, labels = train.images[index], train.labels[index]
        elif isinstance(balancer, GANOversampler) and balancer.one_class:
            value = int(balancer.model_.data_info_["target_value"])
            minority, _ = balancer.model_.sample(n, generator=rng)
            majority, _ = _other_class_model(balancer, train, context, 1 - value).sample(n, generator=rng)
            images = np.concatenate([minority, majority])
            labels = np.array([[value]] * n + [[1 - value]] * n, dtype=np.float32)
        else:
            labels = np.array([[0.0]] * n + [[1.0]] * n, dtype=np.float32)
            images, _ = balancer.model_.sample(2 * n, labels=labels, generator=rng)
        done[method] = train_on_synthetic(images, labels, val, test, audit)
        if generator is not None:
            by_generator[generator] = done[method]
        append_jsonl(path, {"method": method, "tstr_auc": done[method], "generator": generator})
    return done


def _other_class_model(balancer: GANOversampler, train: CXRDataset, context: BalanceContext, value: int):
    """A one-class generator of class ``value`` trained exactly as the balancer trains its minority model (the
    two-class TSTR set of a one-class row)."""
    return fit_or_load(GeneratorSpec(balancer.method, balancer.config_for(value)), train, context.work_dir,
                       context.device)
