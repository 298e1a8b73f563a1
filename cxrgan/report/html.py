"""One self-contained HTML page per run directory: tables, curves, GAN artefacts, audits, CAM panels and config.

The page embeds every PNG as a base64 data URI and carries its own CSS, so it opens offline, can be mailed as a
single file, and makes no network request. Sections appear only when the run holds their files.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import audit_table
from cxrgan.io import read_json, read_jsonl, write_text
from cxrgan.runs import check_own_folder, config_data_file

REPORT_NAME = "report.html"
_GENERATOR_TAG = '<meta name="generator" content="cxrgan">'  # tells a page cxrgan wrote from a user's file

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1150px;
       color: #1d1d1f; background: #fff; line-height: 1.4; }
h1 { font-size: 24px; border-bottom: 2px solid #2b6cb0; padding-bottom: 6px; }
h2 { font-size: 19px; margin-top: 32px; color: #2b6cb0; }
h3 { font-size: 15px; margin-bottom: 4px; }
table { border-collapse: collapse; margin: 8px 0 12px; font-size: 13px; }
th, td { border: 1px solid #c9d2dc; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #e8eef5; }
tr:nth-child(even) td { background: #f6f8fa; }
pre { background: #f3f4f6; border: 1px solid #d9dde3; padding: 10px; font-size: 12px; overflow-x: auto;
      white-space: pre-wrap; }
img { max-width: 100%; border: 1px solid #e1e4e8; margin: 4px 0; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
.figures figure { margin: 0; flex: 1 1 480px; }
figcaption { font-size: 12px; color: #555; }
.note { font-size: 13px; color: #444; }
nav a { margin-right: 14px; font-size: 13px; }
"""


def write_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/report.html`` from whatever the run holds and return its path.

    Sections, the answer first: the verdict tables and the main (paper-shaped) tables of the run engine's manifest
    (``tables.json``); figures (the manifest's, else ``roc.png`` / ``pr.png``); the detail tables and one row per
    finished cell; per generator found in the run itself or under ``generators/`` its loss curves and latest
    sample grid; every ``audit.json`` with its distance histograms and nearest-pair grid; CAM panels
    (``cam*.png``, ``cam/*.png``); the dataset summary (``train_split``, the data file's splits); and last the
    command (``command.txt``) and resolved config (``config.json``).

    Args:
        run_dir: a run directory written by ``cxrgan compare``, a GAN training run, or an audit output folder.
    """
    run_dir = check_report_target(run_dir)
    sections = [s for s in (build(run_dir) for build in SECTIONS) if s]
    if not sections:
        raise CxrganError(f"{run_dir}: holds nothing to report (no config.json, results, images or audit)")
    nav = " ".join(f'<a href="#{anchor}">{_escape(title)}</a>' for anchor, title, _ in sections)
    body = "\n".join(f'<section id="{anchor}"><h2>{_escape(title)}</h2>\n{content}</section>'
                     for anchor, title, content in sections)
    page = (
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{_GENERATOR_TAG}"
        f"<title>cxrgan report: {_escape(run_dir.name)}</title>"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<style>{_CSS}</style></head><body>\n"
        f"<h1>cxrgan report: {_escape(run_dir.name)}</h1>\n<nav>{nav}</nav>\n{body}\n</body></html>\n"
    )
    return write_text(run_dir / REPORT_NAME, page)


def check_report_target(run_dir: str | Path) -> Path:
    """``run_dir`` when a report may be written into it: a folder cxrgan made (:func:`cxrgan.runs.is_run_dir`) whose
    ``report.html``, if any, cxrgan wrote. Anything else is refused, so no file cxrgan did not write is replaced."""
    run_dir = check_own_folder(run_dir, "cxrgan report")
    page = run_dir / REPORT_NAME
    if page.is_dir() or (page.exists() and not _written_by_cxrgan(page)):
        raise CxrganError(f"{page}: was not written by cxrgan; move it away to write the run's report")
    return run_dir


def _written_by_cxrgan(page: Path) -> bool:
    with open(page, "rb") as f:
        head = f.read(4096)
    return _GENERATOR_TAG.encode() in head or b"<title>cxrgan report: " in head  # the latter: pages of earlier versions


# ---- sections: each returns (anchor, title, html) or None ------------------------------------------------------
Section = tuple[str, str, str] | None


def _command_section(run_dir: Path) -> Section:
    parts = []
    command = run_dir / "command.txt"
    if command.exists():
        parts.append(f"<h3>Command</h3><pre>{_escape(command.read_text(encoding='utf-8').strip())}</pre>")
    config = run_dir / "config.json"
    if config.exists():
        text = json.dumps(read_json(config), indent=2, sort_keys=True)
        parts.append(f"<h3>Resolved config (config.json)</h3><pre>{_escape(text)}</pre>")
    return ("command", "Command and config", "\n".join(parts)) if parts else None


def _dataset_section(run_dir: Path) -> Section:
    content = ""
    table = _read_table(run_dir / "train_split")
    if table is not None:
        title, _, _ = _markdown_parts(run_dir / "train_split.md")
        content += f"<h3>{_escape(title or 'Training split')}</h3>" + _table_html(table) + _imbalance_html(table)
    file_table, data_path = _data_file_counts(run_dir)
    if file_table is not None:
        content += (f"<h3>All splits of the data file {_escape(data_path)}</h3>" + _table_html(file_table)
                    + _imbalance_html(file_table))
    return ("dataset", "Dataset", content) if content else None


def _data_file_counts(run_dir: Path) -> tuple[pd.DataFrame | None, str]:
    """Per-split counts of the data file named in config.json, when it is still where the run found it."""
    path = run_dir / "config.json"
    if not path.exists():
        return None, ""
    try:
        config = read_json(path).get("config", {})
    except CxrganError:
        return None, ""
    if not isinstance(config, dict):
        return None, ""
    # a paper recipe's comparison holds the run spec since RunSpec; otherwise the config itself
    config = next((h for h in (config.get("compare", {}), config) if isinstance(h.get("run"), dict)), config)
    data_path = config_data_file(config)
    if data_path is None or not Path(data_path).is_file():
        return None, ""
    from cxrgan.data.npz import load_npz

    target = config.get("target") or config.get("npz_target") or ("findings" if "findings" in config else "labels")
    try:
        dataset = load_npz(data_path, target=target, uncertainty=config.get("uncertainty", "ignore"))
    except CxrganError:
        return None, ""  # the file changed since the run; the report still shows what the run recorded
    return dataset.counts_table().astype(str), data_path


def _manifest(run_dir: Path) -> dict:
    """``tables.json`` written by the run engine: the tables in reading order with their roles, and the figures."""
    path = run_dir / "tables.json"
    if not path.exists():
        return {}
    return read_json(path, "cxrgan report RUN_DIR writes it again")


def _tables_html(run_dir: Path, roles: tuple[str, ...]) -> str:
    blocks = []
    for entry in _manifest(run_dir).get("tables", []):
        if entry.get("role") not in roles:
            continue
        table = _read_table(run_dir / entry["stem"])
        if table is None:
            continue
        _, notes, _ = _markdown_parts(run_dir / f"{entry['stem']}.md")
        blocks.append(f"<h3>{_escape(entry.get('title', entry['stem']))}</h3>" + _table_html(table)
                      + (f"<p class=\"note\">{_escape(notes)}</p>" if notes else ""))
    return "\n".join(blocks)


def _verdict_section(run_dir: Path) -> Section:
    content = _tables_html(run_dir, ("verdict",))
    return ("verdicts", "Verdicts: does each method beat its baseline?", content) if content else None


def _main_section(run_dir: Path) -> Section:
    content = _tables_html(run_dir, ("main",))
    return ("main", "Results", content) if content else None


def _results_section(run_dir: Path) -> Section:
    content = _tables_html(run_dir, ("detail",))
    if not content:  # a run written before the engine's manifest: its one results table
        table = _read_table(run_dir / "results")
        if table is not None:
            title, notes, _ = _markdown_parts(run_dir / "results.md")
            content = (f"<p class=\"note\">{_escape(title)}</p>" if title else "") + _table_html(table)
            content += f"<p class=\"note\">{_escape(notes)}</p>" if notes else ""
    records = [r for r in read_jsonl(run_dir / "results.jsonl") if "analysis" not in r]  # cells that trained models
    if records:
        keys = [k for k in ("regime", "policy", "n", "row", "method", "seed") if any(k in r for r in records)]
        rows = [{**{k: r.get(k, "") for k in keys}, "test ROC AUC [95% bootstrap CI]": _auc_cell(r),
                 "train rows": r.get("train_rows"), "synthetic rows": r.get("train_synthetic", r.get("synthetic")),
                 "best epoch": r.get("best_epoch"), "seconds": r.get("seconds")} for r in records]
        content += "<h3>Runs</h3>" + _table_html(pd.DataFrame(rows))
    return ("details", "Details", content) if content else None


def _curves_section(run_dir: Path) -> Section:
    listed = [(run_dir / f["file"], f.get("caption", "")) for f in _manifest(run_dir).get("figures", [])]
    defaults = [(run_dir / name, caption) for name, caption in (
        ("roc.png", "ROC curves on the real test split (scores averaged over seeds)"),
        ("pr.png", "Precision-recall curves on the real test split"),
    ) if all(run_dir / name != path for path, _ in listed)]
    figures = [(path, caption) for path, caption in listed + defaults if path.exists()]
    return ("figures", "Figures", _figures(figures)) if figures else None


def _generators_section(run_dir: Path) -> Section:
    candidates = [run_dir] + sorted(p for p in (run_dir / "generators").rglob("*") if p.is_dir()) \
        if (run_dir / "generators").is_dir() else [run_dir]
    blocks = []
    for folder in candidates:
        samples = sorted((folder / "samples").glob("*.png")) if (folder / "samples").is_dir() else []
        losses = folder / "loss_curves.png"
        metrics = [r for r in read_jsonl(folder / "metrics.jsonl") if any("loss" in k for k in r)]
        if not samples and not losses.exists() and not metrics:
            continue
        name = folder.name if folder != run_dir else f"{run_dir.name} (this run)"
        figures = []
        if losses.exists():
            figures.append((losses, "training curves per step: losses, statistics and (when tracked) the fidelity "
                                    "score, FD to real rows in random-conv features"))
        if samples:
            figures.append((samples[-1], f"samples after training ({samples[-1].stem})"))
        block = f"<h3>{_escape(name)}</h3>" + _figures(figures)
        if metrics:
            last = metrics[-1]
            block += _table_html(pd.DataFrame([{k: _round(v) for k, v in last.items()}]), caption="last record")
        config = folder / "config.json"
        if config.exists() and folder != run_dir:
            block += f"<pre>{_escape(config.read_text(encoding='utf-8').strip())}</pre>"
        blocks.append(block)
    return ("generators", "Generators", "\n".join(blocks)) if blocks else None


def _audit_section(run_dir: Path) -> Section:
    blocks = []
    for path in sorted(run_dir.rglob("audit.json")):
        result = read_json(path, "delete it and audit the generator again")
        folder = path.parent
        label = str(folder.relative_to(run_dir)) if folder != run_dir else "this run"
        block = f"<h3>{_escape(label)}</h3>"
        block += (f"<p class=\"note\">{result.get('n_synthetic')} synthetic vs {result.get('n_test')} real test "
                  f"images; real rows: {_escape(str(result.get('real_rows', '')))}; feature space: "
                  f"{_escape(str(result.get('feature_space', '')))}.</p>")
        block += _table_html(audit_table(result))
        skipped = (result.get("tstr") or {}).get("skipped")
        if skipped:
            block += f"<p class=\"note\">Train-on-synthetic skipped: {_escape(skipped)}.</p>"
        block += _figures([(folder / n, c) for n, c in (
            ("distances.png", "nearest-training-image distances: synthetic vs real test"),
            ("nearest_pairs.png", "closest synthetic / training pairs"),
        ) if (folder / n).exists()])
        blocks.append(block)
    return ("audit", "Synthetic-image audit", "\n".join(blocks)) if blocks else None


def _cam_section(run_dir: Path) -> Section:
    panels = sorted(set(run_dir.glob("cam*.png")) | set((run_dir / "cam").glob("*.png")))
    figures = [(p, f"class activation maps: {p.stem}") for p in panels]
    return ("cam", "Class activation maps", _figures(figures)) if figures else None


# Page order; a new artefact type is one more function here.
# The answer first (verdicts, the paper's table, figures), then the details, the data, and how the run was made.
SECTIONS: tuple[Callable[[Path], Section], ...] = (
    _verdict_section, _main_section, _curves_section, _results_section, _generators_section, _audit_section,
    _cam_section, _dataset_section, _command_section,
)


# ---- helpers -----------------------------------------------------------------------------------------------------
def _escape(text: str) -> str:
    """Escape element text (quotes stay readable; attribute values use ``html.escape`` with quotes)."""
    return html.escape(text, quote=False)


def image_data_uri(path: str | Path) -> str:
    """A PNG file as a ``data:image/png;base64,...`` URI."""
    data = Path(path).read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise CxrganError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _figures(figures: Iterable[tuple[Path, str]]) -> str:
    items = [f'<figure><img src="{image_data_uri(path)}" alt="{html.escape(caption, quote=True)}">'
             f"<figcaption>{_escape(caption)}</figcaption></figure>" for path, caption in figures]
    return f'<div class="figures">{"".join(items)}</div>' if items else ""


def _table_html(table: pd.DataFrame, caption: str = "") -> str:
    head = "".join(f"<th>{_escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in table.itertuples(index=False))
    cap = f"<caption>{_escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def _auc_cell(record: dict) -> str:
    metrics = record.get("metrics", {})
    auc = metrics.get("roc_auc", metrics.get("macro"))
    if not isinstance(auc, (int, float)):
        return ""
    low, high = metrics.get("roc_auc_ci_low"), metrics.get("roc_auc_ci_high")
    return f"{auc:.3f}" + (f" [{low:.3f}, {high:.3f}]" if isinstance(low, float) and isinstance(high, float) else "")


def _round(value):
    return round(value, 4) if isinstance(value, float) else value


def _read_table(stem: Path) -> pd.DataFrame | None:
    """``stem.csv`` (written beside every ``stem.md`` by ``write_tables``), else the Markdown table."""
    csv = stem.with_suffix(".csv")
    if csv.exists():
        try:
            return pd.read_csv(csv, dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise CxrganError(f"{csv}: not a readable CSV table ({exc})") from exc
    _, _, rows = _markdown_parts(stem.with_suffix(".md"))
    return pd.DataFrame(rows[1:], columns=rows[0]) if rows else None


def _markdown_parts(path: Path) -> tuple[str, str, list[list[str]]]:
    """Title (``# ...``), the prose after the table, and the table rows of a file written by ``write_tables``."""
    if not path.exists():
        return "", "", []
    title, notes, rows = "", [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("# ") and not title:
            title = stripped[2:]
        elif stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                rows.append(cells)
        elif stripped:
            notes.append(stripped)
    return title, " ".join(notes), rows


def _imbalance_html(table: pd.DataFrame) -> str:
    lines = _imbalance(table)
    return "<p class=\"note\">Class balance: " + "; ".join(_escape(x) for x in lines) + "</p>" if lines else ""


def _imbalance(table: pd.DataFrame) -> list[str]:
    """"split: X 120 positive / 40 negative (positive fraction 75.0%)" for every split and label column X."""
    lines = []
    for column in [c for c in table.columns if c.endswith("+")]:
        name, negative = column[:-1], f"{column[:-1]}-"
        if negative not in table.columns or "split" not in table.columns:
            continue
        for _, row in table.iterrows():
            try:
                positives, negatives = int(row[column]), int(row[negative])
            except ValueError:
                continue
            total = positives + negatives
            fraction = f"{100 * positives / total:.1f}%" if total else "n/a"
            lines.append(f"{row['split']}: {name} {positives} positive / {negatives} negative "
                         f"(positive fraction {fraction})")
    return lines
