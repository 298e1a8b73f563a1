"""docs/reproductions.md: every table on the page matches the file it names, every number on the page is a number in
a committed file, and the page is what docs/build_reproductions.py makes of those files. The collect-and-build
mechanism is checked on a tiny real run made here (small CNN, one epoch, real Kermany images)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from cxrgan.classify import TrainConfig
from cxrgan.data import save_npz
from cxrgan.engine.spec import RunSpec
from cxrgan.io import read_jsonl
from cxrgan.recipes.compare import CompareConfig
from cxrgan.recipes.dcgan_alpha import DcganAlpha, DcganAlphaConfig
from cxrgan.engine import run_recipe

REPO = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- table: (?P<source>\S+) -->$")
# a number standing alone: not part of a word or identifier ("table2", "3d586b1", "ResNet-18" count as words)
NUMBER = re.compile(r"(?<![\w.\-])[-+−]?(\d[\d,]*(?:\.\d+)?)(?![\w])")


def _builder():
    spec = importlib.util.spec_from_file_location("build_reproductions", REPO / "docs" / "build_reproductions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_reproductions = _builder()


# ---- an independent reader of the page ----------------------------------------------------------------------------
def _cells(line: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [p.strip().replace("\\|", "|") for p in parts]


def page_tables(page: str) -> list[tuple[str | None, list[str], list[list[str]]]]:
    """(source named by the marker line above it or None, header, rows) of every Markdown table on the page."""
    lines, tables, i = page.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[-|]+\|", lines[i + 1].strip()):
            match = MARKER.match(lines[i - 1]) if i else None
            header, rows, i = _cells(lines[i]), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables.append((match["source"] if match else None, header, rows))
        else:
            i += 1
    return tables


def expected_table(source: str, root: Path) -> tuple[list[str], list[list[str]]] | None:
    """The header and rows the named file (or part of the claims file) holds; None for the summary table."""
    path, _, part = source.partition("#")
    if not part:
        frame = pd.read_csv(root / path, dtype=str, keep_default_na=False)
        return [str(c) for c in frame.columns], frame.values.tolist()
    claims = json.loads((root / path).read_text())
    if part == "summary":
        return None
    owner, what = part.split("/")
    systems = {s["id"]: s for s in claims["systems"]}
    runs = {r["id"]: r for s in claims["systems"] for r in s["runs"]}
    if what == "setting":
        return ["paper's setting", "as published"], [list(kv) for kv in systems[owner]["setting"].items()]
    if what == "differs":
        return ["what", "paper", "cxrgan", "why"], runs[owner]["differs"]
    table = next(t for t in systems[owner]["paper_tables"] if t["id"] == what)
    return table["columns"], table["rows"]


def _numbers(text: str) -> set[str]:
    return {m.group(1).replace(",", "") for m in NUMBER.finditer(text)}


def backing_numbers(root: Path) -> set[str]:
    """Every number in the files the page may be built from: the claims file and the committed results."""
    found: set[str] = set()
    for path in (root / "docs" / "results").rglob("*"):
        if path.is_file() and path.suffix == ".csv":  # cell by cell: the separator is not a thousands comma
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            for cell in [*frame.columns, *frame.values.ravel()]:
                found |= _numbers(str(cell))
        elif path.is_file() and path.suffix in (".md", ".json"):
            found |= _numbers(path.read_text(encoding="utf-8"))
    return found


def page_problems(page: str, root: Path) -> list[str]:
    """What on the page has no file behind it: a table without a source, a table that differs from its file, a
    summary row that differs from the claims and judgements, a number that no committed file holds."""
    problems = []
    claims = json.loads((root / "docs" / "results" / "claims.json").read_text())
    for source, header, rows in page_tables(page):
        if source is None:
            problems.append(f"a table without a source marker: {header}")
            continue
        expected = expected_table(source, root)
        if expected is None:  # the summary: claims as in the claims file, verdicts as the judgement files say
            for system, row in zip(claims["systems"], rows):
                verdict = build_reproductions.read_judgement(system["id"], root / "docs" / "judgements")[0]
                if row[0] != system["title"] or row[1] != system["claim_short"] or row[3] != verdict:
                    problems.append(f"summary row {row[0]!r} differs from the claims or judgement files")
            if len(rows) != len(claims["systems"]):
                problems.append("the summary has not one row per system")
            continue
        if header != [str(h) for h in expected[0]] or rows != [[str(c) for c in r] for r in expected[1]]:
            problems.append(f"the table from {source} differs from that file")
    text = re.sub(r"```.*?```", "", page, flags=re.S)
    text = re.sub(r"`[^`]*`|<!--.*?-->", "", text)
    missing = sorted(_numbers(text) - backing_numbers(root))
    if missing:
        problems.append(f"numbers with no file behind them: {missing}")
    return problems


# ---- the committed page ---------------------------------------------------------------------------------------------
def test_committed_page_is_built_from_its_files():
    page = (REPO / "docs" / "reproductions.md").read_text(encoding="utf-8")
    assert page == build_reproductions.build(), "docs/reproductions.md is out of date: run docs/build_reproductions.py"
    assert page_problems(page, REPO) == []
    claims = build_reproductions.load_claims()
    assert [s["id"] for s in claims["systems"]] == ["malygina", "venugopal-sunitha", "sundaram-hulkund", "sun-li",
                                                   "madani"]
    for system in claims["systems"]:  # one section per system, the claim in numbers, a command per run
        assert f"## {system['title']}" in page and system["paper_tables"]
        for run in system["runs"]:
            assert run["command"].startswith(f"cxrgan recipe {run['command'].split()[2]} ")
            assert run["command"].split()[2] in system["recipe"]
    # nothing under docs/results but the claims, the data tables and collected runs (each with its run.json)
    for path in (REPO / "docs" / "results").iterdir():
        assert path.name in ("claims.json", "data") or (path / "run.json").is_file(), path


def test_data_tables_are_the_real_data_counts(data_dir):
    """The committed count tables are what the real data gives today (never typed in)."""
    results = REPO / "docs" / "results"
    system = next(s for s in build_reproductions.load_claims()["systems"] if s["id"] == "venugopal-sunitha")
    table1 = next(t for t in system["paper_tables"] if t["id"] == "table1")
    fresh = build_reproductions.nih_label_counts(data_dir / "nih_labels" / "Data_Entry_2017_v2020.csv.gz", table1,
                                                 build_reproductions.CHEXPERT_TO_NIH)
    committed = pd.read_csv(results / "data" / "chexpert_table1_vs_nih.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(fresh.astype(str), committed)
    assert committed.iloc[-1]["NIH: positive"] == "112120"  # NIH's complete table: one row per image
    merged = pd.read_csv(results / "data" / "nih_merged_finding_counts.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(build_reproductions.merged_finding_counts(), merged)


# ---- the mechanism, on a tiny real run --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(kermany_small, tmp_path_factory):
    """A finished dcgan-alpha run on real Kermany images: small CNN, one epoch, three cheap rows, two seeds (six
    cells) and the TSTR reference's analysis cell."""
    folder = tmp_path_factory.mktemp("tiny")
    data = save_npz(kermany_small, folder / "kermany_small.npz")
    train = TrainConfig(model="small-cnn", epochs=1, batch_size=32, progress=False, device="cpu", bf16=True)
    methods = ("none", "class-weights", "oversample")
    config = DcganAlphaConfig(CompareConfig(RunSpec(str(data), seeds=2), methods=methods, imbalance=(3, 1),
                                            train=train), tstr_images=16)
    return run_recipe(DcganAlpha(config), folder / "runs", command="cxrgan recipe dcgan-alpha --seeds 2 (test)",
                      progress=False)


@pytest.fixture()
def docs_copy(tmp_path):
    """A docs/ folder with the committed claims file, its headline pointed at the tiny run's rows."""
    results = tmp_path / "docs" / "results"
    shutil.copytree(REPO / "docs" / "results", results)
    claims = json.loads((results / "claims.json").read_text())
    run = next(r for s in claims["systems"] for r in s["runs"] if r["id"] == "sun-li")
    run["headline"] = [{"method": "oversample", "vs": "none"}, {"method": "dcgan", "vs": "none"}]
    (results / "claims.json").write_text(json.dumps(claims))
    return tmp_path


def test_a_collected_run_fills_its_section_from_its_files(tiny_run, docs_copy):
    results, judgements = docs_copy / "docs" / "results", docs_copy / "docs" / "judgements"
    with pytest.raises(build_reproductions.BuildError, match="made by 'dcgan-alpha'.*'cyclegan-complement'"):
        build_reproductions.collect(tiny_run, "malygina-paper", results=results)
    recorded = build_reproductions.collect(tiny_run, "sun-li", results=results, wall_time="0h01m")
    made_by = read_jsonl(tiny_run / "invocations.jsonl")[0]  # the commit and CPU the run recorded, not typed in
    assert json.loads((recorded / "run.json").read_text())["commit"] == (made_by["commit"] or
                                                                        f"cxrgan {made_by['cxrgan']} (no git checkout)")
    target = build_reproductions.collect(tiny_run, "sun-li", results=results, wall_time="0h01m", commit="abc")
    info = json.loads((target / "run.json").read_text())
    assert info["seeds"] == 2 and info["cells"] == 7 and info["command"] == ["cxrgan recipe dcgan-alpha --seeds 2 (test)"]
    assert [t["stem"] for t in info["tables"]] == ["verdicts", "paper_table", "train_split"]
    for stem in ("verdicts", "paper_table"):
        assert (target / f"{stem}.csv").read_text() == (tiny_run / f"{stem}.csv").read_text()
    judgements.mkdir()
    verdicts = pd.read_csv(target / "verdicts.csv", dtype=str, keep_default_na=False)
    oversample = verdicts[verdicts["method"] == "oversample"].iloc[0]
    (judgements / "sun-li.md").write_text(f"Verdict: not testable with this data\nA tiny run: Δ {oversample['Δ [95% CI]']}.\n")
    page = build_reproductions.build(results, judgements, docs_copy)
    assert page_problems(page, docs_copy) == []
    section = page[page.index("## Sun & Li"):page.index("## Madani")]
    assert "<!-- table: docs/results/sun-li/verdicts.csv -->" in section
    assert "<!-- table: docs/results/sun-li/paper_table.csv -->" in section
    assert f"method oversample, vs none: Δ {oversample['Δ [95% CI]']}; Holm-adjusted p {oversample['p (Holm)']}" in section
    assert "method dcgan, vs none: no such row" in section  # a headline the run does not have is said, not invented
    assert "Run: 2 seeds, 7 cells, wall time 0h01m" in section and "**Judgement.** A tiny run" in section
    sun = page_tables(page)[0][2][3]  # the summary's row of this system
    assert sun[0] == "Sun & Li: DCGAN and cDCGAN(alpha) oversampling of pneumonia"
    assert sun[3] == "not testable with this data" and "`sun-li`: method oversample, vs none: Δ" in sun[2]

    # the checker sees a changed cell, an unbacked number and an unmarked table
    cell = oversample["Δ [95% CI]"]
    start = page.index("<!-- table: docs/results/sun-li/verdicts.csv -->")
    tampered = page[:start] + page[start:].replace(f"| {cell}", f"| {cell[0]}9{cell[1:]}", 1)
    assert any("sun-li/verdicts.csv differs" in p for p in page_problems(tampered, docs_copy))
    assert any("0.987654" in p for p in page_problems(page + "\nAUC 0.987654 here.\n", docs_copy))
    assert any("without a source" in p for p in page_problems(page + "\n| a |\n|---|\n| b |\n", docs_copy))
    (judgements / "sun-li.md").write_text("Verdict: sort of\n")
    with pytest.raises(build_reproductions.BuildError, match="verdict 'sort of'"):
        build_reproductions.build(results, judgements, docs_copy)


# ---- the README's claims about these systems -------------------------------------------------------------------------
def readme_sentences_citing_the_page(readme: str) -> list[str]:
    """Sentences of the README that cite docs/reproductions.md together with a run of it (`run-id`)."""
    runs = {r["id"] for s in build_reproductions.load_claims()["systems"] for r in s["runs"]}
    text = re.sub(r"```.*?```", "", readme, flags=re.S).replace("\n", " ")
    sentences = re.split(r"(?<=\.)\s+(?=[A-Z`])", text)
    return [s for s in sentences if "docs/reproductions.md" in s and any(f"`{run}`" in s for run in runs)]


def test_readme_claims_about_the_systems_agree_with_the_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sentences = readme_sentences_citing_the_page(readme)
    assert len(sentences) >= 2  # the CycleGAN fidelity sentence and the dcgan-alpha generator rows
    backed = backing_numbers(REPO)
    for sentence in sentences:
        text = re.sub(r"`[^`]*`|\[[^\]]*\]\([^)]*\)", "", sentence)
        assert sorted(_numbers(text) - backed) == [], sentence
    # the top line counts the judgements as they stand
    verdicts = [build_reproductions.read_judgement(s["id"])[0] for s in build_reproductions.load_claims()["systems"]]
    words = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    top = next(line for line in readme.split("\n\n") if "system by system" in line).replace("\n", " ")
    for verdict in set(verdicts):
        assert f"{words[verdicts.count(verdict)]} {verdict}" in top, (verdict, top)
