"""``cxrgan compare``: every balancing method x seed on the same splits; a verdict per method against the baseline.

Cells are (seed, method). Each cell rebalances the one fixed training split with its method (seeded by the cell's
seed), trains a classifier with that seed, and stores its validation and test scores. The verdict table compares
every method with the baseline by the seed-level paired test of ``cxrgan.evaluate.inference``; the metrics table
gives every metric as mean [95 % CI over seeds].
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from cxrgan.balance import BalanceContext, Balancer, make_balancer
from cxrgan.classify import predict, train_classifier
from cxrgan import distributed
from cxrgan.classify.config import check_train_config, check_world_size
from cxrgan.data import CXRDataset, load_npz
from cxrgan.data.external import load_external, site_name, subgroups
from cxrgan.data.label_imbalance import label_sets
from cxrgan.data.splits import patient_groups
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import AuditConfig
from cxrgan.evaluate.verdicts import (Comparison, adjusted_effects, compare_auc, compare_macro_auc, method_note,
                                      verdict_table)
from cxrgan.evaluate.metrics import roc_auc
from cxrgan.evaluate.summary import evaluate_scores, metrics_table
from cxrgan.engine.spec import RunSpec
from cxrgan.generators.cache import entry_name
from cxrgan.io import save_torch, write_json
from cxrgan.engine import Cell, CellResult, Plan, Recipe, Results, RunContext, Table, TargetRow, grid, register_recipe
from cxrgan.engine.probes import generator_seconds, sample_seconds, training_seconds
from cxrgan.recipes import synthetic as synthetic_rows
from cxrgan.recipes.compare_setup import CompareConfig, GeneratorUse, check_methods, prepare_splits
from cxrgan.recipes.subgroups import SUBGROUP_NOTE, label_imbalance_table, subgroup_table
from cxrgan.report.plots import plot_curves

# ---- the recipe -------------------------------------------------------------------------------------------------
@register_recipe
class Compare(Recipe):
    """Every method x seed on one fixed split; subclasses (paper recipes) add rows, analysis cells and tables."""

    kind = "compare"
    config_class = CompareConfig
    # The count-matched control (e.g. "repeat", "oversample") that the rows of controlled_methods() must beat too,
    # in the same Holm family as their comparisons with the baseline; None: no such control.
    control: str | None = None

    def controlled_methods(self) -> tuple[str, ...]:
        """The rows compared with ``control`` as well as with the baseline: those whose balancer declares it its
        count-matched control (``Balancer.control``)."""
        if self.control is None:
            return ()
        first = self.spec.first_seed
        return tuple(m for m in self.compare_config.methods if self.balancer(m, first).control == self.control)

    @property
    def compare_config(self) -> CompareConfig:
        """The comparison this recipe runs (a paper recipe's config contains one)."""
        return self.config

    @property
    def spec(self) -> RunSpec:
        return self.compare_config.run

    def description(self) -> str:
        return f"{self.kind}-{Path(self.spec.file).stem}"

    @property
    def seeds(self) -> range:
        return self.spec.seed_range

    def plan(self) -> Plan:
        c = self.compare_config
        self.load()
        summary = (f"data {self.spec.file}: train {len(self.train_)} rows (after subsetting), val {len(self.val_)}, "
                   f"test {len(self.test_)}; {c.train.model}, {c.train.epochs} epochs, "
                   f"{'bf16' if c.train.bf16 else 'fp32'}; methods {', '.join(c.methods)}; seeds {list(self.seeds)}"
                   + "".join(f"; external site {name}: {len(site)} rows" for name, site in self.sites_.items())
                   + synthetic_rows.check_rows(c.synthetic, self.train_, {"val": self.val_, "test": self.test_,
                                                                          **self.sites_}, self.spec.file))
        return Plan(cells=grid(seed=self.seeds, method=c.methods) + self.analysis_cells(), summary=summary,
                    data_tables=[Table("train_split", "Training split used by every run", self.train_.counts_table())],
                    **self.evaluation())

    def load(self) -> None:
        """Check the settings, then load and check the splits (``train_``, ``val_``, ``test_``), what each method's
        balancer needs and the external sites (``sites_``); CxrganError on any bad input, before anything trains."""
        c = self.compare_config
        check_methods(c.methods, c.baseline, c.synthetic.rows)
        self.spec.check()
        check_train_config(c.train)
        self.train_, self.val_, self.test_ = prepare_splits(c)
        check_world_size(self.train_, c.train.batch_size, distributed.world_size())
        self.check_balancers()
        self.sites_ = self.load_sites()

    def evaluation(self) -> dict:
        """The plan's evaluation sets (validation, test, every external site) with their names, subgroups and
        patient groups."""
        return dict(evaluation_sets={"val": self.val_.labels, "test": self.test_.labels,
                                     **{name: site.labels for name, site in self.sites_.items()}},
                    label_names=self.test_.label_names, class_names=self.test_.class_names,
                    subgroups={name: subgroups(site) for name, site in self.sites_.items()},
                    groups={name: patient_groups(rows) for name, rows in
                            {"val": self.val_, "test": self.test_, **self.sites_}.items()})

    def load_sites(self) -> dict[str, CXRDataset]:
        """The external sites, checked against the whole data file (labels, size, shared images or patients)."""
        c, spec = self.compare_config, self.spec
        if not spec.external:
            return {}
        if not self.train_.is_binary:
            raise CxrganError("--external sites are for binary tasks (--target labels)")
        names = [site_name(path) for path in spec.external]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise CxrganError(f"--external names the site(s) {duplicated} twice; every file needs its own stem")
        reference = load_npz(spec.file, target=c.target, uncertainty=c.uncertainty, allow_patient_overlap=True)
        return {site_name(path): load_external(path, self.train_, spec.external_labels, reference, spec.file)
                for path in spec.external}

    def balancer(self, method: str, seed: int, run_dir: Path | None = None) -> Balancer:
        """The balancer of ``method`` for ``seed``, its generators cached in ``run_dir`` (None: not cached)."""
        c = self.compare_config
        return make_balancer(method, BalanceContext(random_state=seed, device=str(self.spec.torch_device()),
                                                    work_dir=None if run_dir is None else run_dir / "generators",
                                                    generators=c.generators, extra_data=c.extra_data,
                                                    synthetic=c.synthetic))

    def check_balancers(self) -> None:
        """What each method needs, asked of its balancer (a factory refuses missing inputs as it is built):
        square images for a method with generators, and extra generator rows that share no image with the
        evaluation splits."""
        from cxrgan.data.leakage import check_no_shared_images

        train = self.train_
        for method in self.compare_config.methods:
            balancer = self.balancer(method, self.spec.first_seed)
            if balancer.generators(train) and train.images.shape[1] != train.images.shape[2]:
                raise CxrganError(f"{self.spec.file}: images are {train.images.shape[1]}x{train.images.shape[2]}; "
                                  f"generator-backed methods need square images ({method} trains one)")
            extra = balancer.extra_rows(train)
            if extra is not None:
                check_no_shared_images(extra.images, {"val": self.val_.images, "test": self.test_.images},
                                       what=f"--gan-extra-data {self.compare_config.extra_data}",
                                       against=self.spec.file)

    def generator_entries(self, methods: tuple[str, ...] | None = None,
                          seeds: range | None = None) -> dict[str, GeneratorUse]:
        """Every generator the methods (default: all) train over the seeds (default: all), by cache entry name,
        with the rows it trains on and the (method, seed) cells that use it first."""
        entries: dict[str, GeneratorUse] = {}
        for seed in seeds if seeds is not None else self.seeds:
            for method in methods if methods is not None else self.compare_config.methods:
                balancer = self.balancer(method, seed)
                rows = balancer.generator_rows(self.train_)
                for spec in balancer.generators(self.train_):
                    entries.setdefault(entry_name(spec, rows), GeneratorUse(spec, rows, method, seed))
        return entries

    def analysis_cells(self) -> list[Cell]:
        """The recipe's analysis cells, run after the (seed, method) cells: in ``compare``, the audit of every
        --synthetic file (``cxrgan.recipes.synthetic``)."""
        return [Cell.of(analysis="synthetic-audit", file=row) for row in self.compare_config.synthetic.rows]

    def analyses(self) -> dict[str, Callable[[Cell, RunContext], CellResult]]:
        """Analysis kind -> the function that runs one of its cells."""
        return {"synthetic-audit": self.synthetic_audit_cell}

    def synthetic_audit_cell(self, cell: Cell, run: RunContext) -> CellResult:
        """The audit of one --synthetic file, in the feature space of a small CNN trained once per run."""
        c, row = self.compare_config, cell["file"]
        config = AuditConfig(seed=self.spec.first_seed, device=self.spec.device)
        result = synthetic_rows.audit_row(run.run_dir, c.synthetic, row, self.train_, self.val_, self.test_,
                                          self.sites_, config)
        fd = result["metrics"]["frechet_distance"]
        return CellResult({"n_synthetic": result["n_synthetic"]},
                          summary=f"FD {fd['synthetic']:.3f} (reference {fd['reference']:.3f})")

    def run_cell(self, cell: Cell, run: RunContext) -> CellResult:
        """Balance, train, predict and score one (method, seed); or run one analysis cell."""
        if "analysis" in dict(cell.coords):
            return self.analyses()[cell["analysis"]](cell, run)
        seed = cell["seed"]
        return self.balance_train_score(cell, self.train_, self.balancer(cell["method"], seed, run.run_dir), run,
                                        keep_model=seed == self.spec.first_seed)

    def balance_train_score(self, cell: Cell, train: CXRDataset, balancer: Balancer, run: RunContext,
                            keep_model: bool) -> CellResult:
        """Rebalance ``train`` with the cell's method (``balancer``), train a classifier through the stages the
        balancer asks for with the cell's seed, and score it on the validation and test splits and every external
        site; ``keep_model`` stores the model in ``models/`` (for CAM panels and fidelity)."""
        c = self.compare_config
        seed, device = cell["seed"], str(self.spec.torch_device())
        train_config = dataclasses.replace(c.train, progress=c.train.progress and run.progress)
        balanced = balancer.fit_resample(train)
        stages = balancer.stages(train_config.epochs)  # loss-side methods change the loss or add a stage
        checkpoint = run.run_dir / "checkpoints" / f"{cell.name}.pt"
        result = train_classifier(balanced, self.val_, train_config, seed, checkpoint_path=checkpoint, resume=True,
                                  stages=stages)
        score = lambda data: predict(result.model, data, device, c.train.eval_batch_size, c.train.bf16,  # noqa: E731
                                     shared=True, fp16=c.train.fp16)
        s_val, s_test = score(self.val_), score(self.test_)
        sites = {name: score(site) for name, site in self.sites_.items()}
        if distributed.is_main():
            if keep_model:  # one model per method for CAM panels and fidelity; checkpoints are transient
                save_torch(run.run_dir / "models" / f"{cell.name}.pt",
                           {"model": result.model.state_dict(), "config": c.train.model, "n_outputs": train.n_labels})
            checkpoint.unlink(missing_ok=True)
        metrics = evaluate_scores(self.val_.labels, s_val, self.test_.labels, s_test, self.test_.label_names,
                                  c.n_boot, seed)
        record = {
            "metrics": metrics,
            "train_rows": len(balanced),
            "train_synthetic": int(balanced.synthetic.sum()),
            "train_positives": np.nansum(balanced.labels, axis=0).astype(int).tolist(),
            "class_weights": None if balanced.class_weights is None else balanced.class_weights.tolist(),
            "best_epoch": result.best_epoch,
            "best_val_auc": result.best_val_auc,
            "images_per_second": result.images_per_second,
            "history": result.history,
        }
        if not balanced.is_binary:  # multi-label: what the method did to the label imbalance (IRLbl, MeanIR)
            carried, names = label_sets(balanced.labels, balanced.label_names)
            record["label_rows"] = dict(zip(names, carried.sum(axis=0).tolist()))
        shown = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k in ("roc_auc", "pr_auc", "macro"))
        for name, scores in sites.items():
            record["metrics"][f"roc_auc@{name}"] = roc_auc(self.sites_[name].labels[:, 0], scores[:, 0])
            shown += f", roc_auc@{name} {record['metrics'][f'roc_auc@{name}']:.3f}"
        return CellResult(record, {"val": s_val, "test": s_test, **sites}, summary=shown)

    # ---- tables -------------------------------------------------------------------------------------------------
    def comparisons(self, results: Results, set_name: str = "test", baseline: str | None = None,
                    methods: tuple[str, ...] | None = None, where: dict | None = None) -> list[Comparison]:
        """Every method against ``baseline`` on ``set_name``: ROC AUC per label column (binary: one row per
        method; multi-label: one row per method and finding, plus the macro AUC over the estimable findings).
        ``where`` restricts both sides to the cells with those coordinates (e.g. one point of a grid) and is added
        to each binary row's identity."""
        c = self.compare_config
        baseline = baseline or c.baseline
        where = where or {}
        labels, names = results.labels[set_name], results.label_names
        patients = results.patients(set_name)
        base = results.seed_scores(set_name, method=baseline, **where)
        site = {"site": "internal test" if set_name == "test" else set_name} if self.external_sets(results) else {}
        rows = []
        for method in methods or c.methods:
            if method == baseline or not results.where(method=method, **where):
                continue
            mine = results.seed_scores(set_name, method=method, **where)
            if labels.shape[1] == 1:
                point = {key: str(value) for key, value in where.items()}
                rows.append(compare_auc({**point, "method": method, "vs": baseline, **site}, labels[:, 0],
                                        {s: v[:, 0] for s, v in mine.items()}, {s: v[:, 0] for s, v in base.items()},
                                        patients))
                continue
            for j, name in enumerate(names):
                rows.append(compare_auc({"method": method, "vs": baseline, "finding": name}, labels[:, j],
                                        {s: v[:, j] for s, v in mine.items()}, {s: v[:, j] for s, v in base.items()},
                                        patients))
            rows.append(compare_macro_auc({"method": method, "vs": baseline, "finding": "macro"}, labels, mine, base,
                                          patients))
        controlled = tuple(m for m in self.controlled_methods() if m in c.methods)
        if baseline == c.baseline and self.control in c.methods and controlled and methods is None:
            rows += self.comparisons(results, set_name, baseline=self.control, methods=controlled, where=where)
        return rows

    def target_rows(self, results: Results) -> list[TargetRow]:
        """The rows of the internal test split (each method against the baseline, and against the control), whose
        arms are the (seed, method) cells of both methods: what --target-mde adds seeds for."""
        return [TargetRow(comparison, ({"method": comparison.row["method"]}, {"method": comparison.row["vs"]}))
                for comparison in self.comparisons(results)]

    @staticmethod
    def external_sets(results: Results) -> list[str]:
        """The external sites a run scored (evaluation sets other than val and test)."""
        return [name for name in results.labels if name not in ("val", "test")]

    def all_comparisons(self, results: Results) -> list[Comparison]:
        """Every method against the baseline on the internal test split and on each external site: one family."""
        rows = self.comparisons(results)
        for name in self.external_sets(results):
            rows += self.comparisons(results, name)
        return rows

    def verdicts(self, results: Results, comparisons: list[Comparison]) -> Table:
        c = self.compare_config
        notes = method_note(comparisons)
        sites = self.external_sets(results)
        if sites:
            notes += (f" External site(s) {', '.join(sites)}: every row of the file, images of other patients and "
                      "another hospital, scored by the same models; one Holm family with the internal test rows.")
        if results.labels["test"].shape[1] > 1:
            notes += (" The macro row averages the AUCs of the estimable findings per seed; its test-image term "
                      "covers the images and patients the findings share. A finding with fewer than 10 test "
                      "positives is not estimable: it is not tested and not in the macro row.")
        return Table("verdicts", f"{self.kind}: each method against {c.baseline} (test ROC AUC)",
                     verdict_table(comparisons), notes, role="verdict")

    def tables(self, results: Results) -> list[Table]:
        c = self.compare_config
        comparisons = self.all_comparisons(results)
        table, notes, summary = metrics_table(results.records, results.labels["test"], results.label_names, c.methods,
                                              sites=self.external_sets(results))
        summary["verdicts"] = [{**comp.row, "note": comp.note, **(dataclasses.asdict(e) if e else {})}
                               for comp, e in zip(comparisons, adjusted_effects(comparisons))]
        write_json(results.run_dir / "summary.json", summary)
        seeds = len({r["seed"] for r in results.records if "seed" in r}) or self.spec.seeds  # a target run adds seeds
        title = f"{self.kind}: {Path(self.spec.file).name}, {c.train.model}, {seeds} seed(s)"
        tables = [self.verdicts(results, comparisons), Table("results", title, table, notes, role="main")]
        imbalance = label_imbalance_table(results, c.methods, self.spec.first_seed)
        if imbalance is not None:
            tables.append(Table("label_imbalance", "Label imbalance of each method's training rows (first seed)",
                                imbalance, "IRLbl of a label = rows of the commonest label / rows of this label; MeanIR "
                                "= their mean (Charte et al. 2015), counted over the findings and 'no finding'.",
                                role="detail"))
        tables += [t for t in [synthetic_rows.audit_table(results.run_dir, c.synthetic.rows)] if t is not None]
        if results.subgroups:
            tables.append(Table("external_subgroups", "External sites by view, age band and sex (test ROC AUC)",
                                subgroup_table(results, {m: {"method": m} for m in c.methods}), SUBGROUP_NOTE, role="detail"))
        return tables

    def figures(self, results: Results) -> list[tuple[str, str]]:
        if results.labels["test"].shape[1] != 1:
            return []
        y = results.labels["test"][:, 0]
        curves = {}
        for method in self.compare_config.methods:
            scores = results.seed_scores("test", method=method)
            if scores:
                curves[method] = (y, np.mean([s[:, 0] for s in scores.values()], axis=0))
        plot_curves(curves, "roc", results.run_dir / "roc.png", title="ROC, test split (scores averaged over seeds)")
        plot_curves(curves, "pr", results.run_dir / "pr.png", title="Precision-recall, test split (seed-averaged scores)")
        return [("roc.png", "ROC curves on the real test split (each method's scores averaged over seeds)"),
                ("pr.png", "Precision-recall curves on the real test split (seed-averaged scores)")]

    def estimate(self, plan: Plan) -> dict[str, float]:
        """Seconds per cell: the generators a (method, seed) cell trains first (each counted once: the cDCGAN
        alphas of a seed share one) and the images it draws from them, asked of its balancer, plus the classifier
        on the images the balancer plans over its stages, at the probed speed; analysis cells as the recipe
        estimates them."""
        c = self.compare_config
        device = str(self.spec.torch_device())
        balancers = {m: self.balancer(m, self.spec.first_seed) for m in c.methods}
        images = {m: b.planned_images(self.train_, c.train.epochs) for m, b in balancers.items()}
        samples = {m: b.planned_samples(self.train_) for m, b in balancers.items()}
        eval_rows = len(self.val_) + len(self.test_) + sum(len(site) for site in self.sites_.values())
        estimates, trained = {}, set()
        for cell in plan.cells:
            if "analysis" in dict(cell.coords):
                estimates[cell.name] = self.analysis_seconds(cell, trained)
                continue
            seconds = training_seconds(c.train, images[cell["method"]], eval_rows, self.train_.image_size,
                                       self.train_.n_labels, trace_memory=c.generators.full)
            uses = self.generator_entries((cell["method"],), (cell["seed"],))
            for name, use in uses.items():
                if name not in trained:
                    trained.add(name)
                    seconds += generator_seconds(use.spec, use.rows, device, trace_memory=c.generators.full)
            if uses and samples[cell["method"]]:
                per_image = np.mean([sample_seconds(use.spec, use.rows, device) for use in uses.values()])
                seconds += samples[cell["method"]] * float(per_image)
            estimates[cell.name] = seconds
        return estimates

    def analysis_seconds(self, cell: Cell, trained: set[str]) -> float:
        """Estimated seconds of an analysis cell; ``trained`` names the generator entries counted so far."""
        return 0.0


def run_compare(config: CompareConfig, out: str | Path, resume_dir: str | Path | None = None,
                command: str | None = None, dry_run: bool = False, progress: bool = True, **grid) -> Path | None:
    """Run (or resume) a comparison through the engine and return its run directory (``grid``: the engine's
    ``shard`` and ``workers``)."""
    from cxrgan.engine.run import run_recipe

    return run_recipe(Compare(config), out, resume_dir=resume_dir, command=command, dry_run=dry_run,
                      progress=progress, **grid)

