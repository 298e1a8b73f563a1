"""Build docs/reproductions.md from committed files: the papers' claims (docs/results/claims.json), the tables of
finished runs copied under docs/results/<run>/ with a run.json, data-derived count tables under docs/results/data/,
and the judgement paragraphs people write after the runs (docs/judgements/<system>.md).

Three steps, each a subcommand:

    python docs/build_reproductions.py collect RUN_DIR --as RUN_ID [--wall-time 3h12m]
        copy a finished run's verdict and paper-shaped tables (Markdown + CSV, and the extra tables its claims entry
        names) into docs/results/RUN_ID/ with run.json: command, seeds, cells, time, commit, CPU model
    python docs/build_reproductions.py counts [--data DIR]
        recompute the data tables (label counts beside a paper's table, per-finding positives) from the real data
    python docs/build_reproductions.py [build] [--check]
        write docs/reproductions.md (``--check``: exit 1 if the committed page differs from what the files give)

The page's prose and tables are filled from those files only: a number on the page is a number in one of them
(tests/test_reproductions_page.py checks it, and that every table matches its file). The script writes no verdict
prose: a system's judgement is what its judgement file says, and "pending" until a person writes one.

This is a script for this repository's documentation, not a cxrgan command: it knows the layout of docs/ and
nothing in the package needs it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

DOCS = Path(__file__).resolve().parent
REPO = DOCS.parent
RESULTS = DOCS / "results"
JUDGEMENTS = DOCS / "judgements"
PAGE = DOCS / "reproductions.md"
CLAIMS_NAME = "claims.json"
RUN_NAME = "run.json"
COPIED_ROLES = ("verdict", "main")  # the tables of a run's tables.json copied by default, in reading order
# compare's generic every-metric table: a paper recipe's own paper-shaped table holds what the page needs
GENERIC_TABLES = ("results",)
VERDICTS = ("reproduced", "partly reproduced", "not reproduced", "not testable with this data")
PENDING = "pending"


class BuildError(Exception):
    """A file the page is built from is missing or inconsistent; the message names it."""


# ---- reading ---------------------------------------------------------------------------------------------------
def load_claims(results: Path = RESULTS) -> dict[str, Any]:
    path = results / CLAIMS_NAME
    if not path.is_file():
        raise BuildError(f"{path}: the claims file is missing")
    claims = json.loads(path.read_text(encoding="utf-8"))
    ids = [run["id"] for system in claims["systems"] for run in system["runs"]]
    if len(ids) != len(set(ids)):
        raise BuildError(f"{path}: run ids must be unique, got {ids}")
    return claims


def find_run(claims: dict[str, Any], run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for system in claims["systems"]:
        for run in system["runs"]:
            if run["id"] == run_id:
                return system, run
    known = [run["id"] for system in claims["systems"] for run in system["runs"]]
    raise BuildError(f"--as {run_id!r}: no such run in {CLAIMS_NAME}; known runs: {', '.join(known)}")


def read_csv(path: Path) -> pd.DataFrame:
    """A table exactly as written: every cell a string, empty cells empty."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-style Markdown table of string cells (pipes escaped)."""
    cells = [[str(v).replace("|", "\\|") for v in row] for row in table.itertuples(index=False)]
    columns = [str(c).replace("|", "\\|") for c in table.columns]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"

    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells])


def read_judgement(system_id: str, judgements: Path = JUDGEMENTS) -> tuple[str, str]:
    """(verdict, paragraph) written by a person in ``<system>.md``: a first line ``Verdict: <one of VERDICTS>``,
    then the paragraph; (PENDING, "") when there is no such file yet."""
    path = judgements / f"{system_id}.md"
    if not path.is_file():
        return PENDING, ""
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    if not lines or not lines[0].lower().startswith("verdict:"):
        raise BuildError(f"{path}: the first line must be 'Verdict: <{' | '.join(VERDICTS)}>'")
    verdict = lines[0].split(":", 1)[1].strip().lower()
    if verdict not in VERDICTS:
        raise BuildError(f"{path}: verdict {verdict!r}; expected one of {list(VERDICTS)}")
    return verdict, "\n".join(lines[1:]).strip()


# ---- collect: a finished run into docs/results/<run> ---------------------------------------------------------------
def run_provenance(run_dir: Path) -> tuple[str, str]:
    """(commit, CPU) of a run: from its invocations.jsonl (each distinct one, in order), else the checkout and CPU at
    hand (a run made before runs recorded their code)."""
    from cxrgan.io import read_jsonl
    from cxrgan.provenance import INVOCATIONS, cpu_model, git_commit

    path = run_dir / INVOCATIONS
    if not path.is_file():
        return git_commit(REPO / "cxrgan") or "unknown", cpu_model()
    invocations = read_jsonl(path)
    commits = list(dict.fromkeys(i.get("commit") or f"cxrgan {i.get('cxrgan', '?')} (no git checkout)"
                                 for i in invocations))
    cpus = list(dict.fromkeys(i.get("cpu", "unknown") for i in invocations))
    return ", ".join(commits), ", ".join(cpus)


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def collect(run_dir: Path, run_id: str, results: Path = RESULTS, wall_time: str | None = None,
            commit: str | None = None) -> Path:
    """Copy a finished run's tables into ``results/run_id`` and describe the run in its run.json.

    The run must be finished (its report written) and made by the recipe the claims file names for ``run_id``.
    The folder is replaced as a whole (written beside it, then renamed), so it never holds two runs' files.
    """
    run_dir = Path(run_dir)
    _, entry = find_run(load_claims(results), run_id)
    config_path, manifest_path = run_dir / "config.json", run_dir / "tables.json"
    if not config_path.is_file():
        raise BuildError(f"{run_dir}: not a cxrgan run directory (no config.json)")
    if not manifest_path.is_file() or not (run_dir / "report.html").is_file():
        raise BuildError(f"{run_dir}: the run has no report yet; finish it (or `cxrgan report {run_dir}`) first")
    config = json.loads(config_path.read_text())
    kind = config.get("kind")
    expected = entry["command"].split()[2]  # "cxrgan recipe NAME ..."
    if kind != expected:
        raise BuildError(f"{run_dir}: made by {kind!r}, but run {run_id!r} is a {expected!r} run")
    manifest = json.loads(manifest_path.read_text())["tables"]
    tables = [t for t in manifest if t["role"] in COPIED_ROLES and t["stem"] not in GENERIC_TABLES]
    tables.sort(key=lambda t: COPIED_ROLES.index(t["role"]))
    titles = {t["stem"]: t["title"] for t in manifest}
    for stem in entry.get("extra_tables", []):
        if (run_dir / f"{stem}.csv").is_file() and stem not in [t["stem"] for t in tables]:
            tables.append({"stem": stem, "title": titles.get(stem) or _markdown_title(run_dir / f"{stem}.md"),
                           "role": "detail"})
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "records").glob("*.json"))]
    found_commit, cpu = run_provenance(run_dir)
    if not records:
        raise BuildError(f"{run_dir}: no finished cells")
    target = results / run_id
    staging = results / f".{run_id}.collecting"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for table in tables:
        for suffix in (".md", ".csv"):
            shutil.copyfile(run_dir / f"{table['stem']}{suffix}", staging / f"{table['stem']}{suffix}")
    values = config.get("config", config)
    run = values.get("run") or values.get("compare", {}).get("run") or values  # configs since RunSpec nest it
    seeds = run.get("seeds")
    info = {
        "run": run_id,
        "recipe": kind,
        "command": [line for line in (run_dir / "command.txt").read_text().splitlines() if line.strip()]
        if (run_dir / "command.txt").is_file() else [],
        "seeds": seeds,
        "cells": len(records),
        "cell_time": clock(sum(float(r.get("seconds", 0.0)) for r in records)),
        "wall_time": wall_time or "",
        "commit": commit or found_commit,
        "cpu": cpu,
        "run_directory": run_dir.name,
        "tables": tables,
    }
    (staging / RUN_NAME).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if target.exists():
        old = results / f".{run_id}.old"
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)
    return target


def _markdown_title(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0] if path.is_file() else ""
    return first[2:].strip() if first.startswith("# ") else path.stem


# ---- counts: data-derived tables ------------------------------------------------------------------------------------
def nih_label_counts(labels_csv: Path, table1: dict[str, Any], mapping: dict[str, list[str]]) -> pd.DataFrame:
    """The paper's Table 1 rows beside the same findings' counts in NIH's complete label table (one row per image;
    ``mapping``: CheXpert pathology -> NIH findings counted together), then NIH's findings without a CheXpert row."""
    table = pd.read_csv(labels_csv, usecols=["Finding Labels"])
    findings = table["Finding Labels"].str.split("|")
    n = len(table)

    def positives(names: list[str]) -> int:
        return int(findings.map(lambda found: any(name in found for name in names)).sum())

    def share(count: int) -> str:
        return f"{count} ({100 * count / n:.1f}%)"

    def nih(count: int) -> dict[str, str]:  # NIH labels are present or absent: no uncertain label
        return {"NIH: positive": share(count), "NIH: uncertain": "0", "NIH: negative": share(n - count)}

    rows, used = [], set()
    for pathology, positive, uncertain, negative in table1["rows"]:
        names = mapping.get(pathology, [])
        used.update(names)
        rows.append({"CheXpert pathology (paper)": pathology, "paper: positive": positive,
                     "paper: uncertain": uncertain, "paper: negative": negative,
                     "NIH finding(s)": " or ".join(names), **(nih(positives(names)) if names else dict.fromkeys(
                         ("NIH: positive", "NIH: uncertain", "NIH: negative"), ""))})
    every = sorted({name for found in findings for name in found} - used - {"No Finding"})
    for name in every:
        rows.append({"CheXpert pathology (paper)": "", "paper: positive": "", "paper: uncertain": "",
                     "paper: negative": "", "NIH finding(s)": name, **nih(positives([name]))})
    rows.append({"CheXpert pathology (paper)": "images", "paper: positive": "", "paper: uncertain": "",
                 "paper: negative": "", "NIH finding(s)": "all rows", "NIH: positive": str(n), "NIH: uncertain": "",
                 "NIH: negative": ""})
    return pd.DataFrame(rows)


# CheXpert's Table 1 rows -> NIH findings counted as that pathology (the nearest NIH labels; empty: none)
CHEXPERT_TO_NIH = {"No Finding": ["No Finding"], "Cardiomegaly": ["Cardiomegaly"], "Lung Lesion": ["Mass", "Nodule"],
                   "Edema": ["Edema"], "Consolidation": ["Consolidation"], "Pneumonia": ["Pneumonia"],
                   "Atelectasis": ["Atelectasis"], "Pneumothorax": ["Pneumothorax"], "Pleural Effusion": ["Effusion"],
                   "Pleural Other": ["Pleural_Thickening"]}


def merged_finding_counts() -> pd.DataFrame:
    """Training and test positives per finding of the multi-label recipes' default data (cxrgan's own count)."""
    from cxrgan.recipes.cgan_regimes import DEFAULT_DATA
    from cxrgan.recipes.findings import finding_counts, load_findings

    dataset = load_findings(DEFAULT_DATA)
    return finding_counts(dataset.split("train"), dataset.split("test")).frame.astype(str)


def write_counts(data_dir: Path, results: Path = RESULTS) -> list[Path]:
    claims = load_claims(results)
    system = next(s for s in claims["systems"] if s["id"] == "venugopal-sunitha")
    table1 = next(t for t in system["paper_tables"] if t["id"] == "table1")
    out = results / "data"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, table in (("chexpert_table1_vs_nih.csv",
                         nih_label_counts(data_dir / "nih_labels" / "Data_Entry_2017_v2020.csv.gz", table1,
                                          CHEXPERT_TO_NIH)),
                        ("nih_merged_finding_counts.csv", merged_finding_counts())):
        (out / name).write_text(table.to_csv(index=False), encoding="utf-8")
        written.append(out / name)
    return written


# ---- build: the page ------------------------------------------------------------------------------------------------
def marker(source: str) -> str:
    """The comment before every table: the file (and part) it is copied from, which the page test reads."""
    return f"<!-- table: {source} -->"


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def matching_rows(verdicts: pd.DataFrame, match: dict[str, str]) -> pd.DataFrame:
    """The verdict-table rows whose columns equal ``match`` (a value ending in ``*`` matches a prefix)."""
    keep = pd.Series(True, index=verdicts.index)
    for column, value in match.items():
        if column not in verdicts.columns:
            return verdicts.iloc[0:0]
        cells = verdicts[column]
        keep &= cells.str.startswith(value[:-1]) if value.endswith("*") else cells.eq(value)
    return verdicts[keep]


def finding_sentences(run_dir: Path, entry: dict[str, Any]) -> list[str]:
    """One factual sentence per headline comparison of a collected run, its numbers read from verdicts.csv."""
    path = run_dir / "verdicts.csv"
    if not path.is_file():
        return []
    verdicts = read_csv(path)
    sentences = []
    for match in entry.get("headline", []):
        rows = matching_rows(verdicts, match)
        if rows.empty:
            what = ", ".join(f"{k} {v}" for k, v in match.items())
            sentences.append(f"{what}: no such row in `verdicts.csv`.")
            continue
        row = rows.iloc[0]
        what = ", ".join(f"{k} {row[k]}" for k in match)  # the row's own values, not a prefix pattern
        parts = [f"Δ {row.get('Δ [95% CI]', '')}"]
        for column, label in (("p (Holm)", "Holm-adjusted p"), ("min. detectable Δ", "minimum detectable Δ"),
                              ("seeds", "seeds")):
            if row.get(column, ""):
                parts.append(f"{label} {row[column]}")
        sentences.append(f"{what}: {'; '.join(parts)}; verdict: {row.get('verdict', '')}.")
    return sentences


def run_status(info: dict[str, Any] | None, entry: dict[str, Any]) -> str:
    """What is known of a run: measured (its run.json) or, before it exists, the plan in the claims file."""
    if info is None:
        plan = entry.get("plan")
        if not plan:
            return "Not run yet."
        text = (f"Not run yet. Planned: {plan['seeds']} seeds"
                + (f" ({plan['why_seeds']})" if plan.get("why_seeds") else "")
                + f"; expected wall time {plan['expected']} from the step times measured in the README and the "
                f"recipe's documentation ({plan['basis']}).")
        dry = plan.get("dry_run")
        if dry:
            text += (f" Its dry run with {dry['seeds']} seeds planned {dry['cells']} cells; probed at load average "
                     f"{dry['load']} on the shared machine it estimated {dry['estimate']}, a figure the other programs' "
                     "load dominates: run `--dry-run` again on a quiet machine before the run.")
        return text
    wall = f"wall time {info['wall_time']}, " if info.get("wall_time") else ""
    return (f"Run: {info['seeds']} seeds, {info['cells']} cells, {wall}sum of cell times {info['cell_time']}; "
            f"commit `{info['commit']}`; CPU {info['cpu']}; run directory `{info['run_directory']}`.")


def table_block(title: str, source: str, table: pd.DataFrame, notes: str = "") -> list[str]:
    lines = [f"**{title}**", "", marker(source), to_markdown(table), ""]
    if notes:
        lines += [notes, ""]
    return lines


def md_notes(path: Path) -> str:
    """The notes under a copied table's Markdown (everything after the table)."""
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8").strip().split("\n\n")
    body = [block for block in text if not block.startswith("# ") and not block.lstrip().startswith("|")]
    return "\n\n".join(body).strip()


def build(results: Path = RESULTS, judgements: Path = JUDGEMENTS, root: Path = REPO) -> str:
    """The page, from the claims file, the collected runs and the judgement files."""
    claims = load_claims(results)
    claims_rel = rel(results / CLAIMS_NAME, root)
    summary, sections = [], []
    for system in claims["systems"]:
        verdict, paragraph = read_judgement(system["id"], judgements)
        findings_in_short = []
        lines = [f"## {system['title']}", "", f"*{system['paper']}* Recipe: `{system['recipe']}`.", "",
                 f"**Claim** ({system['source']}). {system['claim']}", ""]
        for table in system["paper_tables"]:
            frame = pd.DataFrame(table["rows"], columns=table["columns"])
            lines += table_block(f"Paper: {table['title']}", f"{claims_rel}#{system['id']}/{table['id']}", frame)
        setting = pd.DataFrame(list(system["setting"].items()), columns=["paper's setting", "as published"])
        lines += table_block("Paper's setting", f"{claims_rel}#{system['id']}/setting", setting)
        for data_table in system.get("data_tables", []):
            path = results / data_table["file"]
            if not path.is_file():
                raise BuildError(f"{path}: missing; `python docs/build_reproductions.py counts` writes it")
            lines += table_block(data_table["title"], rel(path, root), read_csv(path), data_table.get("notes", ""))
        for entry in system["runs"]:
            run_dir = results / entry["id"]
            info = json.loads((run_dir / RUN_NAME).read_text()) if (run_dir / RUN_NAME).is_file() else None
            lines += [f"### Run `{entry['id']}`: {entry['title']}", "", "```", entry["command"], "```", "",
                      run_status(info, entry), ""]
            differs = pd.DataFrame(entry["differs"], columns=["what", "paper", "cxrgan", "why"])
            lines += table_block("What differs from the paper, and why", f"{claims_rel}#{entry['id']}/differs", differs)
            if info is None:
                findings_in_short.append(f"`{entry['id']}`: not run yet")
                continue
            for table in info["tables"]:
                csv = run_dir / f"{table['stem']}.csv"
                if not csv.is_file():
                    raise BuildError(f"{csv}: listed in {run_dir / RUN_NAME} but missing")
                lines += table_block(table["title"], rel(csv, root), read_csv(csv), md_notes(csv.with_suffix(".md")))
            sentences = finding_sentences(run_dir, entry)
            if sentences:
                lines += ["**In numbers** (from `verdicts.csv`):", ""] + [f"- {s}" for s in sentences] + [""]
                findings_in_short.append(f"`{entry['id']}`: " + " ".join(sentences))
        lines += ["**Judgement.** " + (paragraph if paragraph else
                                        "Pending: written by a person once the runs above are committed."), ""]
        sections.append("\n".join(lines))
        summary.append({"system": system["title"], "claim": system["claim_short"],
                        "cxrgan's finding": "<br>".join(findings_in_short), "verdict": verdict})
    head = ["# Reproductions: each published system's claim beside what cxrgan measures", "",
            claims["about"], "",
            "Measured tables are copied from run directories with `python docs/build_reproductions.py collect`; "
            "how their Δ, intervals, Holm-adjusted p-values and minimum detectable Δ are made is in the README "
            "(How a verdict is made). The verdict column is a person's judgement after reading the section; "
            "the finding column only restates the numbers.", "",
            "## Summary", "", marker(f"{claims_rel}#summary"), to_markdown(pd.DataFrame(summary)), ""]
    return "\n".join(head) + "\n" + "\n".join(sections).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command")
    c = commands.add_parser("collect", help="copy a finished run's tables into docs/results/RUN_ID")
    c.add_argument("run_dir", type=Path)
    c.add_argument("--as", dest="run_id", required=True, help="the run's id in docs/results/claims.json")
    c.add_argument("--wall-time", default=None, help="measured wall time of the whole run, e.g. 3h12m")
    c.add_argument("--commit", default=None, help="the commit the run was made with (default: as the run recorded it, else HEAD now)")
    k = commands.add_parser("counts", help="recompute the data-derived count tables")
    k.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="the real-data folder")
    b = commands.add_parser("build", help="write docs/reproductions.md (the default)")
    b.add_argument("--check", action="store_true", help="exit 1 if the committed page is out of date")
    args = parser.parse_args(argv)
    try:
        if args.command == "collect":
            print(collect(args.run_dir, args.run_id, wall_time=args.wall_time, commit=args.commit))
        elif args.command == "counts":
            for path in write_counts(args.data):
                print(path)
        else:
            page = build()
            if getattr(args, "check", False):
                if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != page:
                    print(f"{PAGE}: out of date; run python docs/build_reproductions.py", file=sys.stderr)
                    return 1
                return 0
            PAGE.write_text(page, encoding="utf-8")
            print(PAGE)
    except BuildError as exc:
        print(f"build_reproductions: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
