"""Recipe ``sgan-scarcity``: semi-supervised GAN vs a matched CNN as the number of labelled images per class shrinks.

Madani et al. (ISBI 2018), Table 1 and Figure 5: n labelled images per class in {10, 25, 100, 250, 500, 1000,
2000}, the rest of the training split used without labels by the SGAN; the CNN (same network, ``MatchedCNN``)
sees only the n labelled images. Accuracy (argmax of p(y | x, y < K+1)) and ROC AUC on the real test split, mean
[95% CI] over seeds, and SGAN - CNN ROC AUC by the seed-level paired test (``cxrgan.evaluate.inference``; the two
models of a seed share the labelled images). Default data: Kermany pediatric normal / pneumonia, 64 px
area-resized to the paper's 32 px. Cells (n, seed, method) run through the run engine and resume.

CPU budget (measured on this 2-core machine with one torch thread while another benchmark kept the load near 3;
100-step runs on Kermany at 32 px, after warm-up): the default SGAN (ndf = ngf = 32, virtual batch norm with a
64-image reference batch, 32 labelled + 32 unlabelled + 32 generated images per step) takes 0.09-0.11 s per step
and the matched CNN 0.026-0.05 s. 7 sizes x 3 seeds x 900 steps -> 21 x (90 + 35) s, about 44 minutes. ``--full``
(width 64, 6000 steps, batch 64) is meant for a GPU.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import pandas as pd

from cxrgan.classify.sgan import MatchedCNN, SemiSupervisedGAN, SGANConfig, strip_labels
from cxrgan.data import CXRDataset, load_npz
from cxrgan.data.external import load_external, site_name, subgroups
from cxrgan.data.images import resize_stack
from cxrgan.data.splits import patient_groups
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.evaluate.verdicts import Comparison, Verdicts, compare_auc, method_note, verdict_table
from cxrgan.evaluate.metrics import accuracy, roc_auc
from cxrgan.evaluate.stats import aggregate_seeds
from cxrgan.evaluate.summary import seed_cell
from cxrgan.io import atomic_write
from cxrgan.recipes import KERMANY_64
from cxrgan.engine.spec import HoldsRunSpec, RunSpec
from cxrgan.recipes.compare_setup import check_classes
from cxrgan.recipes.subgroups import SUBGROUP_NOTE, subgroup_table
from cxrgan.engine import Cell, CellResult, Plan, Recipe, Results, RunContext, Table, TargetRow, grid, register_recipe
from cxrgan.engine.probes import probe_config, step_seconds
from cxrgan.report.tables import to_markdown

DEFAULT_DATA = KERMANY_64
PER_CLASS = (10, 25, 100, 250, 500, 1000, 2000)
METHODS = {"CNN": MatchedCNN, "SGAN": SemiSupervisedGAN}
TRAININGS = {"CNN": (0, 1), "SGAN": (1, 0)}  # (SGAN, CNN) trainings of each method's cell, for time estimates
CPU_SGAN = SGANConfig(steps=900)  # see the module docstring for the measured basis
FULL_SGAN = SGANConfig(ndf=64, ngf=64, steps=6000, batch_size=64, device="auto")


@dataclass(frozen=True)
class SganScarcityConfig(HoldsRunSpec):
    """The recipe's settings; written to the run's config.json."""

    device_section: ClassVar[str] = "sgan"  # where a config.json from before RunSpec kept the device
    run: RunSpec = RunSpec(DEFAULT_DATA, seeds=3)  # binary .npz (normal / abnormal), seeds (each also draws its own
    #   labelled subset), external sites (Kermany: NIH pneumonia), device
    per_class: tuple[int, ...] = PER_CLASS  # labelled images per class (capped by the smaller training class)
    sgan: SGANConfig = field(default_factory=lambda: CPU_SGAN)  # shared by the SGAN and its matched CNN
    full: bool = False  # paper-size settings (FULL_SGAN) for GPUs


# ---- helpers shared with sgan-domain ---------------------------------------------------------------------------
def load_binary(path: str | os.PathLike, size: int, allow_patient_overlap: bool = False,
                allow_unknown_patients: bool = False) -> CXRDataset:
    """A binary .npz with its images centre-cropped and area-resized to ``size`` pixels."""
    dataset = load_npz(path, allow_patient_overlap=allow_patient_overlap, allow_unknown_patients=allow_unknown_patients)
    if not dataset.is_binary:
        raise CxrganError(f"{path}: a binary (normal / abnormal) dataset is needed, "
                          f"found labels {list(dataset.label_names)}")
    return dataclasses.replace(dataset, images=resize_stack(np.asarray(dataset.images), size))


def evaluate(model: MatchedCNN | SemiSupervisedGAN, test: CXRDataset,
             sites: dict[str, CXRDataset] | None = None) -> CellResult:
    """Accuracy (argmax over the K real classes) and ROC AUC of p(abnormal) on ``test`` (and the ROC AUC on each
    external site), with the scores."""
    scores = {"test": model.predict_proba(test)[:, 1]}
    scores.update({name: model.predict_proba(site)[:, 1] for name, site in (sites or {}).items()})
    y = test.binary_targets()
    record = {"accuracy": accuracy(y, scores["test"], threshold=0.5), "roc_auc": roc_auc(y, scores["test"])}
    record.update({f"roc_auc@{name}": roc_auc(site.binary_targets(), scores[name]) for name, site in (sites or {}).items()})
    return CellResult(record, {name: s[:, None].astype(np.float32) for name, s in scores.items()},
                      summary=", ".join(f"{k} {v:.3f}" for k, v in record.items()))


def check_sgan_config(run: RunSpec, sgan: SGANConfig) -> None:
    run.check()
    if sgan.steps < 1:
        raise CxrganError(f"--steps must be at least 1, got {sgan.steps}")
    resolve_device(sgan.device)


def sgan_config(config: SGANConfig, run: RunContext) -> SGANConfig:
    """The recipe's SGAN settings with the step bar hidden under --no-progress (one line per cell stays)."""
    return dataclasses.replace(config, progress=config.progress and run.progress)


def sgan_estimates(config: SGANConfig, plan: Plan, labeled: CXRDataset,
                   trainings: Callable[[Cell], tuple[int, int]]) -> dict[str, float]:
    """Seconds per SGAN-recipe cell: steps x the probed step times of the SGAN and of its matched CNN, trained
    briefly on ``labeled``, times the (SGAN, CNN) trainings ``trainings(cell)`` the cell runs."""
    probe = probe_config(config)
    cnn = step_seconds(("cnn", probe), lambda hook: MatchedCNN(probe, step_hook=hook).fit(labeled, random_state=0))
    sgan = step_seconds(("sgan", probe), lambda hook: SemiSupervisedGAN(probe, step_hook=hook).fit(labeled, (),
                                                                                                  random_state=0))
    estimates = {}
    for cell in plan.cells:
        sgans, cnns = trainings(cell)
        estimates[cell.name] = (sgans * sgan + cnns * cnn) * config.steps
    return estimates


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


@register_recipe
class SganScarcity(Recipe):
    """Cells (n, seed, method): the CNN and the SGAN trained on the same n labelled images per class."""

    kind = "sgan-scarcity"
    config_class = SganScarcityConfig

    def description(self) -> str:
        return f"{self.kind}-{Path(self.config.run.file).stem}"

    def plan(self) -> Plan:
        c = self.config
        check_sgan_config(c.run, c.sgan)
        if not c.per_class or min(c.per_class) < 1:
            raise CxrganError(f"--per-class needs positive sizes, got {list(c.per_class)}")
        dataset = load_binary(c.run.file, c.sgan.image_size, c.run.allow_patient_overlap, c.run.allow_unknown_patients)
        self.train_, self.test_ = dataset.split("train"), dataset.split("test")
        check_classes(c.run.file, {"train": self.train_, "test": self.test_})
        self.sizes_ = effective_sizes(self.train_, c.per_class)
        self.sites_ = self.load_sites()
        table = pd.DataFrame([{"labelled / class": n, "labelled": 2 * n, "unlabelled (SGAN)": len(self.train_) - 2 * n,
                               "test": len(self.test_), "runs": 2 * c.run.seeds, "steps each": c.sgan.steps}
                              for n in self.sizes_])
        sites = "".join(f"; external site {name}: {len(site)} rows" for name, site in self.sites_.items())
        return Plan(cells=grid(n=self.sizes_, seed=c.run.seed_range, method=tuple(METHODS)),
                    evaluation_sets={"test": self.test_.labels, **{n: s.labels for n, s in self.sites_.items()}},
                    groups={n: patient_groups(s) for n, s in {"test": self.test_, **self.sites_}.items()},
                    label_names=self.test_.label_names, class_names=self.test_.class_names,
                    summary=f"data {c.run.file} at {c.sgan.image_size} px{sites}\n\n{to_markdown(table)}",
                    subgroups={name: subgroups(site) for name, site in self.sites_.items()})

    def load_sites(self) -> dict[str, CXRDataset]:
        """External sites checked against the data file at its own size, then resized like the data."""
        c = self.config
        if not c.run.external:
            return {}
        original = load_npz(c.run.file, allow_patient_overlap=True)
        return {site_name(path): dataclasses.replace(site, images=resize_stack(np.asarray(site.images),
                                                                               c.sgan.image_size))
                for path in c.run.external
                for site in [load_external(path, original, c.run.external_labels, original, c.run.file)]}

    def run_cell(self, cell: Cell, run: RunContext) -> CellResult:
        n, seed, method = cell["n"], cell["seed"], cell["method"]
        labeled, unlabeled = labelled_split(self.train_, n, seed)
        model = METHODS[method](sgan_config(self.config.sgan, run))
        model = model.fit(labeled, random_state=seed) if method == "CNN" else model.fit(labeled, [unlabeled],
                                                                                         random_state=seed)
        result = evaluate(model, self.test_, self.sites_)
        result.record.update(n_labeled=len(labeled), n_unlabeled=len(unlabeled) if method == "SGAN" else 0,
                             parameters=model.n_parameters())
        return result

    def size_comparison(self, results: Results, set_name: str, n: int) -> Comparison:
        """SGAN against its matched CNN with ``n`` labelled images per class, on the evaluation set ``set_name``."""
        sites = [name for name in results.labels if name != "test"]
        where = {"site": "internal test" if set_name == "test" else set_name} if sites else {}

        def scores(method: str) -> dict[int, np.ndarray]:
            return {s: v[:, 0] for s, v in results.seed_scores(set_name, n=n, method=method).items()}

        return compare_auc({"labelled / class": str(n), "method": "SGAN", "vs": "CNN", **where},
                           results.labels[set_name][:, 0], scores("SGAN"), scores("CNN"), results.patients(set_name))

    def target_rows(self, results: Results) -> list[TargetRow]:
        """SGAN against its matched CNN at every labelled size, on the internal test split."""
        return [TargetRow(self.size_comparison(results, "test", n), ({"n": n, "method": "SGAN"},
                                                                     {"n": n, "method": "CNN"}))
                for n in self.sizes_ if results.where(n=n)]

    def tables(self, results: Results) -> list[Table]:
        sites = [name for name in results.labels if name != "test"]
        comparisons = [self.size_comparison(results, set_name, n) for set_name in ("test", *sites)
                       for n in self.sizes_ if results.where(n=n)]
        records = pd.DataFrame(results.records)
        table = scarcity_table(records, self.sizes_, Verdicts(comparisons), sites)
        notes = (f"Madani et al. Table 1 shape. n labelled images per class (capped at the smaller training class); "
                 f"the SGAN also uses the other {len(self.train_)} - 2n training images without labels. Test: "
                 f"{len(self.test_)} real images of the test split at {self.config.sgan.image_size} px. Cells: mean "
                 f"[95% CI] over seeds; Δ = SGAN - CNN ROC AUC paired by seed (the same labelled images), seed-level "
                 f"test with Holm adjustment over the sizes. CNN = the SGAN's discriminator network trained on the "
                 f"labelled images only ({int(records['parameters'].iloc[0])} parameters each).")
        tables = [Table("verdicts", "sgan-scarcity: SGAN against the matched CNN per labelled size",
                        verdict_table(comparisons), method_note(comparisons), role="verdict"),
                  Table("table1", "sgan-scarcity: CNN vs semi-supervised GAN (Madani et al. Table 1 shape)", table,
                        notes, role="main")]
        if results.subgroups:
            groups = pd.concat([subgroup_table(results, {m: {"n": n, "method": m} for m in METHODS})
                                .assign(**{"labelled / class": n}) for n in self.sizes_ if results.where(n=n)])
            groups = groups[["labelled / class", *(c for c in groups.columns if c != "labelled / class")]]
            tables.append(Table("external_subgroups", "sgan-scarcity: external sites by view, age band and sex (ROC "
                                "AUC per labelled size)", groups.reset_index(drop=True), SUBGROUP_NOTE, role="detail"))
        return tables

    def estimate(self, plan: Plan) -> dict[str, float]:
        labeled = labelled_split(self.train_, min(self.sizes_[-1], 64), 0)[0]
        return sgan_estimates(self.config.sgan, plan, labeled, lambda cell: TRAININGS[cell["method"]])

    def figures(self, results: Results) -> list[tuple[str, str]]:
        plot_scarcity(pd.DataFrame(results.records), self.sizes_, results.run_dir / "figure5.png")
        return [("figure5.png", "Figure 5 shape: test accuracy and ROC AUC against labelled images per class "
                                "(mean and 95% CI over seeds)")]


def scarcity_table(records: pd.DataFrame, sizes: tuple[int, ...], verdicts: Verdicts,
                   sites: list[str] = ()) -> pd.DataFrame:
    """One row per labelled size: CNN and SGAN accuracy and ROC AUC as mean [CI], and SGAN - CNN ROC AUC (on the
    internal test split and on each external site)."""
    rows = []
    for n in sizes:
        at_n = records[records["n"] == n]
        row: dict[str, object] = {"labelled / class": n}
        for metric, label in (("accuracy", "accuracy"), ("roc_auc", "ROC AUC")):
            for method in METHODS:
                values = at_n[at_n["method"] == method][metric].tolist()
                row[f"{method} {label}"] = seed_cell(values) if values else ""
        internal = {"site": "internal test"} if sites else {}
        row["SGAN - CNN ROC AUC"], row["verdict"] = verdicts.cells(**{"labelled / class": str(n)}, **internal)
        for site in sites:
            for method in METHODS:
                values = at_n[at_n["method"] == method][f"roc_auc@{site}"].tolist()
                row[f"{method} ROC AUC @ {site}"] = seed_cell(values) if values else ""
            row[f"SGAN - CNN @ {site}"], row[f"verdict @ {site}"] = verdicts.cells(
                **{"labelled / class": str(n)}, site=site)
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
