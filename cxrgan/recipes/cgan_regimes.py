"""Recipe ``cgan-regimes``: no / flip / label-vector cGAN augmentation of rare findings across 1-100 % data regimes.

Sundaram & Hulkund (2021), "GAN-based Data Augmentation for Chest X-ray Classification" (KDD DSHealth): CheXpert,
three findings present in < 5 % of images, a conditional GAN on 14-dim label vectors (method A of
``cxrgan.balance.multilabel``: minimum images so each is >= 15 % of the combined set), stratified training
regimes of 1 %, 10 %, 50 %, 100 % with one fixed held-out test set, and per-finding test AUC of the augmented
findings for no augmentation, flips on the fly (p = 0.5) and GAN augmentation (their Tables 1 and 2).

``--gan-data full`` (the default, as in the paper, whose cGAN was pretrained on all of CheXpert) trains the GAN once
per seed on the full training split and reuses it in every regime; ``--gan-data regime`` trains each regime's GAN
on that regime's rows only (a regime with fewer rows than a GAN needs then generates nothing, and says so). The
label vectors always come from the regime's own rows. Regimes are nested (``cxrgan.data.splits.nested_fractions``).
The uncertainty policy applies to training rows only; test labels are policy-free. Rare findings are chosen from
training counts alone. Any registered method name is also accepted as a row; by default ML-ROS and LDAM-DRW run
beside the paper's rows, as the strongest cheap fixes a generative row must beat, and so does ``copies``, the GAN
row's count-matched control: the same label vectors drawn from the regime's rows, with those rows' real images
(``cxrgan.balance.multilabel.LabelVectorCopies``), so "gan beats copies" separates what the generated images add
from more rows of the rare findings. The GAN row is tested against ``none`` and against ``copies``.

CPU budget of the defaults on the NIH subset (463 training rows; measured with one thread while another job
used the second core): the cDCGAN (width 32, bf16, DiffAugment) takes 0.47 s a step, so the 3,500-step preset is
about 27 min per seed (500 steps: 4 min); ResNet-18 bf16 trains at about 205 images/s, and the regimes hold 5 / 47 /
294 / 463 real rows (660 with GAN images at 100 %), so 3 methods x 4 regimes x 12 epochs is about 3 min per seed.
Five seeds: about 2.5 h; ``--gan-steps`` trades quality for time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrgan.balance import BALANCERS, BalanceContext, Balancer, make_balancer
from cxrgan.balance.finding_plans import DEFAULT_MIN_POSITIVES, choose_rare_findings, plan_label_vectors
from cxrgan.balance.multilabel import LabelVectorCGAN, LabelVectorCopies
from cxrgan.balance.stages import Main
from cxrgan.classify import TrainConfig
from cxrgan.classify.config import check_train_config
from cxrgan.data import nested_fractions
from cxrgan.data.splits import patient_groups
from cxrgan.data.synthetic import SyntheticFiles
from cxrgan.engine.spec import HoldsRunSpec, RunSpec
from cxrgan.errors import CxrganError
from cxrgan.evaluate.verdicts import Verdicts, method_note, verdict_table
from cxrgan.evaluate.summary import seed_cell
from cxrgan.generators import GeneratorSettings, LabelVectorCDCGAN, fit_or_load
from cxrgan.generators.base import MIN_TRAIN_IMAGES
from cxrgan.recipes import NIH_PNEUMONIA, NIH_SUBSET_64
from cxrgan.engine import Cell, CellResult, Plan, Recipe, Results, RunContext, Table, TargetRow, grid, register_recipe
from cxrgan.recipes.findings import (CellWork, auc_cell, check_findings, finding_comparisons, finding_counts,
                                     finding_target_rows, findings_estimates, load_findings, test_positives_note,
                                     train_and_score, uncertain_counts, with_policy)
from cxrgan.recipes.synthetic import check_rows
from cxrgan.report.tables import to_markdown

# The NIH subset (649 images, 14 findings) joined with nih_pneumonia (651 images, the same 14 findings, other
# patients): about 1,300 images, so more findings have enough test positives for an AUC.
DEFAULT_DATA = tuple(path for path in (NIH_SUBSET_64, str(NIH_PNEUMONIA / "nih_pneumonia_64.npz"))
                     if Path(path).is_file()) or (NIH_SUBSET_64,)
METHODS = ("none", "flip", "gan")  # the paper's rows
CONTROL = "copies"  # the GAN row's count-matched control: the rows whose label vectors it draws, real images copied
# The strongest cheap fixes as rows too (any registered method is accepted): a generative row must beat them, not
# only "none". ml-ros: multi-label random oversampling (Charte et al. 2015); ldam-drw: among the best losses on
# NIH-CXR-LT (Holste et al. 2022), and it keeps the rows, so the GAN's real rows are compared like for like.
CHEAP_FIXES = ("ml-ros", "ldam-drw")
GAN_DATA = ("full", "regime")
# CPU default classifier: ResNet-18 with bf16 autocast at 64 px. Measured here (one thread, NIH subset, 713 rows):
# 205 images/s including validation, vs 145 for small-cnn; so a 463-row regime x 12 epochs is about 30 s.
CPU_CLASSIFIER = TrainConfig(model="resnet18", epochs=12, patience=4, lr=1e-3, bf16=True, lr_schedule="cosine",
                             progress=False)
FULL_CLASSIFIER = TrainConfig(model="densenet121", epochs=30, patience=5, lr=1e-4)


@dataclass(frozen=True)
class CganRegimesConfig(HoldsRunSpec):
    """The recipe's settings; written to the run's config.json."""

    run: RunSpec = RunSpec(DEFAULT_DATA)  # findings .npz file(s) joined, or one CheXpert / NIH CSV (or folder); seeds
    regimes: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0)  # nested stratified shares of the training split
    methods: tuple[str, ...] = (*METHODS, CONTROL, *CHEAP_FIXES)  # none, flip (p = 0.5), gan, copies, methods
    data_seed: int = 0  # seed of the regime subsets (and of CSV splits); one fixed split for every run
    uncertainty: str = "ones"  # U-policy of the training rows (the paper: U-Ones); test labels are policy-free
    findings: tuple[str, ...] = ()  # findings to augment; empty = the rarest with enough training positives
    n_findings: int = 3  # how many to choose (the paper: three findings under 5 %)
    min_positives: int = DEFAULT_MIN_POSITIVES  # floor on training positives of a chosen finding
    threshold: float = 0.15  # share each augmented finding must reach in the combined set
    gan_data: str = "full"  # the GAN's rows: "full" training split (as the paper) or the "regime"'s rows
    size: int = 64  # image side when decoding a CSV source
    train: TrainConfig = field(default_factory=lambda: CPU_CLASSIFIER)  # classifier settings
    generators: GeneratorSettings = GeneratorSettings()  # GAN steps / width / full (paper-size, GPU) preset
    synthetic: SyntheticFiles = SyntheticFiles()  # --synthetic files, one row synthetic:<stem> each, and their mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", self.synthetic.with_rows(tuple(self.methods)))


@register_recipe
class CganRegimes(Recipe):
    """Cells (seed, regime, method); the verdicts compare every row with ``none`` of the same regime and seed."""

    kind = "cgan-regimes"
    config_class = CganRegimesConfig

    def description(self) -> str:
        return f"{self.kind}-{'+'.join(Path(d).stem for d in self.config.run.data)}"

    def plan(self) -> Plan:
        c = self.config
        c.run.check()
        check_train_config(c.train)
        unknown = [m for m in c.methods if m not in (*METHODS, CONTROL) and m not in BALANCERS
                   and m not in c.synthetic.rows]
        if unknown:
            raise CxrganError(f"unknown method(s) {unknown}; available: {[*METHODS, CONTROL]} or a balancer name")
        if "none" not in c.methods:
            raise CxrganError(f"--methods must include 'none', the baseline of every regime; got {list(c.methods)}")
        if c.gan_data not in GAN_DATA:
            raise CxrganError(f"--gan-data {c.gan_data!r}: expected one of {list(GAN_DATA)}")
        if not c.regimes or any(not 0 < r <= 1 for r in c.regimes):
            raise CxrganError(f"--regimes must be shares in (0, 1], got {list(c.regimes)}")
        if not 0 < c.threshold < 1:
            raise CxrganError(f"--threshold must lie in (0, 1), got {c.threshold}")
        ignore = load_findings(c.run.data, c.size, c.data_seed, c.run.allow_patient_overlap,  # U-Ignore labels
                               c.run.allow_unknown_patients)
        uncertain = uncertain_counts(ignore)
        dataset = with_policy(ignore, c.uncertainty)
        self.train_, self.val_, self.test_ = dataset.split("train"), dataset.split("val"), dataset.split("test")
        if c.findings:
            check_findings(c.findings, self.train_)
        self.findings_ = c.findings or choose_rare_findings(self.train_, c.n_findings, c.min_positives)
        self.regimes_ = nested_fractions(self.train_, c.regimes, random_state=c.data_seed)
        summary = (f"data {' + '.join(c.run.data)}: train {len(self.train_)}, val {len(self.val_)}, test {len(self.test_)} rows; "
                   f"augmented findings {', '.join(self.findings_)} (training positives "
                   f"{[int(self.train_.positives()[self.train_.label_names.index(f)]) for f in self.findings_]}); "
                   f"uncertain test labels masked: {uncertain['test']}; GAN trained on the {c.gan_data} rows"
                   + check_rows(self.synthetic(), self.train_, {"val": self.val_, "test": self.test_}, " + ".join(c.run.data))
                   + "\n\n"
                   + to_markdown(self.generated_plan()))
        return Plan(cells=grid(seed=c.run.seed_range, regime=c.regimes, method=c.methods),
                    evaluation_sets={"val": self.val_.labels, "test": self.test_.labels},
                    label_names=self.test_.label_names, summary=summary,
                    groups={"val": patient_groups(self.val_), "test": patient_groups(self.test_)},
                    data_tables=[Table("train_split", "Training split (all regimes are nested in it)",
                                       self.train_.counts_table()),
                                 finding_counts(self.train_, self.test_)])

    def synthetic(self) -> SyntheticFiles:
        """The --synthetic files; balance mode fills the augmented findings as the dcgan-rare row would."""
        return dataclasses.replace(self.config.synthetic, findings=self.findings_)

    def generated_plan(self) -> pd.DataFrame:
        """Per regime: real rows and the images the 15 % rule would generate for the first seed's draws."""
        rows = []
        for fraction, regime in self.regimes_.items():
            present = [f for f in self.findings_ if regime.positives()[regime.label_names.index(f)] > 0]
            columns = [regime.label_names.index(f) for f in present]
            drawn_for = (plan_label_vectors(regime.labels, columns, self.config.threshold,
                                            np.random.default_rng(self.config.run.first_seed))[1] if columns
                         else np.zeros(0))
            row: dict[str, Any] = {"regime": f"{fraction:.0%}", "real rows": len(regime)}
            for finding in self.findings_:
                j = regime.label_names.index(finding)
                row[f"{finding} +"] = int(regime.positives()[j])
                row[f"{finding} generated"] = int((drawn_for == j).sum())
            row["augmented rows"] = len(regime) + len(drawn_for)
            rows.append(row)
        return pd.DataFrame(rows)

    def run_cell(self, cell: Cell, run: RunContext) -> CellResult:
        c = self.config
        seed, method, regime = cell["seed"], cell["method"], self.regimes_[cell["regime"]]
        device = str(c.run.torch_device())
        train_config = dataclasses.replace(c.train, augment="flip" if method == "flip" else "none")
        extra: dict[str, Any] = {}
        rows, stages = regime, (Main(),)
        if method == "gan":
            gan_rows = self.gan_rows(cell)
            if len(gan_rows) < MIN_TRAIN_IMAGES:
                extra["skipped"] = f"{len(gan_rows)} rows, fewer than a GAN needs ({MIN_TRAIN_IMAGES}): nothing generated"
            else:
                model = fit_or_load(self.gan_balancer(seed).generator_spec(), gan_rows, run.run_dir / "generators",
                                    device)
                balancer = LabelVectorCGAN(model.config, self.findings_, c.threshold, model=model, device=device,
                                           random_state=seed)
                rows = balancer.fit_resample(regime)
                extra["finding_table"] = balancer.table_.to_dict(orient="records")
                extra["skipped_findings"] = list(balancer.skipped_)
        elif method == CONTROL:  # the GAN row's draws with real images: same seed, findings and threshold
            balancer = LabelVectorCopies(self.findings_, c.threshold, random_state=seed)
            rows = balancer.fit_resample(regime)
            extra["finding_table"] = balancer.table_.to_dict(orient="records")
        elif method not in METHODS:  # any registered balancer as a row
            balancer = self.balancer(method, seed, run.run_dir)
            rows = balancer.fit_resample(regime)
            stages = balancer.stages(train_config.epochs)  # loss-side methods change the loss or add a stage
        result = train_and_score(rows, self.val_, self.test_, train_config, seed, run.progress, stages)
        result.record.update(extra)
        return result

    def gan_rows(self, cell: Cell):
        """The rows the ``gan`` row's cGAN trains on: the full training split or the regime's."""
        return self.train_ if self.config.gan_data == "full" else self.regimes_[cell["regime"]]

    def gan_balancer(self, seed: int) -> LabelVectorCGAN:
        """The ``gan`` row's balancer as declared, before its cGAN is trained (the row trains it on ``gan_rows``)."""
        return LabelVectorCGAN(LabelVectorCDCGAN.resolve_config(self.config.generators), self.findings_,
                               self.config.threshold, random_state=seed)

    def balancer(self, method: str, seed: int, run_dir: Path | None = None) -> Balancer:
        """The balancer of a registered method's row, its generators cached in ``run_dir`` (None: not cached)."""
        c = self.config
        return make_balancer(method, BalanceContext(random_state=seed, device=str(c.run.torch_device()),
                                                    work_dir=None if run_dir is None else run_dir / "generators",
                                                    generators=c.generators, synthetic=self.synthetic()))

    def estimate(self, plan: Plan) -> dict[str, float]:
        """The probed classifier on the images each cell's method plans, and the generators it declares."""
        epochs = self.config.train.epochs

        def work(cell: Cell) -> CellWork:
            regime, method = self.regimes_[cell["regime"]], cell["method"]
            if method == "gan":
                balancer, rows = self.gan_balancer(cell["seed"]), self.gan_rows(cell)
                gans = [(balancer.generator_spec(), rows)] if len(rows) >= MIN_TRAIN_IMAGES else []
                return CellWork(regime, balancer.planned_images(regime, epochs) if gans else epochs * len(regime), gans)
            if method == CONTROL:
                copies = LabelVectorCopies(self.findings_, self.config.threshold, random_state=cell["seed"])
                return CellWork(regime, copies.planned_images(regime, epochs), [])
            if method in METHODS:
                return CellWork(regime, epochs * len(regime), [])
            balancer = self.balancer(method, cell["seed"])
            rows = balancer.generator_rows(regime)
            return CellWork(regime, balancer.planned_images(regime, epochs),
                            [(spec, rows) for spec in balancer.generators(regime)])

        return findings_estimates(self, plan, work)

    # ---- tables -------------------------------------------------------------------------------------------------
    def tested_pairs(self, results: Results) -> list[tuple[dict, dict, dict]]:
        """(row, method cells, reference cells) of every row against ``none`` of its regime, and of the GAN row
        against its count-matched control, where both have finished cells."""
        pairs = [(m, "none") for m in self.config.methods if m != "none"]
        if {"gan", CONTROL} <= set(self.config.methods):
            pairs.append(("gan", CONTROL))
        return [({"regime": f"{fraction:.0%}", "method": method, "vs": reference},
                 {"regime": fraction, "method": method}, {"regime": fraction, "method": reference})
                for fraction in self.config.regimes for method, reference in pairs
                if results.where(regime=fraction, method=method) and results.where(regime=fraction, method=reference)]

    def comparisons(self, results: Results) -> list:
        return [row for pair in self.tested_pairs(results)
                for row in finding_comparisons(results, self.findings_, *pair)]

    def target_rows(self, results: Results) -> list[TargetRow]:
        return [row for pair in self.tested_pairs(results)
                for row in finding_target_rows(results, self.findings_, *pair)]

    def tables(self, results: Results) -> list[Table]:
        c = self.config
        comparisons = self.comparisons(results)
        gan_title = ("GAN trained once per seed on the full training split (as the paper)" if c.gan_data == "full"
                     else "GAN trained on each regime's own rows")
        verdicts = Table("verdicts", f"cgan-regimes: every row against none of its regime ({gan_title})",
                         verdict_table(comparisons),
                         method_note(comparisons)
                         + " The 'mean of k estimable' rows average the AUCs of the estimable augmented findings per "
                         "seed; their test-image term covers the images and patients the findings share. "
                         f"{test_positives_note(results, self.findings_)}", role="verdict")
        auc = self.auc_table(results, comparisons)
        notes = (f"Test ROC AUC of the augmented findings (real test split, policy-free labels); mean [95% CI over "
                 f"seeds]; {gan_title}. flip = random horizontal flips on the fly with p = 0.5; {CONTROL} = the GAN "
                 "row's label vectors with the real images of the rows they were drawn from (count-matched control). "
                 "A regime without a "
                 f"positive row of a finding generates nothing for it. {test_positives_note(results, self.findings_)}")
        return [verdicts,
                Table("table2_auc", f"cgan-regimes: AUC of the augmented findings (Table 2 shape; {gan_title})", auc,
                      notes, role="main"),
                Table("table1_generated", "cgan-regimes: images generated per finding (Table 1 shape, first seed)",
                      self.counts_table(results), role="main")]

    def auc_table(self, results: Results, comparisons: list) -> pd.DataFrame:
        y, names = results.labels["test"], results.label_names
        verdicts = Verdicts(comparisons)
        mean_rows = {x.row["finding"] for x in comparisons if x.row["finding"].startswith("mean of")}
        rows = []
        for fraction in self.config.regimes:
            for method in self.config.methods:
                runs = results.where(regime=fraction, method=method)
                if not runs:
                    continue
                row = {"regime": f"{fraction:.0%}", "method": method, "seeds": len(runs)}
                for finding in self.findings_:
                    row[finding] = auc_cell([r["auc"][finding] for r in runs], y[:, names.index(finding)])
                row["macro (all findings)"] = seed_cell([r["auc"]["macro"] for r in runs])
                for reference in ("none", CONTROL):
                    row[f"mean augmented: Δ vs {reference}"], row[f"verdict vs {reference}"] = (
                        ("", "") if not mean_rows else verdicts.cells(regime=f"{fraction:.0%}", method=method,
                                                                      vs=reference, finding=next(iter(mean_rows))))
                rows.append(row)
        table = pd.DataFrame(rows)
        if len(table) and not table[f"mean augmented: Δ vs {CONTROL}"].astype(bool).any():
            table = table.drop(columns=[f"mean augmented: Δ vs {CONTROL}", f"verdict vs {CONTROL}"])
        return table

    def counts_table(self, results: Results) -> pd.DataFrame:
        """Per regime: real rows, images generated for each finding, augmented set size (the paper's Table 1)."""
        rows = []
        for fraction, regime in self.regimes_.items():
            row: dict[str, Any] = {"regime": f"{fraction:.0%}", "real rows": len(regime)}
            match = results.where(regime=fraction, method="gan", seed=self.config.run.first_seed)
            table = match[0].get("finding_table") if match else None
            generated = {t["finding"]: t["generated for it"] for t in table} if table else {}
            for finding in self.findings_:
                row[finding] = generated.get(finding, 0) if match else "n/a"
            row["augmented rows"] = match[0]["train_rows"] if match else "n/a"
            if match and match[0].get("skipped"):
                row["note"] = match[0]["skipped"]
            rows.append(row)
        return pd.DataFrame(rows).fillna("")

