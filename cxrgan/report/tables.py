"""Plain-text, Markdown and CSV renderings of result tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cxrgan.io import write_text


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-style Markdown table (no extra dependency such as tabulate)."""
    columns = [str(c) for c in table.columns]
    rows = [[str(v) for v in row] for row in table.itertuples(index=False)]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def write_tables(table: pd.DataFrame, stem: str | Path, title: str = "", notes: str = "") -> None:
    """Write ``stem.md`` (title, table, notes) and ``stem.csv`` atomically."""
    stem = Path(stem)
    body = (f"# {title}\n\n" if title else "") + to_markdown(table) + ("\n\n" + notes if notes else "") + "\n"
    write_text(stem.with_suffix(".md"), body)
    write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
