"""The helps-map's results in tables, words and a figure: its one Holm family, the answer per method, the map table,
each point's generator audit and the Δ-against-minority-size plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrgan.engine import Results, Table
from cxrgan.evaluate.audit import reference_cells
from cxrgan.evaluate.inference import VERDICT_BETTER, VERDICT_NONE, VERDICT_WORSE, Effect
from cxrgan.evaluate.verdicts import Comparison, Verdicts, compare_auc, effect_cells, method_note, verdict_table
from cxrgan.evaluate.summary import seed_cell
from cxrgan.recipes.dcgan_alpha import AUDIT_COLUMNS
from cxrgan.report.plots import plot_effect_map

BASELINE = "none"
DUPLICATION = "oversample"  # the count-matched control every generative row must beat
FULL = "full"  # the minority coordinate of the reference cells, trained on every minority training row

SUMMARY_NOTE = ("One row per evaluation set and minority count. none and full: ROC AUC mean [95% CI over seeds]; "
                "Δ = method - baseline, paired by seed, [95% CI] (not Holm-adjusted; every verdict, p and min. "
                "detectable Δ per comparison in map.md and map_verdicts); min. detectable Δ vs none: smallest to "
                "largest over the methods at that point; detectable differences: the comparisons whose Holm-adjusted "
                "verdict is better or worse. {family}")

AUDIT_NOTE = ("Each generator sampled as many minority images as the minority rows it trained on, audited in the "
              "feature space of a small CNN trained on every real training row of the file; reference = the same "
              "statistic for the real minority rows the generator saw (vs the real test rows of that class), so "
              "both sides have the same sample size. memorised: share of images closer to a training image than the "
              "1st percentile of real test-to-train distances (reference: about 0.01). A memorising generator shows "
              "memorised far above its reference and a two-sample AUC near its reference.")


class MapReport:
    """One run's map (finished or not): every comparison of the map, Holm-adjusted as one family, and the tables,
    sentences and figure made from them."""

    def __init__(self, recipe: Any, results: Results):
        """``recipe``: the planned :class:`cxrgan.recipes.helps_map.HelpsMap` (its points, majority rows and
        generators); ``results``: what its run directory holds."""
        self.recipe, self.results = recipe, results
        self.externals = recipe.external_sets(results)
        self.sets = ["test", *self.externals]
        self.counts = recipe.counts_
        self.methods = recipe.compare_config.methods
        self.comparisons = self.map_comparisons()
        self.effects = MapEffects(self.comparisons)

    def site_label(self, set_name: str) -> dict[str, str]:
        return {"site": "internal test" if set_name == "test" else set_name} if self.externals else {}

    def map_comparisons(self) -> list[Comparison]:
        """Every method against none and every method but none against duplication, at every point and on every
        evaluation set: the one Holm family of the map."""
        rows = []
        for set_name in self.sets:
            for count in self.counts:
                where = {"minority": count}
                rows += self.recipe.comparisons(self.results, set_name, BASELINE, self.methods, where)
                if DUPLICATION in self.methods:
                    rows += self.recipe.comparisons(self.results, set_name, DUPLICATION,
                                                    tuple(m for m in self.methods if m != BASELINE), where)
        return rows

    def headroom(self, set_name: str, count: int) -> Comparison:
        """``full`` against ``none`` at a point (paired by classifier seed): described, not tested in the family."""
        results = self.results
        y = results.labels[set_name][:, 0]
        full = results.seed_scores(set_name, minority=FULL, method=BASELINE)
        none = results.seed_scores(set_name, minority=count, method=BASELINE)
        return compare_auc({"minority": str(count)}, y, {s: v[:, 0] for s, v in full.items()},
                           {s: v[:, 0] for s, v in none.items()}, results.patients(set_name))

    # ---- tables ---------------------------------------------------------------------------------------------------
    def tables(self) -> list[Table]:
        recipe, results = self.recipe, self.results
        c, spec, compare = recipe.config, recipe.spec, recipe.compare_config
        n_tests = sum(comp.effect is not None and not math.isnan(comp.effect.p) for comp in self.comparisons)
        conditional = c.generator_seeds is not None and c.generator_seeds < spec.seeds
        family = (f"Holm over the whole map: {n_tests} comparisons (every method vs none and vs oversample at every "
                  "point" + (", internal test and external sites" if self.externals else "") + ").")
        condition = (f" Generator rows are conditional on {c.generator_seeds} generator(s) per point shared by the "
                     f"{spec.seeds} classifier seeds (--generator-seeds), not a distribution over generators."
                     if conditional else "")
        answer = pd.DataFrame([{"method": "(headroom)", "answer": self.headroom_sentence()}]
                              + [{"method": m, "answer": answer_sentence(m, self.clauses(m),
                                                                         conditional and recipe.is_generative(m))}
                                 for m in self.methods if m != BASELINE and results.where(method=m)])
        steps = compare.generators.steps
        budget = (f"Every generator trains {steps} steps (--gan-steps)." if steps is not None
                  else f"Generator steps: its preset x clip(1 + {c.budget.per_halving:g} log2(minority / "
                       f"{c.budget.reference_rows}), {c.budget.floor:g}, 1) (each generator's steps in map_audit).")
        notes = (f"One row per minority count (training rows of {self.class_name(1)!r}, nested per seed and grouped by "
                 f"patient; the {self.majority_rows()} {self.class_name(0)!r} rows fixed). Cells: test ROC AUC mean "
                 "[95% CI over seeds]; Δ = method - baseline, paired by seed, [95% CI]; p (Holm) and verdict per "
                 "baseline as 'vs none / vs oversample'; min. detectable Δ: the smallest difference each comparison "
                 f"detects with 80% power before adjustment. {family} full = none trained on the fixed majority plus "
                 f"every minority training row ({self.minority_pool()}); headroom = full - none at the point, paired "
                 f"by seed (described, not tested). {budget}{condition}")
        tables = [Table("answer", f"helps-map: where does each method help? ({Path(spec.file).name})", answer,
                        f"Generated from the verdicts of the map table. {family}{condition}", role="verdict"),
                  Table("map_summary", f"helps-map at a glance: {Path(spec.file).name}, Δ ROC AUC vs none per method "
                        "and point", self.summary_table(), SUMMARY_NOTE.format(family=family), role="main"),
                  Table("map", f"helps-map: {Path(spec.file).name}, {compare.train.model}, {spec.seeds} seed(s) "
                        "per point", self.map_table(), notes, role="main"),
                  Table("map_verdicts", "helps-map: every comparison of the map (one Holm family)",
                        verdict_table(self.comparisons), method_note(self.comparisons), role="detail")]
        audit = self.audit_table()
        if len(audit):
            tables.append(Table("map_audit", "helps-map: each point's generators, audited against the minority rows "
                                "they saw", audit, AUDIT_NOTE, role="detail"))
        return tables

    def class_name(self, value: int) -> str:
        return (self.recipe.base_.class_names or ("0", "1"))[value]

    def majority_rows(self) -> int:
        return int((self.recipe.base_.binary_targets() == 0).sum())

    def minority_pool(self) -> str:
        return f"{int((self.recipe.base_.binary_targets() == 1).sum())} {self.class_name(1)!r} rows"

    def clauses(self, method: str) -> list[tuple[str, str, list]]:
        """(baseline, site, [(count, effect or None, note), ...]) of one method, internal test first."""
        baselines = [BASELINE] + ([DUPLICATION] if DUPLICATION in self.methods and method != DUPLICATION else [])
        out = []
        for set_name in self.sets:
            site = self.site_label(set_name)
            for baseline in baselines:
                points = [(count, *self.effects.get(minority=str(count), method=method, vs=baseline, **site))
                          for count in self.counts if self.effects.has(minority=str(count), method=method,
                                                                        vs=baseline, **site)]
                if points:
                    out.append((baseline, "" if set_name == "test" else set_name, points))
        return out

    def headroom_sentence(self) -> str:
        results = self.results
        full = [r["metrics"]["roc_auc"] for r in results.where(minority=FULL, method=BASELINE)]
        parts = [f"{np.mean([r['metrics']['roc_auc'] for r in results.where(minority=n, method=BASELINE)]):.3f} at {n}"
                 for n in self.counts if results.where(minority=n, method=BASELINE)]
        if not full or not parts:
            return "not measured yet (the full reference or the none cells are missing)"
        return (f"none reaches ROC AUC {', '.join(parts)} minority images, against {np.mean(full):.3f} with all "
                f"{self.minority_pool()} (full), on the internal test split")

    def map_table(self) -> pd.DataFrame:
        results, effects = self.results, self.effects
        rows = []
        for count in self.counts:
            row: dict[str, Any] = {"minority rows": count, "seeds": len(results.where(minority=count, method=BASELINE))}
            for set_name in self.sets:
                at = "" if set_name == "test" else f" @ {set_name}"
                key = "roc_auc" if set_name == "test" else f"roc_auc@{set_name}"
                auc = lambda **where: seed_cell([r["metrics"][key] for r in results.where(**where)])  # noqa: E731
                row[f"none ROC AUC{at}"] = auc(minority=count, method=BASELINE)
                row[f"full ROC AUC{at}"] = auc(minority=FULL, method=BASELINE)
                headroom = self.headroom(set_name, count)
                row[f"headroom (full - none){at}"] = (effect_cells(headroom.effect)["Δ [95% CI]"] if headroom.effect
                                                      else headroom.note)
                site = self.site_label(set_name)
                for method in self.methods:
                    if method == BASELINE or not results.where(minority=count, method=method):
                        continue
                    row[f"{method} ROC AUC{at}"] = auc(minority=count, method=method)
                    found = [(b, *effects.get(minority=str(count), method=method, vs=b, **site))
                             for b in (BASELINE, DUPLICATION) if effects.has(minority=str(count), method=method,
                                                                              vs=b, **site)]
                    for baseline, effect, note in found:
                        cells = effect_cells(effect) if effect is not None else {}
                        row[f"{method} Δ vs {baseline}{at}"] = cells.get("Δ [95% CI]", note)
                    for column, key_ in (("p (Holm)", "p (Holm)"), ("verdict", "verdict"),
                                         ("min. detectable Δ", "min. detectable Δ")):
                        values = [effect_cells(e)[key_] if e is not None else "not tested" for _, e, _ in found]
                        row[f"{method} {column}{at}"] = " / ".join(values)
            rows.append(row)
        return pd.DataFrame(rows).fillna("")

    def summary_table(self) -> pd.DataFrame:
        """The map in one small table: per evaluation set and point, ``none`` beside ``full``, every method's Δ vs
        none, each generative method's Δ vs duplication, and the range of minimum detectable Δ vs none."""
        results, effects = self.results, self.effects
        rows = []
        for set_name in self.sets:
            key = "roc_auc" if set_name == "test" else f"roc_auc@{set_name}"
            site = self.site_label(set_name)
            for count in self.counts:
                aucs = lambda **where: [r["metrics"][key] for r in results.where(**where)]  # noqa: E731
                row: dict[str, Any] = {**site, "minority rows": count,
                                       "none ROC AUC": seed_cell(aucs(minority=count, method=BASELINE)),
                                       "full ROC AUC": seed_cell(aucs(minority=FULL, method=BASELINE))}
                mdes, differs = [], []
                for method in self.methods:
                    baselines = [BASELINE] + ([DUPLICATION] if self.recipe.is_generative(method) else [])
                    for baseline in baselines:
                        if not effects.has(minority=str(count), method=method, vs=baseline, **site):
                            continue
                        effect, note = effects.get(minority=str(count), method=method, vs=baseline, **site)
                        row[f"{method} Δ vs {baseline}"] = effect_cells(effect)["Δ [95% CI]"] if effect else note
                        if effect is not None and baseline == BASELINE and not math.isnan(effect.mde):
                            mdes.append(effect.mde)
                        if effect is not None and effect.verdict in (VERDICT_BETTER, VERDICT_WORSE):
                            differs.append(f"{method} {effect.verdict} than {baseline}")
                row["min. detectable Δ vs none"] = (f"{min(mdes):.3f}-{max(mdes):.3f}" if len(set(mdes)) > 1
                                                    else f"{mdes[0]:.3f}" if mdes else "n/a")
                row["detectable differences (Holm)"] = ", ".join(differs) or "none"
                rows.append(row)
        return pd.DataFrame(rows).fillna("")

    def audit_table(self) -> pd.DataFrame:
        """One row per audited generator: its point, draw, steps, the methods using it and the audit's metrics
        (from its analysis cell; a run made before audits were cells: from its ``audit/audit.json``)."""
        rows = []
        for name, entry in self.recipe.generators_.items():
            records = self.results.analysis("audit", generator=name)
            path = self.recipe.audit_file(self.results.run_dir, entry)
            if records:
                metrics = records[0]["metrics"]
            elif path.exists():
                metrics = json.loads(path.read_text(encoding="utf-8"))["metrics"]
            else:
                continue
            rows.append({"minority rows": entry.minority, "draw": entry.draw, "generator": entry.spec.name,
                         "steps": entry.spec.config.steps, "used by": ", ".join(entry.methods),
                         **reference_cells(metrics, AUDIT_COLUMNS)})
        return pd.DataFrame(rows)

    def figures(self) -> list[tuple[str, str]]:
        panels = {}
        for set_name in self.sets:
            site = self.site_label(set_name)
            lines = {}
            for method in self.methods:
                points = [(count, self.effects.get(minority=str(count), method=method, vs=BASELINE, **site)[0])
                          for count in self.counts]
                points = [(n, e.delta, e.ci_low, e.ci_high) for n, e in points if e is not None]
                if method != BASELINE and points:
                    lines[method] = points
            if lines:
                panels["internal test" if set_name == "test" else f"external site {set_name}"] = lines
        if not panels:
            return []
        plot_effect_map(panels, self.results.run_dir / "map.png", reference=DUPLICATION,
                        xlabel=f"{self.class_name(1)} (minority) training images", ylabel="Δ ROC AUC vs none")
        return [("map.png", "Δ ROC AUC vs none (mean over seeds, 95% CI) against the minority class's training "
                            "images, one line per method; duplication (oversample) dashed as the reference line")]


class MapEffects:
    """The map's comparisons with Holm applied over all of them, looked up by their row keys."""

    def __init__(self, comparisons: list[Comparison]):
        self.by_row = {tuple(sorted(comp.row.items())): (effect, comp.note)
                       for comp, effect in Verdicts(comparisons).items}

    def has(self, **row: str) -> bool:
        return tuple(sorted(row.items())) in self.by_row

    def get(self, **row: str) -> tuple[Effect | None, str]:
        """(Holm-adjusted effect or None, why there is none) of the comparison with exactly these keys."""
        return self.by_row.get(tuple(sorted(row.items())), (None, "not compared"))


# ---- the answer, in words --------------------------------------------------------------------------------------
PHRASES = {VERDICT_BETTER: "better than {b}", VERDICT_WORSE: "worse than {b}", VERDICT_NONE: "no detectable "
           "difference from {b}"}


def _counts_phrase(counts: list[int], grid: list[int]) -> str:
    """"at every minority count from 16 to 400", "from 100 minority images on", "up to 50 minority images" or "at 25
    and 50 minority images"."""
    where = [grid.index(n) for n in counts]
    if len(counts) == len(grid) and len(grid) > 1:
        return f"at every minority count from {grid[0]} to {grid[-1]}"
    if len(counts) > 1 and where == list(range(where[0], len(grid))):
        return f"from {counts[0]} minority images on"
    if len(counts) > 1 and where == list(range(len(counts))):
        return f"up to {counts[-1]} minority images"
    listed = ", ".join(map(str, counts[:-1])) + (" and " if len(counts) > 1 else "") + str(counts[-1])
    return f"at {listed} minority images"


def answer_sentence(method: str, clauses: list[tuple[str, str, list[tuple[int, Effect | None, str]]]],
                    conditional: bool = False) -> str:
    """One sentence per method from its verdicts: per baseline and site, the minority counts grouped by verdict,
    with the effects where it differed and the smallest detectable ones where it did not.

    Args:
        method: the method's name.
        clauses: (baseline, site ("" = internal test), [(minority count, Holm-adjusted effect or None, note), ...]).
        conditional: its generators were shared by the classifier seeds (say so).
    """
    parts: dict[str, list[str]] = {}  # site ("" = internal test) -> its phrases, in clause order
    for baseline, site, points in clauses:
        grid = [count for count, _, _ in points]
        name = "duplication (oversample)" if baseline == DUPLICATION else baseline
        groups: dict[str, list] = {}
        for count, effect, note in points:
            groups.setdefault(effect.verdict if effect is not None else note, []).append((count, effect))
        phrases = []
        for verdict, members in sorted(groups.items(), key=lambda item: grid.index(item[1][0][0])):
            counts = [count for count, _ in members]
            text = (PHRASES[verdict].format(b=name) if verdict in PHRASES else f"not tested against {name} ({verdict})")
            text += " " + _counts_phrase(counts, grid)
            effects = [e for _, e in members if e is not None and not math.isnan(e.mde)]
            if verdict in (VERDICT_BETTER, VERDICT_WORSE):
                text += " (Δ " + ", ".join(effect_cells(e)["Δ [95% CI]"] for e in effects) + ")"
            elif verdict == VERDICT_NONE and effects:
                low, high = min(e.mde for e in effects), max(e.mde for e in effects)
                text += f" (min. detectable Δ {low:.3f}" + (f"-{high:.3f})" if high > low else ")")
            phrases.append(text)
        parts.setdefault(site, []).append(", ".join(phrases))
    if not parts:
        return f"{method}: no comparisons yet."
    text = "; ".join((f"at {site}: " if site else "") + "; and ".join(phrases) for site, phrases in parts.items())
    return (f"{method}: {text}" + ("; conditional on one generator per point shared by the classifier seeds"
                                   if conditional else "") + ".")
