"""Recipe dcgan-alpha end to end at toy sizes on real Kermany images: every row, the paper table, TSTR, report."""

from __future__ import annotations

import pandas as pd
import pytest

from cxrgan.cli import main
from cxrgan.data import CXRDataset, save_npz
from cxrgan.evaluate.audit import train_on_synthetic
from cxrgan.evaluate.verdicts import Verdicts
from cxrgan.io import read_jsonl
from cxrgan.recipes import dcgan_alpha
from cxrgan.recipes.dcgan_alpha import paper_table
from _data_helpers import class_subset
from _report_check import assert_report_renders


@pytest.fixture
def kermany_2to1(kermany) -> CXRDataset:
    """The fewest real rows every generator of the recipe trains on: 32 normal : 16 pneumonia training rows (already
    2:1; a cDCGAN needs 16 per class, a one-class DCGAN or LDM 16 of its class), 8 + 8 validation rows and 10 + 10
    test rows (a seed-level verdict needs 10 test rows per class)."""
    return class_subset(kermany, {"train": (32, 16), "val": (8, 8), "test": (10, 10)})


def test_dcgan_alpha_recipe_runs_every_row(kermany_2to1, tmp_path, capsys, monkeypatch):
    data = save_npz(kermany_2to1, tmp_path / "small.npz")
    tstr_runs = []  # every TSTR classifier the finish step trains
    monkeypatch.setattr(dcgan_alpha, "train_on_synthetic",
                        lambda *args: tstr_runs.append(args[0].shape) or train_on_synthetic(*args))
    assert main(["recipe", "dcgan-alpha", "--data", str(data), "--seeds", "1", "--epochs", "1", "--imbalance", "2:1",
                 "--tstr-images", "8", "--gan-steps", "3", "--gan-width", "8", "--device", "cpu",
                 "--out", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert "Sun & Li table shape" in printed
    run_dir = next((tmp_path / "runs").iterdir())
    table = pd.read_csv(run_dir / "paper_table.csv")
    assert list(table["method"]) == ["none", "class-weights", "undersample", "oversample", "smote", "focal",
                                     "ldam-drw", "logit-adjust", "crt", "dcgan", "cdcgan-a0.25", "cdcgan-a0.5",
                                     "cdcgan-a0.75", "ldm", "cldm-a0.5", "synth-pretrain"]
    assert list(table.columns) == ["method", "precision", "recall (sens.)", "specificity", "F1", "ROC AUC",
                                   "Δ ROC AUC vs baseline", "verdict", "Δ vs oversample", "verdict vs oversample",
                                   "TSTR AUC"]
    # one seed: no seed-level test, and the table says why instead of printing a p-value
    assert set(table["verdict"].dropna()) == {"needs >= 2 seeds"}
    # every row that adds generated images is also tested against count-matched oversampling, in the same Holm
    # family (synth-pretrain adds none: it pretrains on them)
    generative = ["dcgan", "cdcgan-a0.25", "cdcgan-a0.5", "cdcgan-a0.75", "ldm", "cldm-a0.5"]
    assert table.loc[table["verdict vs oversample"].notna(), "method"].tolist() == generative
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    assert verdicts.loc[verdicts["vs"] == "oversample", "method"].tolist() == generative
    assert len(verdicts) == 15 + len(generative)
    tstr = {m: v for m, v in zip(table["method"], table["TSTR AUC"]) if not pd.isna(v)}
    assert set(tstr) == {"none", "dcgan", "cdcgan-a0.25", "cdcgan-a0.5", "cdcgan-a0.75", "ldm", "cldm-a0.5",
                         "synth-pretrain"}
    assert all(0.0 <= v <= 1.0 for v in tstr.values())
    # TSTR and the audits ran as analysis cells of the engine: recorded, resumable, in the progress lines
    records = read_jsonl(run_dir / "results.jsonl")
    analyses = [r for r in records if "analysis" in r]
    assert sorted(r["analysis"] for r in analyses) == ["audit"] * 6 + ["tstr"] * 5
    # each audit compares a generator's samples with exactly the rows it trained on: the 2:1 subset's 16 pneumonias
    # for the minority DCGAN and LDM, its 32 normals for their other-class twins, all 48 rows for the cDCGAN, cLDM
    audits = [r for r in analyses if r["analysis"] == "audit"]
    assert all(r["reference_rows"] == r["training rows"] for r in audits)
    assert sorted(r["reference_rows"] for r in audits) == [16, 16, 32, 32, 48, 48]
    assert "[17/27] tstr generator real" in printed
    # one TSTR per generator: the alphas share the cDCGAN's, cldm-a0.5 and synth-pretrain the cLDM's
    assert len(tstr_runs) == 5  # real reference, dcgan, cdcgan, ldm, cldm
    assert tstr["cdcgan-a0.25"] == tstr["cdcgan-a0.5"] == tstr["cdcgan-a0.75"]
    assert tstr["cldm-a0.5"] == tstr["synth-pretrain"]
    # the three alphas shared one trained cDCGAN, cldm-a0.5 and synth-pretrain one cLDM; the TSTR sets of the
    # one-class rows added a DCGAN and an LDM of the other class
    gan_dirs = sorted(p.name.split("-")[0] for p in (run_dir / "generators" / "gan").iterdir())
    assert gan_dirs == ["cdcgan", "cldm", "dcgan", "dcgan", "ldm", "ldm"]
    by_method = {r["method"]: r for r in records if "analysis" not in r}
    assert by_method["dcgan"]["train_synthetic"] > 0 and by_method["none"]["train_synthetic"] == 0
    assert by_method["ldm"]["train_synthetic"] > 0 and by_method["cldm-a0.5"]["train_synthetic"] > 0
    # synth-pretrain trains on the real rows only, after a pretraining stage on its synthetic set
    assert by_method["synth-pretrain"]["train_synthetic"] == 0
    assert [r.get("stage") for r in by_method["synth-pretrain"]["history"]] == ["pretrain", None]
    assert "Synthetic-image audit" in (run_dir / "report.html").read_text()
    audits = pd.read_csv(run_dir / "audit_summary.csv")
    assert len(audits) == 6 and set(audits["steps"]) == {"3/3"}  # six generators, each with the steps it trained
    assert (run_dir / "report.html").stat().st_size > 10_000
    dom = assert_report_renders(run_dir, tmp_path, figures=4)  # ROC, PR, generator losses and samples
    assert "Sun &amp; Li table shape" in dom


class _Records:
    """The part of a run's stored results that the paper table reads: finished cells by method."""

    def __init__(self, seeds_by_method: dict[str, int]):
        metrics = {"precision": 0.8, "recall": 0.9, "specificity": 0.5, "f1": 0.85, "roc_auc": 0.92}
        self.records = {m: [{"method": m, "seed": s, "metrics": metrics} for s in range(n)]
                        for m, n in seeds_by_method.items()}

    def where(self, method: str) -> list[dict]:
        return self.records.get(method, [])


def test_paper_table_says_how_many_seeds_each_row_has_when_they_differ():
    grown = paper_table(_Records({"none": 5, "ldm": 3}), ("none", "ldm"), {}, Verdicts([]), [])
    assert list(grown.columns[:2]) == ["method", "seeds"] and list(grown["seeds"]) == [5, 3]
    finished = paper_table(_Records({"none": 5, "ldm": 5}), ("none", "ldm"), {}, Verdicts([]), [])
    assert "seeds" not in finished.columns


def test_dry_run_counts_every_generator_its_rows_train(kermany_small, tmp_path, monkeypatch):
    """The estimate asks each row's balancer which generators it trains: an ldm row adds its LDM's minutes, cldm and
    synth-pretrain theirs (one shared cLDM), compare's fastgan row its FastGAN; the TSTR cell of a one-class row adds
    the other-class generator. Step times are stubbed: this checks the bookkeeping, not the probe."""
    from cxrgan.data import save_npz
    from cxrgan.engine.spec import RunSpec
    from cxrgan.recipes import compare
    from cxrgan.recipes.compare import Compare, CompareConfig
    from cxrgan.recipes.dcgan_alpha import CPU_CLASSIFIER, DcganAlpha, DcganAlphaConfig

    minutes = {"ldm": 24.0, "cldm": 25.0, "fastgan": 9.0, "dcgan": 18.0}
    for module in (compare, dcgan_alpha):
        monkeypatch.setattr(module, "generator_seconds", lambda spec, rows, device, **kwargs: 60 * minutes[spec.name])
        monkeypatch.setattr(module, "training_seconds", lambda *args, **kwargs: 0.0)
    monkeypatch.setattr(compare, "sample_seconds", lambda spec, rows, device: 0.0)
    spec = RunSpec(str(save_npz(kermany_small, tmp_path / "small.npz")), seeds=2, device="cpu")
    recipe = DcganAlpha(DcganAlphaConfig(CompareConfig(spec, methods=("none", "ldm", "cldm-a0.5", "synth-pretrain"),
                                                       imbalance=(2, 1), train=CPU_CLASSIFIER)))
    plan = recipe.plan()
    estimate = {name: seconds / 60 for name, seconds in recipe.estimate(plan).items()}
    rows = [estimate[c.name] for c in plan.cells if "analysis" not in dict(c.coords)]
    assert rows == [0, 24, 25, 0, 0, 24, 25, 0]  # a generator per seed; synth-pretrain's cLDM is cldm-a0.5's
    tstr = [estimate[c.name] for c in plan.cells if dict(c.coords).get("analysis") == "tstr"]
    assert tstr == [0, 24, 0]  # the real reference, the ldm row's (+ its other-class LDM) and the cLDM's
    compared = Compare(CompareConfig(spec, methods=("none", "fastgan"), imbalance=(2, 1), train=CPU_CLASSIFIER))
    plan = compared.plan()
    assert [compared.estimate(plan)[c.name] / 60 for c in plan.cells] == [0, 9, 0, 9]
