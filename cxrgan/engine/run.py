"""The one run engine: a recipe declares its grid of cells, how to run one and how to tabulate; the engine checks the
plan before anything trains, then owns the run directory, resume, progress with ETA, stored scores, tables and report.

A run directory holds ``.cxrgan-run`` (the marker of a folder cxrgan made, :mod:`cxrgan.runs`), ``config.json`` (the
resolved config, the recipe's kind and a fingerprint of every input file), ``command.txt``, ``invocations.jsonl``
(per start, resume or shard: its command, cxrgan version and git commit, torch, Python, CPU), ``labels.npz`` (the real
labels of every evaluation set and the patient of each row, so tables can be rebuilt without the data), per finished
cell ``scores/<cell>.npz`` (per evaluation set, the (N, K) scores of its model) and ``records/<cell>.json`` (the
done-set; ``results.jsonl`` lists them all in plan order, see :mod:`cxrgan.engine.store`), the tables
(``<stem>.md`` / ``.csv``, listed in ``tables.json`` in reading order), figures, and ``report.html``.
``cxrgan report RUN_DIR`` rebuilds tables and report from these files alone (:func:`report_run`). Cells may be
spread over torchrun processes (each cell data-parallel), over shards on several machines, or over local worker
processes (:func:`run_recipe`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

from cxrgan import distributed
from cxrgan.claims import release, try_claim
from cxrgan.engine.cells import ROLE_ORDER, Cell, Plan, Shard
from cxrgan.engine.probes import memory_lines
from cxrgan.engine.recipe import Recipe, RunContext, recipe_from_run
from cxrgan.engine.spec import run_spec_of
from cxrgan.engine.target import clock, dry_run_lines, read_rounds, with_stop_reasons
from cxrgan.engine.store import (CLAIMS_DIR, Results, adopt_legacy_results, check_resumable, claim_path, done_cells,
                                 save_cell, save_labels, write_results_view)
from cxrgan.errors import CxrganError, RankAgreedError
from cxrgan.io import append_jsonl, write_json
from cxrgan.provenance import INVOCATIONS, invocation
from cxrgan.report.html import check_report_target, write_report
from cxrgan.report.tables import to_markdown, write_tables
from cxrgan.runs import new_run_dir, shared_run_dir, write_config

TABLES_MANIFEST = "tables.json"



def checked_plan(recipe: Recipe) -> Plan:
    """The recipe's plan, refusing one without cells."""
    plan = recipe.plan()
    if not plan.cells:
        raise CxrganError(f"{recipe.kind}: the plan has no cells (no methods or seeds)")
    return plan


def open_run(recipe: Recipe, plan: Plan, out: str | Path, resume_dir: str | Path | None = None,
             command: str | None = None, shared: bool = False) -> Path:
    """The run directory, ready for cells: ``resume_dir`` (checked to be a run of this recipe), the shared
    ``out/<description>-shared`` of a sharded run (created by whichever shard comes first), or a new numbered one
    in ``out``; with its config, command line, evaluation labels and data tables."""
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        # checked before anything is written to it
        check_resumable(run_dir, recipe.kind, recipe.config, plan.evaluation_sets, plan.groups)
    else:
        run_dir = (shared_run_dir if shared else new_run_dir)(out, recipe.description())
        if (run_dir / "config.json").exists():  # a shard joining a shared run
            check_resumable(run_dir, recipe.kind, recipe.config, plan.evaluation_sets, plan.groups)
    adopt_legacy_results(run_dir)
    write_config(run_dir, recipe.config, kind=recipe.kind)
    if command:
        with open(run_dir / "command.txt", "a", encoding="utf-8") as f:  # appended: a resumed run adds its line
            f.write(command + "\n")
    append_jsonl(run_dir / INVOCATIONS, invocation(command))
    save_labels(run_dir, plan.evaluation_sets, plan.label_names, plan.class_names, plan.subgroups, plan.groups)
    for table in plan.data_tables:
        write_tables(table.frame, run_dir / table.stem, title=table.title, notes=table.notes)
    return run_dir


def run_recipe(recipe: Recipe, out: str | Path | None, resume_dir: str | Path | None = None, command: str | None = None,
               dry_run: bool = False, progress: bool = True, shard: Shard | None = None, workers: int = 1,
               report: bool = True, tag: str = "", device: str = "auto") -> Path | None:
    """Plan, check, run (or resume) the cells, then tabulate and report. Returns the run directory (None for a
    dry run, which prints the plan with a measured time estimate and writes nothing, and on every process of a
    torchrun job but rank 0).

    Under torchrun every process plans and runs every cell together (each cell data-parallel); rank 0 alone writes
    files and the others wait for it before reading. ``shard`` runs one of N disjoint subsets of the cells into
    the shared run directory (another machine runs another); ``workers`` > 1 runs the cells in that many local
    processes (:mod:`cxrgan.engine.workers`). A cell is claimed before it runs, so no two processes ever run the
    same one. Once every cell of the plan is in, the process that sees it last builds the tables and the report
    (``report=False`` leaves that to the caller); ``tag`` prefixes the progress lines. ``device`` is the run's
    ``--device``: with workers, ``cuda:N`` keeps every worker on GPU N (else each takes one GPU in turn).
    """
    plan = distributed.agree(lambda: checked_plan(recipe))
    spec = run_spec_of(recipe.config)
    if spec is not None and spec.target_mde is not None:
        check_target_run(recipe, shard, workers)
        if not dry_run:
            return run_target(recipe, plan, out, resume_dir, command, progress, report)
    if dry_run:  # probed by rank 0 alone, as one process (its probes would otherwise wait in collectives for the others)
        is_main, processes = distributed.is_main(), distributed.world_size()
        distributed.shutdown()
        if is_main:
            done: set[str] = set()
            if resume_dir is not None:  # the same checks as the run itself, and only its missing cells are timed
                check_resumable(Path(resume_dir), recipe.kind, recipe.config, plan.evaluation_sets, plan.groups)
                done = done_cells(resume_dir)
            print(dry_run_text(recipe, plan, processes, done))
        return None
    if workers > 1:
        from cxrgan.engine.workers import run_with_workers

        if distributed.active() or shard is not None:
            raise RankAgreedError("--workers runs local processes; combine it neither with torchrun nor with --shard")
        run_dir = open_run(recipe, plan, out, resume_dir, command)
        run_with_workers(run_dir, workers, progress, device)
        return finish_run(recipe, plan, run_dir)
    run_dir = distributed.on_main(lambda: open_run(recipe, plan, out, resume_dir, command, shared=shard is not None))
    run_cells(recipe, plan, run_dir, shard.select(plan.cells) if shard else plan.cells, progress,
              tag or (f"shard {shard}: " if shard else ""))
    is_main = distributed.is_main()
    distributed.shutdown()  # what follows (analyses, tables, report) is rank 0's alone
    if not is_main:
        return None
    return finish_run(recipe, plan, run_dir) if report else run_dir


def check_target_run(recipe: Recipe, shard: Shard | None, workers: int) -> None:
    """Refuse a --target-mde run this recipe or these settings cannot do, before anything trains."""
    if type(recipe).target_rows is Recipe.target_rows:
        raise CxrganError(f"recipe {recipe.kind} names no rows for --target-mde; run it with a fixed --seeds")
    if shard is not None or workers > 1 or distributed.active():
        raise RankAgreedError("--target-mde decides its rounds in one process: combine it with neither --shard, "
                              "--workers nor torchrun")


def run_target(recipe: Recipe, plan: Plan, out: str | Path | None, resume_dir: str | Path | None,
               command: str | None, progress: bool, report: bool) -> Path:
    """A --target-mde run: rounds of cells until the stopping rule of :mod:`cxrgan.engine.target` says enough."""
    from cxrgan.engine.target import TargetRun

    run_dir = open_run(recipe, plan, out, resume_dir, command)
    cells = TargetRun(recipe, plan, run_dir).run(
        lambda grown, grown_plan, todo: run_cells(grown, grown_plan, run_dir, todo, progress))
    if report:
        report_run(run_dir, recipe, [c.name for c in cells])
    return run_dir


def run_cells(recipe: Recipe, plan: Plan, run_dir: Path, cells: list[Cell], progress: bool, tag: str = "") -> None:
    """Run every cell of ``cells`` that is neither done nor claimed by another process, in order; a cell's
    ``after`` cells first (run here when nobody runs them, waited for when another process does)."""
    say = print if distributed.is_main() else (lambda *args, **kwargs: None)
    done = distributed.on_main(lambda: done_cells(run_dir))
    todo = [c for c in cells if c.name not in done]
    say(f"{tag}{recipe.kind}: {run_dir}\n{plan.summary}\n{len(plan.cells)} cells, {len(done)} done, "
        f"{len(todo)} to run" + (f" here (of {len(cells)} in this share)" if len(cells) < len(plan.cells) else ""),
        flush=True)
    runner = _CellRunner(recipe, plan, run_dir, RunContext(run_dir=run_dir, progress=progress), tag, say)
    for i, cell in enumerate(todo, 1):
        runner.run(cell, f"{tag}[{len(plan.cells) - len(todo) + i}/{len(plan.cells)}]", len(todo) - i)


class _CellRunner:
    """Claims, runs and records cells of one plan, keeping the elapsed time and ETA of the progress lines."""

    POLL_SECONDS = 5.0  # how often a cell waiting for another process's cell looks again

    def __init__(self, recipe: Recipe, plan: Plan, run_dir: Path, context: RunContext, tag: str, say):
        self.recipe, self.plan, self.run_dir, self.context, self.tag, self.say = recipe, plan, run_dir, context, tag, say
        self.cells = {c.name: c for c in plan.cells}
        self.order = [c.name for c in plan.cells]
        self.started, self.finished = time.perf_counter(), 0

    def run(self, cell: Cell, position: str, remaining: int, quiet: bool = False) -> bool:
        """Run ``cell`` unless it is done or claimed elsewhere (said unless ``quiet``); ``remaining`` cells follow
        it (for the ETA). Returns whether the cell is done."""
        self.inputs(cell)
        claim = claim_path(self.run_dir, cell.name)
        owner = distributed.on_main(lambda: _claim_unfinished(self.run_dir, cell, claim))
        if owner is not None:
            if not quiet:
                self.say(f"{position} {cell.label}: {owner}, skipped", flush=True)
            return owner == "done by another process"
        self.say(f"{position} {cell.label} ...", flush=True)
        cell_started = time.perf_counter()
        try:
            result = self.recipe.run_cell(cell, self.context)
            undeclared = sorted(set(result.scores) - set(self.plan.evaluation_sets))
            if undeclared:
                raise CxrganError(f"{self.recipe.kind}: cell {cell.label} scored undeclared set(s) {undeclared}")
            seconds = time.perf_counter() - cell_started
            record = {**dict(cell.coords), "cell": cell.name, **result.record, "seconds": round(seconds, 1)}
            if distributed.is_main():
                save_cell(self.run_dir, cell.name, record, result.scores)
                write_results_view(self.run_dir, self.order)
        finally:
            if distributed.is_main():
                release(claim)
        distributed.barrier()  # the record is on disk before any process reads the run again
        self.finished += 1
        elapsed = time.perf_counter() - self.started
        self.say(f"{position} {cell.label}: {result.summary} ({seconds:.0f} s; elapsed {clock(elapsed)}, "
                 f"ETA {clock(elapsed / self.finished * remaining)})", flush=True)
        return True

    def inputs(self, cell: Cell) -> None:
        """The cells ``cell`` reads from, done: run here when no live process holds them, else waited for."""
        for name in cell.after:
            waiting = False
            while name not in distributed.on_main(lambda: done_cells(self.run_dir)):
                if self.run(self.cells[name], f"{self.tag}[needed by {cell.label}]", 0, quiet=True):
                    break
                if not waiting:
                    self.say(f"{self.tag}{cell.label}: waiting for {self.cells[name].label} (another process)",
                             flush=True)
                waiting = True
                time.sleep(self.POLL_SECONDS)


def _claim_unfinished(run_dir: Path, cell: Cell, claim: Path) -> str | None:
    """Claim ``cell``; None when this process should run it, else why not (done meanwhile, or run elsewhere)."""
    owner = try_claim(claim)
    if owner is not None:
        return f"running in {owner}"
    if cell.name in done_cells(run_dir):  # finished by another process since this one listed the done cells
        release(claim)
        return "done by another process"
    return None


def finish_run(recipe: Recipe, plan: Plan, run_dir: Path) -> Path:
    """Once every cell of the plan (analysis cells too) is in: the tables and report (one process at a time)."""
    missing = [c for c in plan.cells if c.name not in done_cells(run_dir)]
    if missing:
        print(f"\n{len(missing)} of {len(plan.cells)} cells are not in yet (other shards or processes, or claims of "
              f"stopped ones in {run_dir / CLAIMS_DIR}); once they are, `cxrgan report {run_dir}` builds the tables",
              flush=True)
        return run_dir
    claim = run_dir / CLAIMS_DIR / "_report"
    owner = try_claim(claim)
    if owner is not None:
        print(f"\nevery cell is in; {owner} is building the report of {run_dir}", flush=True)
        return run_dir
    try:
        report_run(run_dir, recipe, [c.name for c in plan.cells])
    finally:
        release(claim)
    return run_dir


def report_run(run_dir: str | Path, recipe: Recipe | None = None, order: Sequence[str] | None = None) -> Path:
    """Rebuild every table, figure and ``report.html`` of a run from its stored records and scores, print the
    verdict and main tables, and return the report's path (``cxrgan report RUN_DIR``). ``order`` lists the cell
    names in plan order (made from the plan when None)."""
    run_dir = check_report_target(run_dir)  # a folder cxrgan made, a report.html it wrote: nothing else is replaced
    if recipe is None:  # rebuilt from config.json: its plan (data, chosen findings, splits) is made again, cheaply
        recipe = recipe_from_run(run_dir)
    if order is None:
        order = [c.name for c in recipe.plan().cells]
    results = Results(run_dir, order)
    if not results.records:
        raise CxrganError(f"{run_dir}: no finished cells yet; nothing to tabulate")
    write_results_view(run_dir, order)
    missing = len(set(order) - {r.get("cell") for r in results.records + results.analyses})
    if missing:
        print(f"{run_dir}: {missing} of {len(order)} cells are not in yet; the tables hold the finished ones")
    # a table with no columns (e.g. verdicts of a run that holds only its baseline) is left out
    tables = sorted((t for t in recipe.tables(results) if len(t.frame.columns)), key=lambda t: ROLE_ORDER.get(t.role, 9))
    rounds = read_rounds(run_dir)
    if rounds:  # a --target-mde run: each row of a verdict table says why it got no more seeds
        target = run_spec_of(recipe.config).target_mde
        tables = [with_stop_reasons(t, rounds, target) for t in tables]
    for table in tables:
        write_tables(table.frame, run_dir / table.stem, title=table.title, notes=table.notes)
    figures = recipe.figures(results)
    write_json(run_dir / TABLES_MANIFEST, {"tables": [{"stem": t.stem, "title": t.title, "role": t.role} for t in tables],
                                           "figures": [{"file": f, "caption": c} for f, c in figures]})
    report = write_report(run_dir)
    for table in tables:
        if table.role in ("verdict", "main"):
            print(f"\n{table.title}\n\n{to_markdown(table.frame)}\n\n{table.notes}")
    print(f"\nresults: {run_dir}\nreport: {report}")
    return report


def dry_run_text(recipe: Recipe, plan: Plan, processes: int = 1, done: set[str] = frozenset()) -> str:
    """The plan of a run: config, data summary, the grid, a wall-time estimate from a measured probe of one process
    (``processes`` > 1: the run's torchrun processes, which share every batch), and the traced peak device memory
    of the models' steps. ``done``: the cells a resumed run already has (listed as done, not timed)."""
    from dataclasses import asdict

    estimates = recipe.estimate(plan)
    todo = [c for c in plan.cells if c.name not in done]
    counts = f"{len(plan.cells)} cells" + (f", {len(plan.cells) - len(todo)} done, {len(todo)} to run" if done else "")
    lines = [json.dumps(asdict(recipe.config), indent=2, default=str), "", plan.summary, "", f"{counts}:"]
    for cell in plan.cells:
        seconds = estimates.get(cell.name)
        mark = "  (done)" if cell.name in done else f"  (~{clock(seconds)})" if seconds is not None else ""
        lines.append(f"  {cell.label}{mark}")
    total = sum(estimates.get(c.name, 0.0) for c in todo) if estimates else None
    if total is not None:
        lines.append(f"estimated wall time: {clock(total)} on this machine{' for the cells to run' if done else ''} "
                     "(from a probe of a few timed steps of each model; load from other programs makes it longer)")
        if processes > 1:
            lines.append(f"  (probed as one process; the {processes} torchrun processes share each batch: at best "
                         f"1/{processes} of it, plus their gradient exchanges)")
    spec = run_spec_of(recipe.config)
    if spec is not None and spec.target_mde is not None:
        lines += dry_run_lines(spec, total)
    return "\n".join(lines + memory_lines())
