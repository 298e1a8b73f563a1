"""The HTML report of a small real ``cxrgan compare`` run (plus a GAN run, its audit and a CAM panel) renders in
headless Chromium: screenshots are not blank, embedded figures are drawn, and the page needs no network.

Chromium is required: without it the test fails (``.ci/run`` installs the Debian ``chromium`` package)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrgan.cli import main
from cxrgan.data import save_npz
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import AuditConfig
from cxrgan.evaluate.generator_audit import audit_generators
from cxrgan.evaluate.cam import cam_for_run
from cxrgan.generators.dcgan import CDCGANConfig
from cxrgan.generators.runs import load_run, train_gan
from cxrgan.report.browser import dump_dom, find_chromium, screenshot
from cxrgan.report.html import write_report
from cxrgan.runs import mark_run_dir

MATPLOTLIB_ORANGE = np.array([255, 127, 14])  # colour of the second curve in every matplotlib figure


@pytest.fixture(scope="module")
def run_dir(kermany_small, tmp_path_factory):
    """A finished compare run (none vs augment, 1 seed) with a GAN run, its audit and a CAM panel added."""
    root = tmp_path_factory.mktemp("report")
    data = str(save_npz(kermany_small, root / "kermany_small.npz"))
    assert main(["compare", data, "--methods", "none,augment", "--seeds", "1", "--model", "small-cnn", "--epochs", "1",
                 "--batch-size", "16", "--lr", "1e-3", "--device", "cpu", "--no-progress", "--out",
                 str(root / "runs")]) == 0
    run = next((root / "runs").iterdir())
    gan_run = train_gan("cdcgan", data, run / "generators", CDCGANConfig(ngf=8, ndf=8, z_dim=16, embed_dim=4,
                        batch_size=32, steps=10, grid_every=10, quality_every=5, progress=False))
    audited = audit_generators(run, data, AuditConfig(feature_epochs=1, tstr=False, kid_subsets=10), n=40)
    assert list(audited) == [f"generators/{gan_run.name}"]
    synthetic, _ = load_run(gan_run).sample(2, labels=np.array([1.0]), generator=torch.Generator().manual_seed(0))
    cam_for_run(run, {"real": kermany_small.split("test").images[:2], "synthetic": synthetic}, run / "cam.png",
                target_name="pneumonia")
    return run


def test_report_is_self_contained_and_complete(run_dir):
    page = write_report(run_dir).read_text(encoding="utf-8")
    headings = ("Verdicts: does each method beat its baseline?", "Results", "Figures", "Details", "Generators",
                "Synthetic-image audit", "Class activation maps", "Dataset", "Command and config")
    for heading in headings:
        assert f">{heading}</h2>" in page, heading
    # the answer first: verdicts, then results and figures; the command and the full config last
    positions = [page.index(f">{heading}</h2>") for heading in headings]
    assert positions == sorted(positions)
    assert "<th>verdict</th>" in page and "<th>p (Holm)</th>" in page and "<th>ROC AUC</th>" in page
    assert "two-sample classifier AUC" in page and "real train vs test (reference)" in page
    assert '"methods": [' in page and "small-cnn" in page  # the resolved config
    assert "All splits of the data file" in page and "positive fraction" in page
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources), sources[:3]
    assert len([s for s in sources if s.startswith("data:")]) >= 7  # roc, pr, loss, samples, 2 audit, cam
    assert "<script" not in page and "<link" not in page


def test_audit_generators_keeps_audits_newer_than_their_checkpoint(run_dir, kermany_small, tmp_path):
    (audit,) = (run_dir / "generators").rglob("audit/audit.json")
    written = audit.stat().st_mtime_ns
    data = str(save_npz(kermany_small, tmp_path / "kermany_small.npz"))
    config = AuditConfig(feature_epochs=1, tstr=False, kid_subsets=10)
    again = audit_generators(run_dir, data, config, n=40)  # nothing new: no feature model, no sampling
    assert audit.stat().st_mtime_ns == written
    assert list(again.values()) == [json.loads(audit.read_text(encoding="utf-8"))]
    checkpoint = audit.parent.parent / "checkpoint.pt"
    os.utime(checkpoint, ns=(written + 10**9, written + 10**9))  # the generator trained on after its audit
    audit_generators(run_dir, data, config, n=40)
    assert audit.stat().st_mtime_ns > written


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    chromium = find_chromium()  # a missing browser raises: this test fails, it never skips
    report = write_report(run_dir)
    whole_page = screenshot(report, tmp_path / "report_full.png", width=1200, height=9000)
    with Image.open(whole_page) as image:
        page = np.asarray(image.convert("RGB"), dtype=np.int16)
        first_screen = tmp_path / "report_1200x2000.png"  # what a 1200 x 2000 window shows
        image.crop((0, 0, 1200, 2000)).save(first_screen)
    print(f"\nChromium {chromium}; screenshots: {first_screen} {whole_page}")
    keep = os.environ.get("CXRGAN_TEST_ARTIFACTS")  # e.g. CI uploads this folder
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        for shot in (first_screen, whole_page):
            shutil.copy(shot, Path(keep) / shot.name)

    assert page.shape == (9000, 1200, 3)
    top = page[:2000].mean(axis=2)
    assert top.std() > 20  # not a blank page
    assert (top < 235).mean() > 0.02  # text, tables and figures cover part of the first screen
    orange = (np.abs(page - MATPLOTLIB_ORANGE).max(axis=2) < 30).sum()
    assert orange > 300  # ROC / PR / loss curves were decoded and drawn
    warm = ((page[..., 0] - page[..., 2] > 60) & (page[..., 0] > 100)).sum()
    assert warm > 40_000  # the Grad-CAM heat maps were drawn (curves and histograms give about 10k warm pixels)
    used_rows = np.flatnonzero((page.mean(axis=2) < 235).any(axis=1))
    assert used_rows.max() > 4000  # sections far down the page rendered too

    dom = dump_dom(report)
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) >= 7
    assert dom.count("<table") >= 5  # dataset (2), results, runs, audit


def test_report_errors(tmp_path):
    with pytest.raises(CxrganError, match="no such run directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(CxrganError, match="not a cxrgan run directory"):
        write_report(tmp_path)
    mark_run_dir(tmp_path)
    with pytest.raises(CxrganError, match="holds nothing to report"):
        write_report(tmp_path)
    (tmp_path / "roc.png").write_bytes(b"GIF89a")
    with pytest.raises(CxrganError, match="roc.png: not a PNG file"):
        write_report(tmp_path)
    (tmp_path / "roc.png").unlink()
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(CxrganError, match="config.json: not valid JSON"):
        write_report(tmp_path)
