"""Recipe ``helps-map``: where does generative rebalancing help? A map over the minority class's training size.

Every other result of cxrgan sits at one operating point (Kermany made 3:1, 402 minority training images). The
literature puts the gains of synthetic data in low-data regimes (Sundaram & Hulkund 2021: 1 % and 10 % regimes;
Madani et al. 2018: 10-100 labels per class; RoentGen-v2, 2025: pretraining on synthetic data before fine-tuning)
and not at scale. This recipe answers, per minority size: does a generator beat ``none``, and does it beat
count-matched duplication (``oversample``), the control every generative row must beat?

Grid. The majority class stays fixed (default: the normals of compare's 3:1 subset, 1,206 on Kermany; ``majority``)
and the minority class (the positive class) is cut to each count of ``minority``. Each seed draws its own nested
subsets grouped by patient (:func:`cxrgan.data.splits.nested_class_subsets`: seed s's 25 rows lie inside its 50
rows), so neighbouring points share rows. Validation, test and external sets are the file's real rows, untouched.
Cells are (seed, minority count, method); every method of a point and seed sees the same rows, and every
generator trains on that point's rows only (a one-class generator on its minority rows, a conditional one on all
of them). By default every classifier seed has its own draw and generators (their variance belongs to the
method); ``generator_seeds`` = k makes classifier seed s reuse draw ``first_seed + (s - first_seed) mod k``, so k = 1
shares one draw and one generator per point across seeds, and the verdicts are then conditional on that generator.
A reference cell per seed, ``full`` (method ``none`` on the fixed majority plus every minority training row of the
file), gives each point's headroom: the ``none`` AUC beside the AUC of the full class.

Generator budgets scale with the point (``GeneratorBudget``): the CPU presets were set on the 402 pneumonias of
the 3:1 split, and a generator on 16-50 images needs fewer steps than on 400 (its data is smaller and it memorises
sooner), so a point trains its preset x (1 + 0.15 log2(minority / 400)) steps, at least a quarter of the preset:
30 % at 16 images, 40 % at 25, 55 % at 50, 70 % at 100 (measured for FastGAN, see the class). ``--gan-steps``
fixes the steps at every point instead.

Statistics (tables, answer and figure: :mod:`cxrgan.recipes.helps_map_report`). Every method is compared with
``none`` and every method but ``none`` with ``oversample`` at every point by the seed-level paired test
(``cxrgan.evaluate.inference``), on the internal test split and on every external site; Holm's adjustment runs over
all of these comparisons of the whole map at once. The answer table states per method,
in one sentence generated from those verdicts, where it helped, hurt, or made no detectable difference. Each
point's generators are audited (FD, recall, coverage, two-sample AUC, memorised fraction; ``cxrgan.evaluate.audit``)
against the minority rows they saw, so a point where a generator copies its 25 images shows as such.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from cxrgan.balance import BalanceContext, Balancer, make_balancer
from cxrgan.classify import TrainConfig
from cxrgan.data import CXRDataset, induce_imbalance, nested_class_subsets
from cxrgan.engine import Cell, CellResult, Plan, Results, RunContext, Table, TargetRow, register_recipe
from cxrgan.engine.probes import generator_seconds, sample_seconds, training_seconds
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import AuditConfig, audit_images, train_feature_model
from cxrgan.generators import GeneratorSpec, fit_or_load, generator_class
from cxrgan.generators.base import image_fingerprint
from cxrgan.generators.cache import cache_dir, entry_name
from cxrgan.recipes.compare import Compare, CompareConfig
from cxrgan.recipes.compare_setup import ratio_counts
from cxrgan.recipes.dcgan_alpha import AUDIT_COLUMNS
from cxrgan.recipes.helps_map_config import GENERATORS_DIR, MINORITY, HelpsMapConfig
from cxrgan.recipes.helps_map_report import BASELINE, FULL, MapReport
from cxrgan.report.tables import to_markdown

class MapGenerator(NamedTuple):
    """One generator of the map: its point and draw, its spec (budgeted steps), the rows it trains on and the
    methods that use it."""

    minority: int
    draw: int
    spec: GeneratorSpec
    rows: CXRDataset
    methods: list[str]


# ---- the recipe ------------------------------------------------------------------------------------------------
@register_recipe
class HelpsMap(Compare):
    """Cells (seed, minority count, method) plus a ``full`` reference per seed, through the compare machinery; then
    an audit cell per generator the map trains."""

    kind = "helps-map"
    config_class = HelpsMapConfig

    @property
    def compare_config(self) -> CompareConfig:
        return self.config.compare

    @property
    def draws(self) -> range:
        """The seeds of the minority draws (and generators) of the map."""
        c, spec = self.config, self.spec
        return range(spec.first_seed, spec.first_seed + (c.generator_seeds or spec.seeds))

    def draw_of(self, seed: int) -> int:
        """The draw (minority subsets and generators) classifier seed ``seed`` trains on."""
        c, spec = self.config, self.spec
        return spec.first_seed + (seed - spec.first_seed) % (c.generator_seeds or spec.seeds)

    # ---- plan -----------------------------------------------------------------------------------------------------
    def plan(self) -> Plan:
        c, spec = self.config, self.spec
        if c.generator_seeds is not None and not 1 <= c.generator_seeds <= spec.seeds:
            raise CxrganError(f"--generator-seeds {c.generator_seeds}: must lie in 1..--seeds ({spec.seeds})")
        self.load()
        if not self.train_.is_binary:
            raise CxrganError(f"{spec.file}: helps-map needs a binary task (normal / abnormal)")
        self.base_ = self.fixed_majority()
        self.counts_ = self.checked_counts()
        self.points_: dict[int, dict[int, CXRDataset]] = {}
        self.check_generators()
        # per seed, the full reference first (the headroom of every point needs it), then the points
        cells = [cell for seed in spec.seed_range
                 for cell in [Cell.of(seed=seed, minority=FULL, method=BASELINE)]
                 + [Cell.of(seed=seed, minority=count, method=method) for count in self.counts_
                    for method in self.compare_config.methods]]
        return Plan(cells=cells + self.analysis_cells(), summary=self.summary(), **self.evaluation(),
                    data_tables=[Table("train_split", "Training rows of the full class (every point is a subset)",
                                       self.base_.counts_table())])

    def fixed_majority(self) -> CXRDataset:
        """The training split with the majority class cut to its fixed rows and every minority row kept."""
        c, train = self.config, self.train_
        names = train.class_names or ("0", "1")
        y = train.binary_targets()
        available = {k: int((y == k).sum()) for k in (0, 1)}
        if c.majority is None:
            keep = ratio_counts(train, (3, 1))[0]
        elif not 1 <= c.majority <= available[0]:
            raise CxrganError(f"--majority {c.majority}: the training split holds {available[0]} {names[0]!r} rows "
                              f"(the majority class); choose 1..{available[0]}")
        else:
            keep = c.majority
        return induce_imbalance(train, {0: keep}, random_state=self.compare_config.data_seed)

    def checked_counts(self) -> tuple[int, ...]:
        """The grid's minority counts: each below the fixed majority and at most the class's training rows."""
        c = self.config
        names = self.base_.class_names or ("0", "1")
        y = self.base_.binary_targets()
        majority, minority = int((y == 0).sum()), int((y == 1).sum())
        limit = min(minority, majority - 1)
        if c.minority is None:
            counts = tuple(n for n in MINORITY if n <= limit)
        else:
            counts = tuple(c.minority)
            if not counts:
                raise CxrganError("--minority is empty; name at least one count")
            duplicated = sorted({n for n in counts if counts.count(n) > 1})
            if duplicated:
                raise CxrganError(f"--minority names {duplicated} more than once")
        for count in counts:
            if count < 1:
                raise CxrganError(f"--minority {count}: counts must be at least 1")
            if count > minority:
                raise CxrganError(f"--minority {count}: larger than the {minority} {names[1]!r} training rows of "
                                  f"{self.spec.file} (the limit)")
            if count >= majority:
                raise CxrganError(f"--minority {count}: not below the {majority} fixed {names[0]!r} rows (the limit "
                                  f"is {majority - 1}; the minority must stay the smaller class, or raise --majority)")
        if not counts:
            raise CxrganError(f"{self.spec.file}: no default minority count fits below {limit + 1}; name counts with "
                              "--minority")
        return tuple(sorted(counts))

    def check_generators(self) -> None:
        """Every generator of the map can train on the fewest minority rows it gets (one line naming the limit)."""
        for method in self.compare_config.methods:
            for count in self.counts_:
                for spec in self.specs_at(method, count, self.draws[0]):
                    needed = generator_class(spec.name).min_train_images
                    if count < needed:
                        raise CxrganError(f"--minority {count}: {method} trains a {spec.name}, which needs at least "
                                          f"{needed} minority training images (the limit); drop the count or the "
                                          "method")

    def points(self, draw: int) -> dict[int, CXRDataset]:
        """The nested patient-grouped training rows of every count for one draw (cached)."""
        if draw not in self.points_:
            self.points_[draw] = nested_class_subsets(self.base_, self.counts_, class_value=1, random_state=draw)
        return self.points_[draw]

    def rows_of(self, cell: Cell) -> CXRDataset:
        count = cell["minority"]
        return self.base_ if count == FULL else self.points(self.draw_of(cell["seed"]))[count]

    def point_balancer(self, method: str, count: int | str, draw: int, run_dir: Path | None = None) -> Balancer:
        """The balancer of ``method`` at a point of one draw: the draw's seed, and its generators' steps from the
        budget (its generators cached in ``run_dir``; None: not cached)."""
        c, compare = self.config, self.compare_config
        context = BalanceContext(random_state=draw, device=str(self.spec.torch_device()),
                                 work_dir=None if run_dir is None else run_dir / GENERATORS_DIR,
                                 generators=compare.generators)
        balancer = make_balancer(method, context)
        if count == FULL or compare.generators.steps is not None:
            return balancer
        specs = balancer.generators(self.points(draw)[count])
        if not specs:
            return balancer
        steps = c.budget.steps(specs[0].config.steps, count)
        return make_balancer(method, dataclasses.replace(
            context, generators=dataclasses.replace(compare.generators, steps=steps)))

    def specs_at(self, method: str, count: int, draw: int) -> list[GeneratorSpec]:
        """The generators (with their budgeted steps) that ``method`` trains at a point of one draw."""
        return self.point_balancer(method, count, draw).generators(self.points(draw)[count])

    def is_generative(self, method: str) -> bool:
        return any(self.specs_at(method, count, self.draws[0]) for count in self.counts_)

    def summary(self) -> str:
        c, spec, compare = self.config, self.spec, self.compare_config
        names = self.base_.class_names or ("0", "1")
        y = self.base_.binary_targets()
        rows = []
        for count in self.counts_:
            point = self.points(self.draws[0])[count]
            patients = point.meta["patient_id"][point.binary_targets() == 1].nunique()
            row: dict[str, Any] = {"minority rows": count, "patients (first draw)": patients}
            for method in compare.methods:
                for generator in self.specs_at(method, count, self.draws[0]):
                    row[f"{generator.name} steps"] = generator.config.steps
            rows.append(row)
        sharing = ("one draw and generator per point and classifier seed" if c.generator_seeds in (None, spec.seeds)
                   else f"{c.generator_seeds} draw(s) and generator(s) per point shared by the classifier seeds")
        train = compare.train
        return (f"data {spec.file}: fixed majority {int((y == 0).sum())} {names[0]!r} rows; minority {names[1]!r} cut "
                f"from {int((y == 1).sum())} training rows (the full reference); val {len(self.val_)}, test "
                f"{len(self.test_)}" + "".join(f"; external site {n}: {len(s)} rows" for n, s in self.sites_.items())
                + f"\n{train.model}, {train.epochs} epochs, {'bf16' if train.bf16 else 'fp32'}; methods "
                f"{', '.join(compare.methods)}; seeds {spec.first_seed}..{spec.first_seed + spec.seeds - 1}; "
                f"{sharing}\n\n" + to_markdown(pd.DataFrame(rows).fillna("")))

    # ---- cells ----------------------------------------------------------------------------------------------------
    def run_cell(self, cell: Cell, run: RunContext) -> CellResult:
        if "analysis" in dict(cell.coords):
            return self.analyses()[cell["analysis"]](cell, run)
        count, seed = cell["minority"], cell["seed"]
        draw = seed if count == FULL else self.draw_of(seed)
        rows = self.rows_of(cell)
        balancer = self.point_balancer(cell["method"], count, draw, run.run_dir)
        result = self.balance_train_score(cell, rows, balancer, run, keep_model=False)
        y = rows.binary_targets()
        result.record.update(draw=draw, minority_rows=int((y == 1).sum()), majority_rows=int((y == 0).sum()),
                             generator_steps={s.name: s.config.steps for s in balancer.generators(rows)})
        return result

    def estimate(self, plan: Plan) -> dict[str, float]:
        """Seconds per cell: the probed classifier on the images the method's balancer plans, plus each generator
        it declares (trained once per point and draw, with its fidelity scores' samples) and the images the cell
        draws from it; audit cells as ``analysis_seconds`` counts them."""
        train = self.compare_config.train
        device = str(self.spec.torch_device())
        eval_rows = len(self.val_) + len(self.test_) + sum(len(site) for site in self.sites_.values())
        estimates, trained = {}, set()
        for cell in plan.cells:
            if "analysis" in dict(cell.coords):
                estimates[cell.name] = self.analysis_seconds(cell, trained)
                continue
            rows, count = self.rows_of(cell), cell["minority"]
            balancer = self.point_balancer(cell["method"], count, cell["seed"] if count == FULL
                                           else self.draw_of(cell["seed"]))
            seconds = training_seconds(train, balancer.planned_images(rows, train.epochs), eval_rows,
                                       rows.image_size, rows.n_labels)
            drawn = balancer.planned_samples(rows)
            for spec in balancer.generators(rows):
                seconds += drawn * sample_seconds(spec, rows, device)
                if entry_name(spec, rows) not in trained:  # one generator serves every method of its point
                    trained.add(entry_name(spec, rows))
                    seconds += generator_seconds(spec, rows, device)
            estimates[cell.name] = seconds
        return estimates

    # ---- generator audits -----------------------------------------------------------------------------------------
    def trained_generators(self) -> dict[str, MapGenerator]:
        """Every generator the map trains, by cache entry name: its point, draw, spec, rows and methods."""
        found: dict[str, MapGenerator] = {}
        for count in self.counts_:
            for draw in self.draws:
                rows = self.points(draw)[count]
                for method in self.compare_config.methods:
                    for spec in self.specs_at(method, count, draw):
                        entry = found.setdefault(entry_name(spec, rows), MapGenerator(count, draw, spec, rows, []))
                        entry.methods.append(method)
        return found

    def analysis_cells(self) -> list[Cell]:
        """An audit cell per generator the map trains (after every classifier cell)."""
        self.generators_ = self.trained_generators()
        return [Cell.of(analysis="audit", minority=entry.minority, draw=entry.draw, generator=name)
                for name, entry in self.generators_.items()]

    def analyses(self):
        return {"audit": self.audit_cell}

    def audit_config(self) -> AuditConfig:
        return AuditConfig(seed=self.spec.first_seed, tstr=False, device=self.spec.device)

    def audit_cell(self, cell: Cell, run: RunContext) -> CellResult:
        """Audit one generator against the minority rows it saw (as many samples as those rows, so both sides of
        each statistic have one size), in the feature space of a small CNN trained once per run on every real
        training row of the file; the audit's files go to the generator's ``audit/`` folder."""
        entry = self.generators_[cell["generator"]]
        work, device = run.run_dir / GENERATORS_DIR, str(self.spec.torch_device())
        config = self.audit_config()
        features = train_feature_model(self.train_, self.val_, config, run.run_dir / "models" /
                                       f"audit-features-{image_fingerprint(self.train_.images)}.pt")
        model = fit_or_load(entry.spec, entry.rows, work, device)  # trained by its point's cells, or here
        n = entry.minority
        images, labels = model.sample(n, labels=np.ones((n, 1), np.float32),
                                      generator=torch.Generator().manual_seed(entry.draw))
        result = audit_images(images, labels, entry.rows, self.val_, self.test_,
                              cache_dir(work, entry.spec, entry.rows) / "audit", config, features)
        metrics = {key: result["metrics"][key] for key in AUDIT_COLUMNS if key in result["metrics"]}
        fd = metrics["frechet_distance"]
        return CellResult({"metrics": metrics, "steps": entry.spec.config.steps, "reference_rows": result["n_train"]},
                          summary=f"FD {fd['synthetic']:.3f} (reference {fd['reference']:.3f})")

    def analysis_seconds(self, cell: Cell, trained: set[str]) -> float:
        """An audit: the feature model (once) and a generator no cell trained; sampling and metrics take seconds."""
        seconds = 0.0
        entry = self.generators_[cell["generator"]]
        if cell["generator"] not in trained:
            trained.add(cell["generator"])
            seconds += generator_seconds(entry.spec, entry.rows, str(self.spec.torch_device()))
        if "feature model" not in trained:
            trained.add("feature model")
            config = self.audit_config()
            classifier = TrainConfig(model=config.feature_model, batch_size=config.batch_size,
                                     epochs=config.feature_epochs, device=config.device)
            seconds += training_seconds(classifier, config.feature_epochs * len(self.train_), len(self.val_),
                                        self.train_.image_size, 1)
        return seconds

    # ---- tables ---------------------------------------------------------------------------------------------------
    def target_rows(self, results: Results) -> list[TargetRow]:
        """The map's comparisons on the internal test split, each point's (seed, minority, method) cells its arms."""
        rows = []
        for comparison in MapReport(self, results).comparisons:
            if comparison.row.get("site", "internal test") == "internal test":
                point = {"minority": int(comparison.row["minority"])}
                rows.append(TargetRow(comparison, ({**point, "method": comparison.row["method"]},
                                                   {**point, "method": comparison.row["vs"]})))
        return rows

    def tables(self, results: Results) -> list[Table]:
        return MapReport(self, results).tables()

    def figures(self, results: Results) -> list[tuple[str, str]]:
        return MapReport(self, results).figures()

    def audit_file(self, run_dir: Path, entry: MapGenerator) -> Path:
        """Where a run made before audits were cells keeps a generator's audit."""
        return cache_dir(run_dir / GENERATORS_DIR, entry.spec, entry.rows) / "audit" / "audit.json"
