"""Recipe ``sgan-domain``: does unlabelled data from a second source adapt the semi-supervised GAN to it?

Madani et al. (ISBI 2018), Table 2: dataset 1 is labelled (default Kermany, pediatric), dataset 2 comes from another
source with the same label definition (default ``nih_pneumonia``: adult NIH pneumonia vs no finding, the label
Kermany has; a file whose labels mean something else, such as the NIH subset's "any finding", would test another
task). Rows: the matched CNN trained on dataset 1; the SGAN trained on dataset 1 (its labelled images are also its
only unlabelled pool); the SGAN trained on labelled dataset 1 plus dataset 2's training split without labels; and
the two non-GAN controls a reviewer asks for, given the same unlabelled images (``cxrgan.classify.adaptation``):
one round of pseudo-labelling, and the CNN's normalisation statistics re-estimated on dataset 2. Every row is
tested on dataset 2's test split. Dataset 2's labels never reach training: its training split passes through
``strip_labels`` and every model refuses an unlabelled dataset that still carries a known label.

All labelled rows of dataset 1's training split are used (the paper trained on 80% of dataset 1 with labels).
CPU budget (same measurements as ``sgan-scarcity``: about 0.10 s per SGAN step and 0.027 s per CNN step on one
busy core): 5 seeds x (2 SGANs + 4 CNN trainings) x 2000 steps -> 5 x 620 s, about 52 minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from cxrgan.classify.adaptation import PseudoLabelCNN, reestimate_normalisation
from cxrgan.classify.sgan import MatchedCNN, SemiSupervisedGAN, SGANConfig, strip_labels
from cxrgan.data.splits import patient_groups
from cxrgan.evaluate.verdicts import Comparison, Verdicts, compare_auc, method_note, verdict_table
from cxrgan.evaluate.summary import seed_cell
from cxrgan.recipes import NIH_PNEUMONIA
from cxrgan.data.external import subgroups
from cxrgan.recipes.compare_setup import check_classes
from cxrgan.recipes.subgroups import subgroup_table
from cxrgan.engine import Cell, CellResult, Plan, Recipe, Results, RunContext, Table, TargetRow, grid, register_recipe
from cxrgan.engine.spec import HoldsRunSpec, RunSpec
from cxrgan.recipes.sgan_scarcity import (DEFAULT_DATA, check_sgan_config, evaluate, load_binary, sgan_config,
                                          sgan_estimates)
from cxrgan.report.tables import to_markdown

DEFAULT_SECOND_DATA = str(NIH_PNEUMONIA / "nih_pneumonia_64.npz")  # adult NIH pneumonia: Kermany's labels
ROWS = {"cnn-d1": "CNN trained on dataset 1", "sgan-d1": "SGAN trained on dataset 1",
        "sgan-d1+d2": "SGAN trained on labelled dataset 1 + unlabelled dataset 2",
        "cnn-d1+pseudo": "CNN + pseudo-labelled dataset 2 (self-training, control)",
        "cnn-d1+norm": "CNN with normalisation re-estimated on dataset 2 (AdaBN, control)"}
USES_DATASET_2 = ("sgan-d1+d2", "cnn-d1+pseudo", "cnn-d1+norm")  # rows that see dataset 2's unlabelled images
CONTROLS = ("cnn-d1+pseudo", "cnn-d1+norm")  # what the adapted SGAN must beat: the same unlabelled images, no GAN
# (SGAN, CNN) trainings of each row, for time estimates: pseudo-labelling trains the CNN twice
TRAININGS = {"cnn-d1": (0, 1), "sgan-d1": (1, 0), "sgan-d1+d2": (1, 0), "cnn-d1+pseudo": (0, 2), "cnn-d1+norm": (0, 1)}
CPU_SGAN = SGANConfig(steps=2000)
FULL_SGAN = SGANConfig(ndf=64, ngf=64, steps=6000, batch_size=64, device="auto")


@dataclass(frozen=True)
class SganDomainConfig(HoldsRunSpec):
    """The recipe's settings; written to the run's config.json."""

    device_section: ClassVar[str] = "sgan"  # where a config.json from before RunSpec kept the device
    run: RunSpec = RunSpec(DEFAULT_DATA)  # dataset 1: binary .npz, labelled (its training split trains every row)
    second_data: str = DEFAULT_SECOND_DATA  # dataset 2: binary .npz; train split unlabelled, test split evaluates
    sgan: SGANConfig = field(default_factory=lambda: CPU_SGAN)  # shared by the SGANs and the matched CNN
    full: bool = False  # paper-size settings (FULL_SGAN) for GPUs


@register_recipe
class SganDomain(Recipe):
    """Cells (seed, row); every row is scored on dataset 2's test split and compared with the CNN row."""

    kind = "sgan-domain"
    config_class = SganDomainConfig

    def description(self) -> str:
        return f"{self.kind}-{Path(self.config.second_data).stem}"

    def plan(self) -> Plan:
        c = self.config
        check_sgan_config(c.run, c.sgan)
        size = c.sgan.image_size
        first = load_binary(c.run.file, size, c.run.allow_patient_overlap, c.run.allow_unknown_patients)
        second = load_binary(c.second_data, size, c.run.allow_patient_overlap, c.run.allow_unknown_patients)
        self.labeled_ = first.split("train")
        # The guard: dataset 2's training images enter only label-free; its labels are read for the test split alone.
        self.unlabeled_second_ = strip_labels(second.split("train"))
        self.test_ = second.split("test")
        check_classes(c.run.file, {"train": self.labeled_})
        check_classes(c.second_data, {"test": self.test_})
        table = pd.DataFrame([{"training": ROWS[row], "labelled (dataset 1)": len(self.labeled_),
                               "unlabelled (dataset 2)": len(self.unlabeled_second_) if row in USES_DATASET_2 else 0,
                               "test (dataset 2)": len(self.test_), "seeds": c.run.seeds, "steps each": c.sgan.steps}
                              for row in ROWS])
        return Plan(cells=grid(seed=c.run.seed_range, row=tuple(ROWS)),
                    evaluation_sets={"test": self.test_.labels}, label_names=self.test_.label_names,
                    groups={"test": patient_groups(self.test_)},
                    summary=f"dataset 1 {c.run.file}, dataset 2 {c.second_data}\n\n{to_markdown(table)}",
                    class_names=self.test_.class_names, subgroups={"test": subgroups(self.test_)})

    def run_cell(self, cell: Cell, run: RunContext) -> CellResult:
        row, seed = cell["row"], cell["seed"]
        config = sgan_config(self.config.sgan, run)
        extra = {}
        if row == "cnn-d1":
            model = MatchedCNN(config).fit(self.labeled_, random_state=seed)
        elif row == "cnn-d1+norm":  # the cnn-d1 model of this seed, its statistics taken from dataset 2
            model = reestimate_normalisation(MatchedCNN(config).fit(self.labeled_, random_state=seed),
                                             self.unlabeled_second_, random_state=seed)
        elif row == "cnn-d1+pseudo":
            model = PseudoLabelCNN(config).fit(self.labeled_, self.unlabeled_second_, random_state=seed)
            extra["pseudo_labels"] = model.n_pseudo_
        else:
            unlabeled = (self.unlabeled_second_,) if row == "sgan-d1+d2" else ()
            model = SemiSupervisedGAN(config).fit(self.labeled_, unlabeled, random_state=seed)
        result = evaluate(model, self.test_)
        result.record.update(extra)
        return result

    def estimate(self, plan: Plan) -> dict[str, float]:
        return sgan_estimates(self.config.sgan, plan, self.labeled_, lambda cell: TRAININGS[cell["row"]])

    def row_comparisons(self, results: Results) -> list[tuple[Comparison, str, str]]:
        """(comparison, row, reference row): every row against the CNN, then the adapted SGAN against the non-GAN
        controls, one Holm family."""
        y = results.labels["test"][:, 0]

        def scores(row: str) -> dict[int, np.ndarray]:
            return {s: v[:, 0] for s, v in results.seed_scores("test", row=row).items()}

        pairs = [(row, "cnn-d1") for row in ROWS if row != "cnn-d1"] + [("sgan-d1+d2", row) for row in CONTROLS]
        return [(compare_auc({"training": ROWS[row], "vs": ROWS[reference]}, y, scores(row), scores(reference),
                             results.patients("test")), row, reference)
                for row, reference in pairs if results.where(row=row) and results.where(row=reference)]

    def target_rows(self, results: Results) -> list[TargetRow]:
        return [TargetRow(comparison, ({"row": row}, {"row": reference}))
                for comparison, row, reference in self.row_comparisons(results)]

    def tables(self, results: Results) -> list[Table]:
        comparisons = [comparison for comparison, _, _ in self.row_comparisons(results)]
        verdicts = Verdicts(comparisons)
        rows = []
        for row, name in ROWS.items():
            mine = results.where(row=row)
            if not mine:
                continue
            delta, verdict = verdicts.cells(training=name, vs=ROWS["cnn-d1"]) if row != "cnn-d1" else ("", "")
            rows.append({"training": name, "seeds": len(mine),
                         "accuracy on dataset 2": seed_cell([r["accuracy"] for r in mine]),
                         "ROC AUC on dataset 2": seed_cell([r["roc_auc"] for r in mine]),
                         "ROC AUC - CNN": delta, "verdict": verdict})
        c = self.config
        notes = (f"Madani et al. Table 2 shape. Dataset 1: {Path(c.run.file).name} ({len(self.labeled_)} labelled training "
                 f"images); dataset 2: {Path(c.second_data).name} ({len(self.unlabeled_second_)} training images used "
                 f"without labels by the rows marked dataset 2; every row is tested on its {len(self.test_)}-image "
                 f"test split). The two controls use the same unlabelled images without a GAN: one round of "
                 f"pseudo-labelling (Lee 2013; target images predicted with probability >= 0.9 join the training "
                 f"set) and normalisation statistics re-estimated on them (AdaBN, Li et al. 2016); the verdict table "
                 f"also tests the adapted SGAN against each control. "
                 f"{c.sgan.image_size} px; cells: mean [95% CI] over seeds; Δ from the seed-level paired test.")
        tables = [Table("verdicts", "sgan-domain: each row against the CNN trained on dataset 1",
                        verdict_table(comparisons), method_note(comparisons), role="verdict"),
                  Table("table2", "sgan-domain: adapting to a second source without its labels (Madani et al. Table 2 "
                        "shape)", pd.DataFrame(rows), notes, role="main")]
        if results.subgroups:  # where dataset 2 records view, age or sex: which of its images a model gets wrong
            groups = subgroup_table(results, {name: {"row": row} for row, name in ROWS.items()}).drop(columns="site")
            tables.append(Table("subgroups", "sgan-domain: dataset 2's test split by view, age band and sex (ROC AUC)",
                                groups, "ROC AUC of each row within each subgroup of dataset 2's test split, mean [95% "
                                "CI over seeds]; n = images, + = positives. An AUC below 0.5 overall that holds within "
                                "every subgroup is a reversed signal; one that appears only across subgroups (e.g. "
                                "views whose share differs between the classes) is a shortcut. Descriptive, not "
                                "tested.", role="detail"))
        return tables
