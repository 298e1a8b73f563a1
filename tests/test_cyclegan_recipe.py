"""Recipe cyclegan-complement end to end at toy sizes on real Kermany (+ NIH extra) images: rows, table, fidelity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from cxrgan.cli import main
from cxrgan.data import load_npz, save_npz
from cxrgan.io import read_jsonl
from _report_check import assert_report_renders


def test_cyclegan_complement_recipe_runs_every_row(kermany_small, nih_path, tmp_path, capsys):
    data = save_npz(kermany_small, tmp_path / "small.npz")
    nih = load_npz(nih_path).split("train")
    y = nih.labels[:, 0]
    extra = save_npz(nih.subset(np.sort(np.concatenate([np.flatnonzero(y == v)[:24] for v in (0, 1)]))), tmp_path / "nih.npz")
    assert main(["recipe", "cyclegan-complement", "--data", str(data), "--gan-extra-data", str(extra), "--seeds", "1",
                 "--epochs", "1", "--imbalance", "2:1", "--fidelity-images", "12", "--gan-steps", "4",
                 "--gan-width", "4", "--device", "cpu", "--out", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert "Malygina et al. table shape" in printed
    run_dir = next((tmp_path / "runs").iterdir())
    table = pd.read_csv(run_dir / "paper_table.csv")
    assert list(table["method"]) == ["none", "repeat", "cyclegan-complement", "cyclegan-complement-extra"]
    assert list(table.columns) == ["row", "method", "ROC AUC", "PR AUC", "Δ vs none", "verdict vs none", "Δ vs repeat",
                                   "verdict vs repeat", "-> pneumonia as pneumonia", "-> normal as normal",
                                   "cycle error"]
    # the CycleGAN rows are compared with the equal-steps control too; one seed cannot be tested and says so
    assert table["verdict vs repeat"].fillna("").tolist() == ["", "", "needs >= 2 seeds", "needs >= 2 seeds"]
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    assert list(zip(verdicts["method"], verdicts["vs"])) == [
        ("repeat", "none"), ("cyclegan-complement", "none"), ("cyclegan-complement-extra", "none"),
        ("cyclegan-complement", "repeat"), ("cyclegan-complement-extra", "repeat")]
    records = read_jsonl(run_dir / "results.jsonl")
    by_method = {r["method"]: r for r in records if "analysis" not in r}
    assert by_method["none"]["train_rows"] == 60 and by_method["none"]["train_synthetic"] == 0  # 40 normal : 20 pneumonia
    assert by_method["repeat"]["train_rows"] == 120 and by_method["repeat"]["train_synthetic"] == 0
    for method in ("cyclegan-complement", "cyclegan-complement-extra"):
        assert by_method[method]["train_rows"] == 120 and by_method[method]["train_synthetic"] == 60
        assert by_method[method]["train_positives"] == [60]  # 20 real + 40 translated normals
        assert (run_dir / f"figure1-{method}.png").stat().st_size > 5_000
    fidelity = [r for r in records if r.get("analysis") == "fidelity"]  # analysis cells of the engine
    assert {r["method"] for r in fidelity} == {"cyclegan-complement", "cyclegan-complement-extra"}
    for record in fidelity:
        assert all(0.0 <= record[k] <= 1.0 for k in ("to_0", "to_1", "real_0", "real_1", "cycle_error"))
    # two CycleGANs: one on the training split, one with the 48 extra NIH images in its domains
    gans = sorted((run_dir / "generators" / "gan").iterdir())
    assert len(gans) == 2
    assert [read_jsonl(g / "metrics.jsonl")[-1]["step"] for g in gans] == [4, 4]  # --gan-steps is steps, end to end
    assert sorted(json.loads((g / "status.json").read_text())["n_train"][0] for g in gans) == [40, 64]
    for name in ("roc.png", "pr.png", "report.html", "fidelity.json"):
        assert (run_dir / name).exists(), name
    dom = assert_report_renders(run_dir, tmp_path, figures=4)  # ROC, PR and two Figure-1 panels
    assert "Malygina et al. table shape" in dom
