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

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrgan.classify import TrainConfig
from cxrgan.engine.spec import nest_run_fields
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import AuditConfig, reference_cells, train_feature_model, train_on_synthetic
from cxrgan.evaluate.generator_audit import audit_generator
from cxrgan.evaluate.verdicts import Verdicts
from cxrgan.evaluate.summary import seed_cell
from cxrgan.generators import GeneratorSpec, cache_entries, fit_or_load, generator_class
from cxrgan.generators.base import ImageTranslator, image_fingerprint
from cxrgan.generators.cache import cache_dir
from cxrgan.io import read_jsonl
from cxrgan.recipes.compare import Compare, CompareConfig, GeneratorUse
from cxrgan.engine import Cell, CellResult, Plan, Results, RunContext, Table, register_recipe
from cxrgan.engine.probes import generator_seconds, training_seconds

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
REAL = "real"  # the TSTR cell of the reference: the same classifier trained on real rows


@dataclass(frozen=True)
class DcganAlphaConfig:
    """The recipe's settings; written with the run."""

    compare: CompareConfig  # data, rows (methods, the first the baseline), 3:1 imbalance, seeds, classifier, GANs
    tstr_images: int = 1000  # synthetic images per class for the train-on-synthetic / test-on-real AUC

    @classmethod
    def upgrade_stored(cls, values: dict) -> dict:
        """A config.json written before the recipe contained a ``CompareConfig``: its comparison fields nested."""
        if "compare" in values:
            return values
        flat = {"methods": list(METHODS), "imbalance": [3, 1], **values}
        tstr = {"tstr_images": flat.pop("tstr_images")} if "tstr_images" in flat else {}
        compare = nest_run_fields(flat, flat.get("train", {}).get("device"))
        return {"compare": {**compare, "baseline": flat["methods"][0]}, **tstr}


AUDIT_COLUMNS = {"frechet_distance": "FD", "precision": "precision", "recall": "recall", "coverage": "coverage",
                 "two_sample_auc": "real-vs-synthetic AUC", "memorised_feature": "memorised (features)"}


@register_recipe
class DcganAlpha(Compare):
    """Sun & Li's rows through the compare engine, then analysis cells: the TSTR AUC of the first seed's generators
    and an audit of every generator the run trains, against the rows it trained on."""

    kind = "dcgan-alpha"
    config_class = DcganAlphaConfig
    control = CONTROL  # the rows that add generated minority images (GAN rows, --synthetic files in balance mode;
    #   not synth-pretrain, which adds none) declare oversampling their count-matched control

    @property
    def compare_config(self) -> CompareConfig:
        return self.config.compare

    def plan(self) -> Plan:
        if self.config.tstr_images < 1:
            raise CxrganError(f"--tstr-images must be at least 1, got {self.config.tstr_images}")
        return super().plan()

    # ---- analysis cells ---------------------------------------------------------------------------------------
    def analysis_cells(self) -> list[Cell]:
        """TSTR of the real reference and of each generator the first seed's rows sample from; then an audit of
        every generator of every seed (and of the other-class generators the TSTR sets of one-class rows add)."""
        self.tstr_sources_: dict[str, GeneratorUse] = {}  # generator entry -> its first use
        self.tstr_of_method_: dict[str, str] = {}  # row -> the entry its TSTR comes from (the alphas share one)
        for method in self.compare_config.methods:
            for name, use in self.generator_entries((method,), (self.spec.first_seed,)).items():
                if not issubclass(generator_class(use.spec.name), ImageTranslator):
                    self.tstr_sources_.setdefault(name, use)
                    self.tstr_of_method_.setdefault(method, name)
        others = [other for other in map(_other_class, self.tstr_sources_.values()) if other is not None]
        self.audited_ = {**self.generator_entries(), **{other.name: other.use for other in others}}
        return (super().analysis_cells()
                + [Cell.of(analysis="tstr", generator=name) for name in (REAL, *self.tstr_sources_)]
                + [Cell.of(analysis="audit", generator=name) for name in sorted(self.audited_)])

    def analyses(self):
        return {**super().analyses(), "tstr": self.tstr_cell, "audit": self.audit_cell}

    def audit_config(self, tstr: bool = True) -> AuditConfig:
        """The settings of the TSTR classifiers and the audits: seeded by the first seed, on the run's device."""
        return AuditConfig(seed=self.spec.first_seed, tstr=tstr, device=self.spec.device)

    def tstr_cell(self, cell: Cell, run: RunContext) -> CellResult:
        """Train-on-synthetic / test-on-real ROC AUC: a small CNN trained only on ``tstr_images`` images per class
        from one generator (a one-class row's pairs its class with the same generator trained on the other class;
        a conditional row's samples both classes), or on as many real rows per class (the reference)."""
        n, seed = self.config.tstr_images, self.spec.first_seed
        if cell["generator"] == REAL:
            y = self.train_.binary_targets()
            index = np.concatenate([np.random.default_rng(seed).choice(np.flatnonzero(y == c), n, replace=True)
                                    for c in (0, 1)])
            images, labels = self.train_.images[index], self.train_.labels[index]
        else:
            images, labels = self.synthetic_set(self.tstr_sources_[cell["generator"]], run.run_dir, n, seed)
        value = train_on_synthetic(images, labels, self.val_, self.test_, self.audit_config())
        return CellResult({"tstr_auc": value}, summary=f"TSTR AUC {value:.3f}")

    def synthetic_set(self, use: GeneratorUse, run_dir: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` synthetic images of each class from the generator of ``use`` (trained, or loaded from the cache)."""
        work, device = run_dir / "generators", str(self.spec.torch_device())
        model = fit_or_load(use.spec, use.rows, work, device)
        rng = torch.Generator().manual_seed(seed)
        other = _other_class(use)
        if other is None:
            labels = np.array([[0.0]] * n + [[1.0]] * n, dtype=np.float32)
            return model.sample(2 * n, labels=labels, generator=rng)[0], labels
        value = int(model.data_info_["target_value"])
        own, _ = model.sample(n, generator=rng)
        others, _ = fit_or_load(other.use.spec, other.use.rows, work, device).sample(n, generator=rng)
        return np.concatenate([own, others]), np.array([[value]] * n + [[1 - value]] * n, dtype=np.float32)

    def audit_cell(self, cell: Cell, run: RunContext) -> CellResult:
        """The synthetic-image audit of one generator against the rows it trained on (a one-class generator: their
        rows of its class), in the feature space of a small CNN trained once per run on those rows."""
        use = self.audited_[cell["generator"]]
        work = run.run_dir / "generators"
        fit_or_load(use.spec, use.rows, work, str(self.spec.torch_device()))  # trained by its row's cell, or here
        folder = cache_dir(work, use.spec, use.rows)
        config = self.audit_config(tstr=False)
        features = train_feature_model(use.rows, self.val_, config,
                                       run.run_dir / "models" / f"audit-features-{image_fingerprint(use.rows.images)}.pt")
        result = audit_generator(folder, use.rows, self.val_, self.test_, config=config, feature_model=features)
        trained = cache_entries(folder)[0]
        metrics = {key: result["metrics"][key] for key in AUDIT_COLUMNS if key in result["metrics"]}
        fd = metrics["frechet_distance"]
        return CellResult({"metrics": metrics, "steps": trained["steps"], "training rows": trained["training rows"],
                           "real_rows": result["real_rows"], "reference_rows": result["n_train"]},
                          summary=f"FD {fd['synthetic']:.3f} (reference {fd['reference']:.3f})")

    def analysis_seconds(self, cell: Cell, trained: set[str]) -> float:
        """TSTR: its classifier, and the other-class generator of a one-class row; audit: the feature model
        (once) and a generator no row trained (sampling and metrics are left out: seconds)."""
        device = str(self.spec.torch_device())
        config = self.audit_config()
        seconds, name = 0.0, cell["generator"]
        if cell["analysis"] == "audit":
            needed = [name]
        else:
            other = _other_class(self.tstr_sources_[name]) if name != REAL else None
            needed = [other.name] if other is not None else []
        for entry in needed:
            if entry not in trained:
                trained.add(entry)
                seconds += generator_seconds(self.audited_[entry].spec, self.audited_[entry].rows, device)
        classifier = TrainConfig(model=config.feature_model, batch_size=config.batch_size, device=config.device)
        if cell["analysis"] == "tstr":
            return seconds + training_seconds(dataclasses.replace(classifier, epochs=config.tstr_epochs),
                                              config.tstr_epochs * 2 * self.config.tstr_images,
                                              len(self.val_) + len(self.test_), self.train_.image_size, 1)
        if "feature model" not in trained:
            trained.add("feature model")
            seconds += training_seconds(dataclasses.replace(classifier, epochs=config.feature_epochs),
                                        config.feature_epochs * len(self.train_), len(self.val_),
                                        self.train_.image_size, 1)
        return seconds

    # ---- tables -----------------------------------------------------------------------------------------------
    def tstr_by_method(self, results: Results) -> dict[str, float]:
        """Each row's TSTR AUC (its first-seed generator's; the baseline row holds the real reference)."""
        by_generator = {r["generator"]: r["tstr_auc"] for r in results.analysis("tstr")}
        if not by_generator:  # a run made before TSTR was an analysis cell kept it in quality.jsonl
            return {r["method"]: r["tstr_auc"] for r in read_jsonl(results.run_dir / "quality.jsonl")}
        rows = {self.compare_config.baseline: REAL, **self.tstr_of_method_}
        return {method: by_generator[name] for method, name in rows.items() if name in by_generator}

    def tables(self, results: Results) -> list[Table]:
        tables = super().tables(results)
        quality = self.tstr_by_method(results)
        sites = self.external_sets(results)
        c = self.compare_config
        paper = paper_table(results, c.methods, quality, Verdicts(self.all_comparisons(results)), sites, c.baseline,
                            self.controlled_methods() if CONTROL in c.methods else ())
        notes = ("Rows as in Sun & Li's poster, plus SMOTE and the loss-side long-tail fixes (focal, LDAM-DRW, "
                 "logit-adjust, cRT); cells are mean [95% CI over seeds], threshold metrics at "
                 "the validation Youden threshold; Δ ROC AUC and verdict vs the baseline, and for the generator rows "
                 f"vs the count-matched control '{CONTROL}', from the seed-level paired test with Holm adjustment over "
                 "all of them (see the verdict table). TSTR AUC: a small CNN trained only on "
                 f"{self.config.tstr_images} synthetic images per class (seed {self.spec.first_seed}'s generator), "
                 "tested on the real test split; real-data reference in the 'none' row."
                 + (f" External site(s): {', '.join(sites)} (for Kermany, adult NIH pneumonia vs no finding: the same "
                    "labels at another hospital), every row scored by the same models." if sites else ""))
        tables.append(Table("paper_table", "dcgan-alpha: GAN vs classic fixes (Sun & Li table shape)", paper, notes,
                            role="main"))
        audits = audit_summary(results)
        if len(audits):
            tables.append(Table("audit_summary", "Synthetic-image audit of every trained generator", audits,
                                "Feature space of a small CNN trained on real images; reference = real train vs real "
                                "test. Steps: done / planned, as each generator was trained.", role="detail"))
        return tables


class _OtherClass:
    """The generator that completes a one-class generator's TSTR set: the same model trained on the other class."""

    def __init__(self, use: GeneratorUse, spec: GeneratorSpec):
        from cxrgan.generators.cache import entry_name

        self.use = GeneratorUse(spec, use.rows, use.method, use.seed)
        self.name = entry_name(spec, use.rows)


def _other_class(use: GeneratorUse) -> _OtherClass | None:
    """For a one-class generator of a binary task, its other-class twin; None for a conditional generator."""
    if not generator_class(use.spec.name).models_one_class:
        return None
    other = str(1 - int(use.spec.config.target))
    return _OtherClass(use, GeneratorSpec(use.spec.name, dataclasses.replace(use.spec.config, target=other)))


def audit_summary(results: Results) -> pd.DataFrame:
    """The headline audit numbers of every generator the run audited (its audit cells, by generator)."""
    records = sorted(results.analysis("audit"), key=lambda r: r["generator"])
    if not records:
        return _stored_audit_summary(results.run_dir)
    rows = []
    for record in records:
        rows.append({"generator": record["generator"], "steps": record["steps"],
                     "training rows": record["training rows"], **reference_cells(record["metrics"], AUDIT_COLUMNS)})
    return pd.DataFrame(rows)


def _stored_audit_summary(run_dir: Path) -> pd.DataFrame:
    """The audit table of a run made before audits were analysis cells: from ``generators/**/audit/audit.json``."""
    rows = []
    for path in sorted((run_dir / "generators").rglob("audit/audit.json")):
        metrics = json.loads(path.read_text())["metrics"]
        trained = cache_entries(path.parent.parent)[0]  # a run grown later may hold generators of older presets
        rows.append({"generator": path.parent.parent.name, "steps": trained["steps"],
                     "training rows": trained["training rows"], **reference_cells(metrics, AUDIT_COLUMNS)})
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
