"""End-to-end ``cxrgan compare`` on a small real Kermany file: table, files, reproducibility, resume, errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from cxrgan import __version__
from cxrgan.cli import main
from cxrgan.data import save_npz
from cxrgan.io import read_jsonl
from cxrgan.provenance import cpu_model, git_commit


@pytest.fixture(scope="module")
def small_file(kermany_small, tmp_path_factory):
    return str(save_npz(kermany_small, tmp_path_factory.mktemp("data") / "kermany_small.npz"))


def _compare(data, out, *extra):
    return main(["compare", data, "--methods", "none,class-weights,oversample", "--seeds", "2", "--model", "small-cnn",
                 "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--device", "cpu", "--no-progress",
                 "--out", str(out), *extra])


def _cells_run(printed: str) -> int:
    return len(re.findall(r"^\[\d+/\d+\] .* \.\.\.$", printed, flags=re.M))


def test_compare_runs_prints_table_and_is_reproducible(small_file, tmp_path, capsys):
    assert _compare(small_file, tmp_path / "a") == 0
    printed = capsys.readouterr().out
    assert "| method" in printed and "verdict" in printed and "class-weights" in printed
    assert "[6/6] oversample seed 1:" in printed and "ETA" in printed  # one progress line per cell
    run_dir = next((tmp_path / "a").iterdir())
    assert run_dir.name.startswith("00000-compare")
    records = read_jsonl(run_dir / "results.jsonl")
    assert sorted((r["method"], r["seed"]) for r in records) == [
        (m, s) for m in ("class-weights", "none", "oversample") for s in (0, 1)]
    for name in ("config.json", "verdicts.md", "results.md", "results.csv", "summary.json", "roc.png", "pr.png",
                 "train_split.md", "labels.npz", "tables.json", "report.html"):
        assert (run_dir / name).stat().st_size > 0, name
    assert not list((run_dir / "checkpoints").glob("*.pt"))  # transient checkpoints are removed when a run ends
    oversampled = next(r for r in records if r["method"] == "oversample")
    assert oversampled["train_positives"][0] * 2 == oversampled["train_rows"]  # balanced 1:1
    weighted = next(r for r in records if r["method"] == "class-weights")
    assert weighted["class_weights"] is not None and weighted["train_rows"] == 160

    # Same seed and config -> identical metrics on CPU.
    assert _compare(small_file, tmp_path / "b") == 0
    again = read_jsonl(next((tmp_path / "b").iterdir()) / "results.jsonl")
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    assert [r["metrics"] for r in sorted(records, key=key)] == [r["metrics"] for r in sorted(again, key=key)]


def test_resume_finishes_only_missing_runs(small_file, tmp_path, capsys):
    assert _compare(small_file, tmp_path) == 0
    run_dir = next(tmp_path.iterdir())
    for record in read_jsonl(run_dir / "results.jsonl")[4:]:  # as if killed during the 5th run
        (run_dir / "records" / f"{record['cell']}.json").unlink()
    capsys.readouterr()
    assert _compare(small_file, tmp_path, "--resume", str(run_dir)) == 0
    assert _cells_run(capsys.readouterr().out) == 2  # only the two missing (method, seed) pairs ran
    assert len(read_jsonl(run_dir / "results.jsonl")) == 6
    # each start and resume records the code and machine behind it
    started, resumed = read_jsonl(run_dir / "invocations.jsonl")
    assert resumed["command"].endswith(f"--resume {run_dir}") and started["torch"] == torch.__version__
    assert started["commit"] == git_commit() and started["cpu"] == cpu_model() and started["cxrgan"] == __version__
    # A different config cannot resume this run; nor can one that drops a method.
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), "--lr", "0.5") == 2
    assert "other settings (train.lr: 0.001 -> 0.5)" in capsys.readouterr().err
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), "--methods", "none,oversample") == 2
    assert "methods: ['none', 'class-weights', 'oversample'] -> ['none', 'oversample']" in capsys.readouterr().err
    # Cosmetic settings may change on resume.
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), "--device", "auto") == 0
    assert _cells_run(capsys.readouterr().out) == 0
    # Adding a method (row) trains only its runs and rewrites the config with it.
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), "--methods", "none,class-weights,oversample,repeat") == 0
    assert _cells_run(capsys.readouterr().out) == 2
    assert sorted(r["method"] for r in read_jsonl(run_dir / "results.jsonl")).count("repeat") == 2
    assert json.loads((run_dir / "config.json").read_text())["config"]["methods"][-1] == "repeat"
    # More seeds extend a finished run: only the new seed's cells train, and the verdicts pair all three seeds.
    grown = ("--methods", "none,class-weights,oversample,repeat", "--seeds", "3")
    # Its dry run checks the run as --resume does and times only the missing cells.
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), *grown, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "12 cells, 8 done, 4 to run:" in out and out.count("(done)") == 8 and "for the cells to run" in out
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), *grown, "--lr", "0.5", "--dry-run") == 2
    assert "other settings (train.lr: 0.001 -> 0.5)" in capsys.readouterr().err
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), *grown) == 0
    assert _cells_run(capsys.readouterr().out) == 4
    assert sorted({r["seed"] for r in read_jsonl(run_dir / "results.jsonl")}) == [0, 1, 2]
    assert set(pd.read_csv(run_dir / "verdicts.csv")["seeds"]) == {3}
    # Fewer seeds would drop finished cells: refused, naming the change.
    assert _compare(small_file, tmp_path, "--resume", str(run_dir), "--methods", grown[1], "--seeds", "2") == 2
    assert "seeds: 3 -> 2" in capsys.readouterr().err


def test_dry_run_and_bad_input(small_file, tmp_path, capsys):
    assert _compare(small_file, tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert json.loads(out[: out.index("\n\n")])["methods"] == ["none", "class-weights", "oversample"]
    assert "6 cells:" in out and "estimated wall time:" in out  # from a measured probe
    assert not list(tmp_path.iterdir())  # nothing written
    assert main(["compare", small_file, "--methods", "none,nonsense", "--out", str(tmp_path), "--dry-run"]) == 2
    assert "unknown method(s) ['nonsense']" in capsys.readouterr().err
    assert main(["compare", small_file, "--methods", "oversample", "--out", str(tmp_path)]) == 2
    assert "baseline 'none'" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    assert "missing.npz: no such file" in capsys.readouterr().err


def test_imbalance_induction_flag(small_file, tmp_path, capsys):
    assert main(["compare", small_file, "--imbalance", "3:1", "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train 52 rows" in out  # 39 normals : 13 pneumonia, the largest exact 3:1 set a 40:120 split allows


def test_kill_9_mid_cell_then_resume_gives_identical_results(small_file, tmp_path):
    """A real process killed with SIGKILL inside a cell; --resume finishes it with exactly the uninterrupted scores."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import numpy as np

    flags = ["--methods", "none,oversample", "--seeds", "1", "--model", "small-cnn", "--epochs", "4",
             "--batch-size", "16", "--lr", "1e-3", "--device", "cpu", "--no-progress", "--checkpoint-epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "cxrgan", "compare", small_file, *flags, "--out",
                                str(tmp_path / "killed")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    results = None
    while time.time() < deadline and process.poll() is None:
        runs = list((tmp_path / "killed").glob("*/results.jsonl"))
        # kill once a cell has finished and the next one has written its first epoch checkpoint
        if runs and runs[0].read_text().count("\n") >= 1 and list(runs[0].parent.glob("checkpoints/*.pt")):
            results = runs[0]
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert results is not None, process.stderr.read().decode()
    run_dir = results.parent
    assert len(read_jsonl(results)) < 2
    assert main(["compare", small_file, *flags, "--out", str(tmp_path / "killed"), "--resume", str(run_dir)]) == 0
    assert main(["compare", small_file, *flags, "--out", str(tmp_path / "whole")]) == 0
    whole = next((tmp_path / "whole").iterdir())
    key = lambda r: (r["method"], r["seed"])  # noqa: E731
    resumed, reference = sorted(read_jsonl(results), key=key), sorted(read_jsonl(whole / "results.jsonl"), key=key)
    assert [key(r) for r in resumed] == [key(r) for r in reference]
    assert [r["metrics"] for r in resumed] == [r["metrics"] for r in reference]
    for record in reference:
        with np.load(whole / "scores" / f"{record['cell']}.npz") as a, np.load(run_dir / "scores" / f"{record['cell']}.npz") as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files)
    assert not list(run_dir.rglob("*.tmp")) and not list((run_dir / "checkpoints").glob("*.pt"))


@pytest.fixture(scope="module")
def nih_site(data_dir, tmp_path_factory):
    """60 real adult NIH images (30 normal, 30 pneumonia) with view, age and sex: a small external site."""
    import numpy as np

    from cxrgan.data import load_npz

    site = load_npz(data_dir / "nih_pneumonia" / "nih_pneumonia_64.npz")
    y = site.labels[:, 0]
    rows = np.sort(np.concatenate([np.flatnonzero(y == 0)[:30], np.flatnonzero(y == 1)[:30]]))
    return str(save_npz(site.subset(rows), tmp_path_factory.mktemp("site") / "nih_site.npz"))


def test_external_site_gets_auc_columns_verdicts_and_subgroups(small_file, nih_site, tmp_path, capsys):
    import pandas as pd

    assert _compare(small_file, tmp_path, "--external", nih_site) == 0
    run_dir = next(tmp_path.iterdir())
    results = pd.read_csv(run_dir / "results.csv")
    assert "ROC AUC @ nih_site" in results.columns and results["ROC AUC @ nih_site"].str.contains(r"\[").all()
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    assert sorted(set(verdicts["site"])) == ["internal test", "nih_site"] and len(verdicts) == 4  # 2 methods x 2 sites
    subgroups = pd.read_csv(run_dir / "external_subgroups.csv")
    assert {"view AP", "view PA", "sex F", "sex M"} <= set(subgroups["subgroup"])
    assert any(g.startswith("age ") for g in subgroups["subgroup"])
    assert subgroups.loc[subgroups["subgroup"].str.startswith("view"), "n"].sum() == 60
    page = (run_dir / "report.html").read_text()
    assert "External sites by view, age band and sex" in page and "ROC AUC @ nih_site" in page
    assert "roc_auc@nih_site" in capsys.readouterr().out  # per-cell progress line


def test_report_rebuilds_every_table_from_stored_scores_without_training(small_file, tmp_path, capsys):
    assert _compare(small_file, tmp_path) == 0
    run_dir = next(tmp_path.iterdir())
    before = {name: (run_dir / name).read_text() for name in ("verdicts.md", "results.md", "summary.json")}
    for name in (*before, "report.html", "roc.png"):
        (run_dir / name).unlink()
    (run_dir / "models").rename(tmp_path / "models-away")  # nothing trained is needed
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    assert "| method" in capsys.readouterr().out
    assert {name: (run_dir / name).read_text() for name in before} == before
    assert (run_dir / "report.html").exists() and (run_dir / "roc.png").exists()
    # the test images' patients are stored with the labels, and the verdicts cluster by them
    assert "count as one cluster" in before["verdicts.md"]
    # a run directory from before patient ids were stored is tabulated with independent images, and says so
    with np.load(run_dir / "labels.npz") as archive:
        older = {key: archive[key] for key in archive.files if not key.startswith("patients_")}
        assert {"patients_val", "patients_test"} <= set(archive.files)
    np.savez(run_dir / "labels.npz", **older)
    assert main(["report", str(run_dir)]) == 0
    assert "count test images as independent" in (run_dir / "verdicts.md").read_text()


def test_multilabel_compare_tests_estimable_findings_and_shows_label_imbalance(nih_path, tmp_path):
    import pandas as pd

    assert main(["compare", str(nih_path), "--target", "findings", "--methods", "none,ml-ros,ml-rus", "--seeds", "2",
                 "--model", "small-cnn", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    run_dir = next(tmp_path.iterdir())
    verdicts = pd.read_csv(run_dir / "verdicts.csv", keep_default_na=False)
    # per method: 14 findings + the macro mean; only Effusion and Infiltration have >= 10 test positives
    assert len(verdicts) == 2 * 15
    tested = verdicts[verdicts["p (Holm)"] != ""]
    assert set(tested["finding"]) == {"Effusion", "Infiltration", "macro"}
    assert verdicts.loc[verdicts["finding"] == "Hernia", "Δ [95% CI]"].str.startswith("not estimable").all()
    results = pd.read_csv(run_dir / "results.csv")
    assert results["Hernia"].eq("not estimable (0 test +)").all() and results["Effusion"].str.contains(r"\[").all()
    imbalance = pd.read_csv(run_dir / "label_imbalance.csv", keep_default_na=False).set_index("label")
    assert list(imbalance.columns) == ["none", "ml-ros", "ml-rus"]
    assert int(imbalance.loc["rows", "ml-rus"]) < 463 == int(imbalance.loc["rows", "none"]) < int(imbalance.loc["rows", "ml-ros"])
