"""``--target-mde D``: a run that adds training seeds in rounds until every tested row of its primary (internal test)
split can detect a difference of D, its wall-time ``--budget`` is spent, or ``--max-seeds`` is reached.

The stopping rule reads only the variance parts of each row's test -- the seed spread s_d, the test-image term κ
and the degrees of freedom, through the minimum detectable Δ (:meth:`Effect.mde_at`) -- and never Δ, its CI or
p: the effects it is handed have those blanked (:func:`variance_only`). A rule that looked at Δ or p would stop
when the result looked good, and the final test's level would no longer be its nominal one. Rounds are sized by
the variance-only projection (the seeds at which a row's MDE would reach D with the same s_d and κ), at most doubling
a row's seeds per round because s_d from few seeds is rough, and shrunk (or not started) when the seconds per cell
measured so far say the round would overrun the budget. A row whose floor (its MDE with infinitely many seeds,
from max(κ, 0) alone) is above D gets no more seeds.

The rounds are logged in ``config.json`` (``target_rounds``): each round's seeds per row and arm, the MDE per row
that sized it, why each row stopped, and the wall time spent. A resumed run keeps the logged rounds (their missing
cells run; a done cell never trains again), then decides the next round from the stored scores, as an uninterrupted
run would have; the budget counts the earlier processes' time as logged, plus the cells they finished after their
last round (the cell a kill interrupted is not counted).
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd

from cxrgan.engine.cells import Cell, Plan, Table, TargetRow
from cxrgan.engine.recipe import Recipe
from cxrgan.engine.spec import RunSpec, run_spec_of, with_run
from cxrgan.engine.store import Results
from cxrgan.errors import CxrganError
from cxrgan.evaluate.inference import ALPHA, POWER, Effect, minimum_detectable_effect
from cxrgan.io import write_json

ROUNDS_KEY = "target_rounds"  # config.json key of the rounds' log
MAX_GROWTH = 2.0  # a round at most multiplies a row's seeds by this (s_d from few seeds is a rough guide)
REACHED, FLOOR, BUDGET, MAX_SEEDS, NO_VARIANCE = ("target reached", "floor above target", "budget spent",
                                                  "max seeds", "no variance")
RULE_HELP = ("add seeds in rounds until every tested row's minimum detectable Δ on the internal test split is <= D "
             "(--budget, --max-seeds bound it). The stopping rule looks only at variances (s_d², κ̂, df), never at "
             "Δ or p; a row whose floor (κ̂ alone) is above D gets no more seeds")


def parse_duration(text: str) -> float:
    """Seconds of a duration such as ``60m``, ``1h30m``, ``45s`` or ``2h``."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*", text)
    if not text.strip() or match is None or not any(match.groups()):
        raise ValueError(f"expected a duration such as 60m, 1h30m or 45s, got {text!r}")
    hours, minutes, seconds = (float(g or 0) for g in match.groups())
    total = 3600 * hours + 60 * minutes + seconds
    if total <= 0:
        raise ValueError(f"a budget must be longer than 0, got {text!r}")
    return total


# ---- the stopping rule -----------------------------------------------------------------------------------------
def variance_only(effect: Effect) -> Effect:
    """The effect with Δ, its CI and p blanked: all the stopping rule may see."""
    nan = float("nan")
    return replace(effect, delta=nan, ci_low=nan, ci_high=nan, p=nan, p_adjusted=nan)


def floor_mde(effect: Effect, alpha: float = ALPHA, power: float = POWER) -> float:
    """The minimum detectable Δ with infinitely many seeds: the test-image term max(κ, 0) alone (normal reference)."""
    return minimum_detectable_effect(math.sqrt(effect.floor), math.inf, alpha, power)


def seeds_to_reach(effect: Effect, target: float, ceiling: int) -> int:
    """The fewest seeds (from the effect's own up to ``ceiling``) whose projected MDE, same s_d and κ, is <= target;
    ``ceiling`` when none is."""
    low, high = effect.n_seeds, ceiling  # the projected MDE falls as seeds grow: bisect for the first one enough
    if effect.mde_at(high) > target:
        return ceiling
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if effect.mde_at(middle) <= target else (middle, high)
    return high


@dataclass(frozen=True)
class RowDecision:
    """What the rule decided for one row after a round."""

    seeds: int  # paired seeds the row has
    next_seeds: int  # seeds the row gets by the end of the next round (= seeds when it stopped)
    mde: float  # its minimum detectable Δ now (NaN below 2 seeds)
    floor: float  # its minimum detectable Δ with infinitely many seeds
    stopped: str  # why it gets no more seeds ("" while it does)


def decide(effects: Mapping[str, Effect | None], target: float, max_seeds: int,
           round_seconds: Callable[[dict[str, int]], float] | None = None,
           seconds_left: float = math.inf) -> dict[str, RowDecision]:
    """The next round: per tested row (``None``: not tested, left out), how many seeds it gets, or why none.

    Args:
        effects: row name -> its effect on the primary test split; only its variance parts are read.
        target: the Δ every row should be able to detect (--target-mde).
        max_seeds: the most seeds a row may get.
        round_seconds: wall seconds a round giving rows these seed counts would take (None: not known).
        seconds_left: budget not yet spent; a round that would overrun it is shrunk, or not started.
    """
    decisions: dict[str, RowDecision] = {}
    wanted: dict[str, int] = {}
    for name, effect in effects.items():
        if effect is None:
            continue
        effect = variance_only(effect)  # from here on Δ and p are not there to be looked at
        n = effect.n_seeds
        if n < 2:  # no variance yet: the row needs a pair of seeds before anything can be projected
            mde, floor, stopped = math.nan, math.nan, (MAX_SEEDS if n >= max_seeds else "")
            need = 2
        else:
            mde, floor = effect.mde, floor_mde(effect)
            stopped = (NO_VARIANCE if effect.untestable else REACHED if mde <= target else
                       FLOOR if floor > target else MAX_SEEDS if n >= max_seeds else "")
            need = seeds_to_reach(effect, target, max_seeds) if not stopped else n
        if not stopped:
            wanted[name] = min(max(need, n + 1), max(n + 1, int(n * MAX_GROWTH)), max_seeds)
        decisions[name] = RowDecision(n, n, mde, floor, stopped)
    if wanted and round_seconds is not None:
        wanted = _fit_budget(wanted, {name: decisions[name].seeds for name in wanted}, round_seconds, seconds_left)
    for name, decision in decisions.items():
        if name in wanted:
            decisions[name] = replace(decision, next_seeds=wanted[name])
        elif not decision.stopped:
            decisions[name] = replace(decision, stopped=BUDGET)
    return decisions


def _fit_budget(wanted: dict[str, int], have: dict[str, int], round_seconds: Callable[[dict[str, int]], float],
                seconds_left: float) -> dict[str, int]:
    """``wanted`` with each row's added seeds capped at the largest k whose round fits ``seconds_left`` ({} if even
    one seed more per row does not fit)."""
    for step in range(max(wanted[n] - have[n] for n in wanted), 0, -1):
        capped = {name: min(seeds, have[name] + step) for name, seeds in wanted.items()}
        if round_seconds(capped) <= seconds_left:
            return capped
    return {}


# ---- the rounds' log -------------------------------------------------------------------------------------------
def read_rounds(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "config.json").read_text()).get(ROUNDS_KEY, [])


def write_rounds(run_dir: Path, rounds: list[dict]) -> None:
    """The rounds' log into ``config.json``, beside the config (atomically: temporary file and rename)."""
    path = run_dir / "config.json"
    record = json.loads(path.read_text())
    record[ROUNDS_KEY] = rounds
    write_json(path, record)


def _arm_key(arm: Mapping[str, Any]) -> str:
    return json.dumps(dict(arm), sort_keys=True, default=str)


def _matches(cell: Cell, arm: Mapping[str, Any]) -> bool:
    coords = dict(cell.coords)
    return all(coords.get(key) == value for key, value in arm.items())


def round_cells(first: Plan, grown: Plan, spec: RunSpec, arm_seeds: Mapping[str, int]) -> list[Cell]:
    """The cells of a target run so far: every cell of the first round's plan, then each seeded cell of ``grown``
    (planned with more seeds) whose seed lies within the seeds given to an arm it belongs to."""
    arms = [(json.loads(key), count) for key, count in arm_seeds.items()]
    names = {c.name for c in first.cells}
    for cell in grown.cells:
        seed = dict(cell.coords).get("seed")
        if seed is not None and any(seed < spec.first_seed + count and _matches(cell, arm) for arm, count in arms):
            names.add(cell.name)
            names.update(cell.after)  # the cells it reads run too
    planned = {c.name for c in grown.cells}
    return [cell for cell in grown.cells if cell.name in names] + [c for c in first.cells if c.name not in planned]


# ---- the run ---------------------------------------------------------------------------------------------------
class TargetRun:
    """The rounds of one ``--target-mde`` run of ``recipe`` in ``run_dir`` (opened, with its first plan)."""

    def __init__(self, recipe: Recipe, plan: Plan, run_dir: Path):
        self.recipe, self.first, self.run_dir = recipe, plan, run_dir
        self.spec = run_spec_of(recipe.config)
        self.planned: dict[int, tuple[Recipe, Plan]] = {self.spec.seeds: (recipe, plan)}  # by seeds planned for
        self.rounds = read_rounds(run_dir)
        self.started = time.perf_counter()
        # time of earlier processes: as logged at their last round, plus the cells they finished after it
        last = self.rounds[-1] if self.rounds else {"spent_seconds": 0.0, "cell_seconds": 0.0}
        self.spent_before = last["spent_seconds"] + max(0.0, _cell_seconds(Results(run_dir)) - last["cell_seconds"])

    @property
    def spent(self) -> float:
        """Wall seconds the run has spent: earlier processes' (logged at each round's end) and this one's."""
        return self.spent_before + time.perf_counter() - self.started

    def arm_seeds(self) -> dict[str, int]:
        """Seeds given to each arm (by :func:`_arm_key`) so far."""
        return {_arm_key(arm["cells"]): arm["seeds"] for arm in self.rounds[-1]["arms"]} if self.rounds else {}

    def run(self, run_cells: Callable[[Recipe, Plan, list[Cell]], None]) -> list[Cell]:
        """Run the logged rounds' missing cells, then round after round until the rule stops; returns every cell.
        A finished run that is resumed decides once more (a larger --budget or --max-seeds may give more seeds)."""
        decided = False
        while True:
            grown_recipe, grown = self.grown()
            cells = round_cells(self.first, grown, self.spec, self.arm_seeds())
            run_cells(grown_recipe, replace(grown, cells=cells), cells)
            if decided and self.rounds[-1]["final"]:
                return cells
            self.next_round()
            decided = True

    def grown(self) -> tuple[Recipe, Plan]:
        """The recipe and plan with as many seeds as the most any arm has been given."""
        most = max([self.spec.seeds, *self.arm_seeds().values()])
        if most not in self.planned:
            recipe = type(self.recipe)(with_run(self.recipe.config, seeds=most))
            self.planned = {most: (recipe, recipe.plan())}  # the data of one grown recipe in memory at a time
        return self.planned[most]

    def target_rows(self, results: Results) -> list[TargetRow]:
        rows = self.recipe.target_rows(results)
        if rows is None:
            raise CxrganError(f"recipe {self.recipe.kind} names no rows for --target-mde")
        return rows

    def next_round(self) -> None:
        """Decide the next round from the stored scores and log it (``final`` when no row gets more seeds)."""
        results = Results(self.run_dir)
        rows = {row.name: row for row in self.target_rows(results)}
        seconds = _seconds_per_seed(results, rows)
        arms = dict(self.arm_seeds())
        for row in rows.values():  # arms start with the first round's seeds
            for arm in row.arms:
                arms.setdefault(_arm_key(arm), self.spec.seeds)

        def round_seconds(wanted: dict[str, int]) -> float:
            grown = _grown_arms(arms, rows, wanted)
            return sum(seconds.get(key, 0.0) * (count - arms[key]) for key, count in grown.items())

        budget = self.spec.budget_seconds
        decisions = decide({name: row.comparison.effect for name, row in rows.items()}, self.spec.target_mde,
                           self.spec.max_seeds, round_seconds if budget is not None else None,
                           math.inf if budget is None else budget - self.spent)
        grown = _grown_arms(arms, rows, {n: d.next_seeds for n, d in decisions.items() if not d.stopped})
        added = max([count - arms[key] for key, count in grown.items()] + [0])
        if self.rounds and self.rounds[-1]["final"]:  # decided again on resume: the new decision replaces it
            self.rounds.pop()
        entry = {"round": len(self.rounds) + 1, "spent_seconds": round(self.spent, 1),
                 "cell_seconds": round(_cell_seconds(results), 1), "seeds_added": added,
                 "final": added == 0, "arms": [{"cells": json.loads(key), "seeds": n} for key, n in grown.items()],
                 "rows": [{"row": rows[name].comparison.row, "seeds": d.seeds, "next_seeds": d.next_seeds,
                           "mde": _rounded(d.mde), "floor": _rounded(d.floor), "stopped": d.stopped}
                          for name, d in decisions.items()]}
        self.rounds.append(entry)
        write_rounds(self.run_dir, self.rounds)
        active = [f"{name} {d.seeds}->{d.next_seeds} (MDE {d.mde:.4f})" for name, d in decisions.items()
                  if not d.stopped]
        print(f"target Δ {self.spec.target_mde:g}, round {entry['round']} after {clock(self.spent)}: "
              + (f"adds up to {added} seed(s): {'; '.join(active)}" if added else "no row gets more seeds")
              + "".join(f"; {name}: {d.stopped}" for name, d in decisions.items() if d.stopped), flush=True)


def _grown_arms(arms: dict[str, int], rows: Mapping[str, TargetRow], wanted: Mapping[str, int]) -> dict[str, int]:
    """Seeds per arm when the rows in ``wanted`` get those many (an arm shared by rows takes the most)."""
    grown = dict(arms)
    for name, count in wanted.items():
        for arm in rows[name].arms:
            key = _arm_key(arm)
            grown[key] = max(grown[key], count)
    return grown


def _cell_seconds(results: Results) -> float:
    """Seconds the finished cells of a run took, together."""
    return sum(float(record.get("seconds", 0.0)) for record in results.records + results.analyses)


def _seconds_per_seed(results: Results, rows: Mapping[str, TargetRow]) -> dict[str, float]:
    """Per arm, the measured wall seconds of one more seed: the mean over its seeds of the seconds its cells took."""
    seconds: dict[str, float] = {}
    for row in rows.values():
        for arm in row.arms:
            per_seed: dict[int, float] = {}
            for record in results.records:
                if "seed" in record and all(record.get(key) == value for key, value in arm.items()):
                    per_seed[record["seed"]] = per_seed.get(record["seed"], 0.0) + float(record.get("seconds", 0.0))
            seconds[_arm_key(arm)] = sum(per_seed.values()) / len(per_seed) if per_seed else 0.0
    return seconds


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 5)


def clock(seconds: float) -> str:
    """A duration for a progress line: ``1h05m`` or ``4m07s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


# ---- what the tables say ---------------------------------------------------------------------------------------
def with_stop_reasons(table: Table, rounds: list[dict], target: float) -> Table:
    """A verdict table (``verdicts.verdict_table``'s columns) with a ``stopped`` column after ``seeds``: why each
    row got no more seeds (an external site's row shares its internal row's seeds and reason), and a note on the
    rule; any other table as it is."""
    if not rounds or not {"seeds", "min. detectable Δ"} <= set(table.frame.columns):
        return table
    last = rounds[-1]
    frame = table.frame.copy()
    reasons = []
    for _, values in frame.iterrows():
        reason = ""
        for row in last["rows"]:
            identity = {k: v for k, v in row["row"].items() if k != "site"}
            if all(str(values.get(k, "")) == str(v) for k, v in identity.items()):
                reason = row["stopped"] or "still adding seeds"
                break
        reasons.append(reason)
    frame.insert(list(frame.columns).index("seeds") + 1, "stopped", reasons)
    note = (f" --target-mde {target:g}: {len(rounds)} round(s) of seeds, more seeds for a tested row while its "
            f"minimum detectable Δ on the internal test split was above {target:g}; stopped: why a row got no more "
            "(target reached; floor above target: its test-image term κ̂ alone keeps its MDE above the target; budget "
            "spent; max seeds). The rule read only variances (s_d², κ̂, df), never Δ or p.")
    return replace(table, frame=pd.DataFrame(frame), notes=table.notes + note)


def dry_run_lines(spec: RunSpec, first_round_seconds: float | None = None) -> list[str]:
    """What --dry-run says of a target run beyond its first round (``first_round_seconds``: its estimate)."""
    budget = "no time limit" if spec.budget_seconds is None else f"a budget of {clock(spec.budget_seconds)} wall time"
    lines = [f"--target-mde {spec.target_mde:g}: the cells above are round 1 ({spec.seeds} seeds). Later rounds add "
             f"seeds per tested row until its minimum detectable Δ on the internal test split is <= "
             f"{spec.target_mde:g}, at most {spec.max_seeds} seeds and {budget}; how many depends on the variances "
             "round 1 measures (s_d², κ̂), so they cannot be planned now. The rule never reads Δ or p."]
    over_budget = spec.budget_seconds is not None and (first_round_seconds or 0.0) > spec.budget_seconds
    if over_budget:
        lines.append(f"  round 1 alone is estimated at {clock(first_round_seconds)}, more than the budget: it runs "
                     "whole and no round follows it (fewer --seeds make a smaller first round)")
    return lines
