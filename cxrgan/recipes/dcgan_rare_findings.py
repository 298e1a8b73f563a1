"""Recipe ``dcgan-rare-findings``: U-Ones / U-Zeros / U-Ignore baselines, then one DCGAN per rare finding.

Venugopal Sunitha, "Chest X-ray Disease Diagnosis Using GANs" (CheXpert, DenseNet-121): a baseline classifier
under the uncertainty policies U-Ones and U-Zeros (Irvin et al. 2019; we add U-Ignore, masked in the loss) with
per-finding AUC (their Table 2), then one unconditional DCGAN per rare finding whose samples are added until the
finding is nearly balanced (method B of ``cxrgan.balance.multilabel``), and baseline vs GAN-augmented AUC for the
augmented findings under one policy (their Table 3, U-Zeros). Beside the DCGAN the strongest cheap fixes run under
the same policy (``--cheap-fixes``, default ML-ROS and LDAM-DRW), so a generative gain is weighed against them, and
so does the DCGAN's count-matched control ``rare-copies`` (the real rows whose label vectors the DCGAN's images
carry, copied: as many extra rows with the same labels), which the DCGAN row is also tested against.

Design choices that keep the columns comparable: the policy applies to the training labels only, and every model
is scored against the same policy-free test labels (uncertain test labels are masked; the table says how many);
the rare findings are chosen from training counts alone, and a finding with fewer than 10 test positives is
reported as not estimable. NIH ChestX-ray14 (the default data) has no uncertain labels, so there every policy gives
the same labels: the baseline is trained once per seed and the policy table says so.

CPU budget of the defaults on the NIH subset (measured with one thread while another job used the second core):
one DCGAN per finding (width 32, bf16, batch = the finding's 17-33 images) takes 0.13-0.20 s a step, so the
3,500-step preset is about 9 min a finding, 28 min for three findings per seed (the 500 steps of earlier versions:
4 min); ratio 1.0 adds about 1250 images to the 463 real rows, so the augmented ResNet-18 run (about 205 images/s,
12 epochs) takes about 100 s and a baseline about 30 s. Five seeds: about 2.5 h; ``--gan-steps`` trades quality for
time (three baselines per seed on CheXpert, where the policies differ).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrgan.balance.finding_plans import DEFAULT_MIN_POSITIVES, choose_rare_findings
from cxrgan.balance.multilabel import RareFindingCopies, RareFindingDCGAN
from cxrgan.classify import TrainConfig
from cxrgan.classify.config import check_train_config
from cxrgan.data.labels import UNCERTAINTY_POLICIES
from cxrgan.data.splits import patient_groups
from cxrgan.data.synthetic import SyntheticFiles
from cxrgan.errors import CxrganError
from cxrgan.evaluate.verdicts import Verdicts, method_note, verdict_table
from cxrgan.evaluate.summary import seed_cell
from cxrgan.generators import DCGAN, GeneratorSettings
from cxrgan.balance import BALANCERS, BalanceContext, Balancer, make_balancer
from cxrgan.balance.stages import Main
from cxrgan.engine import Cell, CellResult, Plan, Recipe, Results, RunContext, Table, TargetRow, register_recipe
from cxrgan.engine.spec import HoldsRunSpec, RunSpec
from cxrgan.recipes.cgan_regimes import CHEAP_FIXES, CPU_CLASSIFIER, DEFAULT_DATA
from cxrgan.recipes.findings import (CellWork, auc_cell, check_findings, finding_comparisons, finding_counts,
                                     finding_target_rows, findings_estimates, load_findings, test_positives_note,
                                     train_and_score, uncertain_counts, with_policy)
from cxrgan.recipes.synthetic import check_rows
from cxrgan.report.tables import to_markdown

POLICY_NAMES = {"ones": "U-Ones", "zeros": "U-Zeros", "ignore": "U-Ignore"}
CONTROL = "rare-copies"  # the DCGAN row's count-matched control: the rows its images' label vectors come from, copied


@dataclass(frozen=True)
class DcganRareConfig(HoldsRunSpec):
    """The recipe's settings; written to the run's config.json."""

    run: RunSpec = RunSpec(DEFAULT_DATA)  # findings .npz file(s) joined, or one CheXpert / NIH CSV (or folder); seeds
    policies: tuple[str, ...] = ("ones", "zeros", "ignore")  # baseline table columns (training-label policies)
    policy: str = "zeros"  # policy of the GAN comparison (the paper's Table 3 uses U-Zeros)
    data_seed: int = 0  # seed of CSV splits
    findings: tuple[str, ...] = ()  # findings to augment; empty = the rarest with enough training positives
    n_findings: int = 3  # how many to choose (the paper: Pneumonia, Lung Lesion, Consolidation)
    min_positives: int = DEFAULT_MIN_POSITIVES  # floor on training positives (a DCGAN needs >= 16 images)
    ratio: float = 1.0  # add images until positives = ratio x negatives of the real training rows
    cheap_fixes: tuple[str, ...] = CHEAP_FIXES  # non-generative methods run beside the DCGAN, same policy
    size: int = 64  # image side when decoding a CSV source
    train: TrainConfig = field(default_factory=lambda: CPU_CLASSIFIER)  # classifier settings
    generators: GeneratorSettings = GeneratorSettings()  # GAN steps / width / full (paper-size, GPU) preset
    synthetic: SyntheticFiles = SyntheticFiles()  # --synthetic files: rows synthetic:<stem> beside the cheap fixes


@register_recipe
class DcganRareFindings(Recipe):
    """Cells (policy, method, seed): a baseline per training-label policy, and the DCGAN-augmented run."""

    kind = "dcgan-rare-findings"
    config_class = DcganRareConfig

    def description(self) -> str:
        return f"{self.kind}-{'+'.join(Path(d).stem for d in self.config.run.data)}"

    def plan(self) -> Plan:
        c = self.config
        c.run.check()
        check_train_config(c.train)
        bad = [p for p in (*c.policies, c.policy) if p not in UNCERTAINTY_POLICIES]
        if bad:
            raise CxrganError(f"unknown uncertainty policy {bad[0]!r}; expected one of {list(UNCERTAINTY_POLICIES)}")
        if c.ratio <= 0:
            raise CxrganError(f"--ratio must be positive, got {c.ratio}")
        self.gan_config_ = DCGAN.resolve_config(c.generators)
        self.dataset_ = load_findings(c.run.data, c.size, c.data_seed, c.run.allow_patient_overlap,  # U-Ignore
                                      c.run.allow_unknown_patients)
        self.uncertain_ = uncertain_counts(self.dataset_)
        self.coincide_ = self.uncertain_["train"] == 0
        train = with_policy(self.dataset_, c.policy).split("train")
        if c.findings:
            check_findings(c.findings, train)
        self.findings_ = c.findings or choose_rare_findings(train, c.n_findings, c.min_positives)
        self.policies_ = tuple(dict.fromkeys((*c.policies, c.policy)))
        seeds = c.run.seed_range
        baselines = (c.policy,) if self.coincide_ else self.policies_  # no uncertain labels: one baseline serves all
        cells = [Cell.of(policy=p, method="baseline", seed=s) for s in seeds for p in baselines]
        unknown = [m for m in c.cheap_fixes if m not in BALANCERS]
        if unknown:
            raise CxrganError(f"unknown method(s) {unknown} in --cheap-fixes; available: {', '.join(sorted(BALANCERS))}")
        cells += [Cell.of(policy=c.policy, method=m, seed=s) for s in seeds for m in ("dcgan-rare", *self.beside())]
        test = self.dataset_.split("test")
        summary = (f"data {' + '.join(c.run.data)}: augmented findings {', '.join(self.findings_)}; uncertain labels train "
                   f"{self.uncertain_['train']}, test {self.uncertain_['test']} (masked)"
                   + (" (no uncertain training labels: all policies coincide)" if self.coincide_ else "")
                   + check_rows(self.synthetic(), train, {"val": self.dataset_.split("val"), "test": test},
                                " + ".join(c.run.data))
                   + "\n\n" + to_markdown(self.generated_plan(train, test)))
        val = self.dataset_.split("val")
        return Plan(cells=cells, evaluation_sets={"val": val.labels, "test": test.labels},
                    label_names=test.label_names, summary=summary,
                    groups={"val": patient_groups(val), "test": patient_groups(test)},
                    data_tables=[Table("train_split", "Training split", train.counts_table()),
                                 finding_counts(train, test)])

    def beside(self) -> tuple[str, ...]:
        """The rows run beside the DCGAN under its policy: its count-matched control, the cheap fixes, then the
        --synthetic files."""
        return (CONTROL, *self.config.cheap_fixes, *self.config.synthetic.rows)

    def synthetic(self) -> SyntheticFiles:
        """The --synthetic files, balancing the augmented findings as the DCGAN row does (same findings, ratio)."""
        return dataclasses.replace(self.config.synthetic, findings=self.findings_, ratio=self.config.ratio)

    def generated_plan(self, train, test) -> pd.DataFrame:
        """The chosen findings with their training counts and the images method B adds."""
        rows = []
        for finding in self.findings_:
            j = train.label_names.index(finding)
            positives, negatives = int((train.labels[:, j] == 1).sum()), int((train.labels[:, j] == 0).sum())
            rows.append({"finding": finding, "train +": positives, "train -": negatives,
                         "uncertain (train)": int(pd.isna(self.dataset_.split("train").labels[:, j]).sum()),
                         "test +": int(test.positives()[j]),
                         "generated": max(0, math.ceil(self.config.ratio * negatives) - positives)})
        return pd.DataFrame(rows)

    def run_cell(self, cell: Cell, run: RunContext) -> CellResult:
        c = self.config
        data = with_policy(self.dataset_, cell["policy"])
        train, val, test = data.split("train"), data.split("val"), data.split("test")
        extra, stages = {}, (Main(),)
        if cell["method"] != "baseline":  # the DCGANs, their copies, or a cheap fix (rows, loss or schedule)
            balancer = self.balancer(cell, run.run_dir)
            train = balancer.fit_resample(train)
            stages = balancer.stages(c.train.epochs)
            if isinstance(balancer, (RareFindingDCGAN, RareFindingCopies)):
                extra["finding_table"] = balancer.table_.to_dict(orient="records")
        result = train_and_score(train, val, test, c.train, cell["seed"], run.progress, stages)
        result.record.update(extra)
        return result

    def balancer(self, cell: Cell, run_dir: Path | None = None) -> Balancer:
        """The balancer of a non-baseline cell: one DCGAN per chosen finding (cached in ``run_dir``), or a fix."""
        c = self.config
        if cell["method"] == "dcgan-rare":
            return RareFindingDCGAN(self.gan_config_, self.findings_, c.ratio,
                                    work_dir=None if run_dir is None else run_dir / "generators",
                                    device=str(c.run.torch_device()), random_state=cell["seed"])
        if cell["method"] == CONTROL:  # the DCGAN's draws with real images: same seed, findings and ratio
            return RareFindingCopies(self.findings_, c.ratio, random_state=cell["seed"])
        return make_balancer(cell["method"], BalanceContext(
            random_state=cell["seed"], work_dir=None if run_dir is None else run_dir / "generators",
            synthetic=self.synthetic()))

    def estimate(self, plan: Plan) -> dict[str, float]:
        """The probed classifier on the images each cell plans, and the DCGANs its balancer declares."""
        self.val_, self.test_ = self.dataset_.split("val"), self.dataset_.split("test")

        epochs = self.config.train.epochs

        def work(cell: Cell) -> CellWork:
            train = with_policy(self.dataset_, cell["policy"]).split("train")
            if cell["method"] == "baseline":
                return CellWork(train, epochs * len(train), [])
            balancer = self.balancer(cell)
            rows = balancer.generator_rows(train)
            return CellWork(train, balancer.planned_images(train, epochs),
                            [(spec, rows) for spec in balancer.generators(train)])

        return findings_estimates(self, plan, work)

    # ---- tables -------------------------------------------------------------------------------------------------
    def tested_pairs(self, results: Results) -> list[tuple[dict, dict, dict]]:
        """(row, method cells, reference cells): the DCGAN, its control and the cheap fixes against the baseline of
        the chosen policy, and the DCGAN against its control, where both have finished cells."""
        pairs = [({"method": method, "vs": "baseline"}, {"method": method},
                  {"method": "baseline", "policy": self.config.policy})
                 for method in ("dcgan-rare", *self.beside()) if results.where(method=method)]
        if results.where(method="dcgan-rare") and results.where(method=CONTROL):
            pairs.append(({"method": "dcgan-rare", "vs": CONTROL}, {"method": "dcgan-rare"}, {"method": CONTROL}))
        return pairs

    def target_rows(self, results: Results) -> list[TargetRow]:
        return [row for pair in self.tested_pairs(results)
                for row in finding_target_rows(results, self.findings_, *pair)]

    def tables(self, results: Results) -> list[Table]:
        c = self.config
        comparisons = [row for pair in self.tested_pairs(results)
                       for row in finding_comparisons(results, self.findings_, *pair)]
        verdicts = Table("verdicts", f"dcgan-rare-findings: DCGAN-augmented, its count-matched control and the cheap "
                         f"fixes against the {POLICY_NAMES[c.policy]} baseline; the DCGAN against its control",
                         verdict_table(comparisons),
                         method_note(comparisons)
                         + f" {test_positives_note(results, self.findings_)}", role="verdict")
        policy_note = ("This dataset has no uncertain (-1) training labels, so U-Ones, U-Zeros and U-Ignore give "
                       "identical labels and one baseline per seed fills every column." if self.coincide_ else
                       "U-Ones maps uncertain training labels to 1, U-Zeros to 0, U-Ignore masks them in the loss.")
        notes = (f"Test ROC AUC, mean [95% CI over {c.run.seeds} seed(s)]. {policy_note} Test labels are policy-free: "
                 f"{self.uncertain_['test']} uncertain test labels are masked, so every column is scored against "
                 f"the same ground truth. {test_positives_note(results, tuple(results.label_names))}")
        gan_notes = (f"{POLICY_NAMES[c.policy]} training labels. One DCGAN per finding trained on its positive "
                     f"training rows; images added until positives = {c.ratio:g} x negatives of the real rows, other "
                     "findings of each image copied from a real row with the finding. Δ = augmented - baseline per "
                     f"seed (seed-level paired test, Holm-adjusted; see the verdict table). {CONTROL}: the same number "
                     "of rows with the same label vectors, the real images of the rows they were drawn from (the "
                     f"count-matched control); 'DCGAN Δ vs {CONTROL}' tests the generated images against them.")
        return [verdicts,
                Table("table2_policies", "Baseline AUC per uncertainty policy (Table 2 shape)",
                      self.policy_table(results), notes, role="main"),
                Table("table3_gan", "Baseline vs DCGAN-augmented AUC (Table 3 shape)",
                      self.gan_table(results, comparisons), gan_notes, role="main")]

    def policy_table(self, results: Results) -> pd.DataFrame:
        """Per-finding baseline AUC under each policy; shared runs when the policies coincide."""
        y, names = results.labels["test"], results.label_names
        columns = {}
        for policy in self.policies_:
            runs = results.where(method="baseline", policy=self.config.policy if self.coincide_ else policy)
            columns[POLICY_NAMES[policy]] = [auc_cell([r["auc"][n] for r in runs], y[:, j]) for j, n in enumerate(names)]
            columns[POLICY_NAMES[policy]].append(seed_cell([r["auc"]["macro"] for r in runs]))
        return pd.DataFrame({"finding": [*names, "macro"], **columns})

    def gan_table(self, results: Results, comparisons: list) -> pd.DataFrame:
        y, names = results.labels["test"], results.label_names
        verdicts = Verdicts(comparisons)
        base = results.where(method="baseline", policy=self.config.policy)
        gan = results.where(method="dcgan-rare")
        rows = []
        for finding in self.findings_:
            j = names.index(finding)
            generated = [t["generated for it"] for t in gan[0]["finding_table"] if t["finding"] == finding] if gan else []
            delta, verdict = verdicts.cells(method="dcgan-rare", vs="baseline", finding=finding)
            row = {"finding": finding, "generated": generated[0] if generated else "n/a",
                   "baseline": auc_cell([r["auc"][finding] for r in base], y[:, j]),
                   "DCGAN-augmented": auc_cell([r["auc"][finding] for r in gan], y[:, j]),
                   "Δ [95% CI]": delta, "verdict": verdict}
            if results.where(method=CONTROL):
                row[f"DCGAN Δ vs {CONTROL}"], row[f"DCGAN verdict vs {CONTROL}"] = verdicts.cells(
                    method="dcgan-rare", vs=CONTROL, finding=finding)
            for method in self.beside():  # the control, the strongest cheap fixes and the synthetic files
                runs = results.where(method=method)
                if runs:
                    row[method] = auc_cell([r["auc"][finding] for r in runs], y[:, j])
                    row[f"{method} Δ"], row[f"{method} verdict"] = verdicts.cells(method=method, vs="baseline",
                                                                                  finding=finding)
            rows.append(row)
        return pd.DataFrame(rows)
