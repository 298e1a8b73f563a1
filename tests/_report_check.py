"""Render a run's report.html in headless Chromium and check that it is a real page: text, tables and figures drawn."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from cxrgan.report.browser import dump_dom, find_chromium, screenshot


def assert_report_renders(run_dir: Path, tmp_path: Path, figures: int = 1) -> str:
    """The report opens with the verdicts, renders non-blank in Chromium and draws at least ``figures`` images."""
    find_chromium()  # a missing browser raises: the calling test fails, it never skips
    report = run_dir / "report.html"
    page_text = report.read_text(encoding="utf-8")
    assert page_text.index('id="verdicts"') < page_text.index('id="command"'), "verdicts must come before the config"
    shot = screenshot(report, tmp_path / f"{run_dir.name}.png", width=1200, height=3000)
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16).mean(axis=2)
    assert pixels[:1500].std() > 20 and (pixels[:1500] < 235).mean() > 0.02  # text and tables on the first screen
    dom = dump_dom(report)
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) >= figures
    assert dom.count("<table") >= 2
    return dom
