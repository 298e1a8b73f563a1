"""Recipes cgan-regimes and dcgan-rare-findings end to end at toy sizes on real NIH images (npz and CheXpert CSV)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgan.classify import TrainConfig
from cxrgan.cli import main
from cxrgan.data import CXRDataset, load_npz, save_npz
from cxrgan.generators import GeneratorSettings
from cxrgan.io import read_jsonl
from cxrgan.recipes.cgan_regimes import CganRegimesConfig, load_findings, run_cgan_regimes, with_policy
from cxrgan.recipes.dcgan_rare_findings import DcganRareConfig, run_dcgan_rare_findings

TOY_TRAIN = TrainConfig(model="small-cnn", epochs=1, batch_size=32, progress=False, device="cpu")
TOY_GAN = GeneratorSettings(steps=2, width=8)
RARE = ("Fibrosis", "Nodule", "Cardiomegaly")  # the rarest NIH findings with >= 16 train and >= 2 test positives


@pytest.fixture(scope="module")
def small_nih(nih_path, tmp_path_factory):
    """A compact file of real NIH rows: every train row with a rare finding plus 80 others, 40 val, all test."""
    nih = load_npz(nih_path, target="findings")
    train = nih.split("train")
    columns = [train.label_names.index(f) for f in RARE]
    rare = (train.labels[:, columns] == 1).any(axis=1)
    keep = np.sort(np.concatenate([np.flatnonzero(rare), np.flatnonzero(~rare)[:80]]))
    parts = [train.subset(keep), nih.split("val").subset(np.arange(40)), nih.split("test")]
    path = tmp_path_factory.mktemp("nih") / "nih_small.npz"
    save_npz(CXRDataset.concat(parts), path)
    return path


def test_cgan_regimes_tables_and_resume(small_nih, tmp_path, capsys):
    config = CganRegimesConfig(data=str(small_nih), regimes=(0.25, 1.0), seeds=2, findings=RARE, train=TOY_TRAIN,
                               generators=TOY_GAN)
    run_dir = run_cgan_regimes(config, tmp_path)
    records = read_jsonl(run_dir / "results.jsonl")
    assert {(r["regime"], r["method"], r["seed"]) for r in records} == {
        (f, m, s) for f in (0.25, 1.0) for m in ("none", "flip", "gan") for s in (0, 1)}
    for r in records:
        assert set(RARE) <= set(r["auc"]) and "macro" in r["auc"]
        assert (r["synthetic"] > 0) == (r["method"] == "gan")
    full = [r for r in records if r["regime"] == 1.0 and r["method"] == "gan"]
    for r in full:  # every augmented finding reaches 15 % of the combined set
        table = {t["finding"]: t for t in r["finding_table"]}
        assert all(table[f]["combined %"] >= 15 for f in RARE)
        assert table["all rows"]["combined positives"] == r["train_rows"]
    quarter = [r for r in records if r["regime"] == 0.25 and r["method"] == "none"][0]
    assert quarter["train_rows"] < full[0]["train_rows"] - full[0]["synthetic"]
    table1 = pd.read_csv(run_dir / "table1_generated.csv")
    table2 = pd.read_csv(run_dir / "table2_auc.csv")
    assert list(table1.columns) == ["regime", "real rows", *RARE, "augmented rows"]
    assert len(table2) == 6 and set(RARE) <= set(table2.columns)
    assert table2["seeds"].eq(2).all() and table2["Fibrosis"].str.contains(r"\[").all()  # mean [CI] over two seeds
    # flip and gan rows are paired with the none run of the same seed and regime
    assert table2["vs none"].isna().eq(table2["method"].eq("none")).all()
    gan_full = table2[(table2["regime"] == "100%") & (table2["method"] == "gan")].iloc[0]
    by_seed = {(r["method"], r["seed"]): np.nanmean([r["auc"][f] for f in RARE]) for r in records if r["regime"] == 1.0}
    expected = np.mean([by_seed["gan", s] - by_seed["none", s] for s in (0, 1)])
    assert gan_full["vs none"].startswith(f"{expected:.3f} [")
    assert "Test positives of" in (run_dir / "summary.md").read_text()
    out = capsys.readouterr().out
    assert "Table 2" in out and "Fibrosis" in out
    # resuming a finished run trains nothing and keeps the records
    run_cgan_regimes(config, tmp_path, resume_dir=run_dir)
    assert len(read_jsonl(run_dir / "results.jsonl")) == len(records)


def test_dcgan_rare_findings_on_nih_policies_coincide(small_nih, tmp_path):
    config = DcganRareConfig(data=str(small_nih), seeds=2, findings=("Fibrosis", "Nodule"), ratio=0.3,
                             train=TOY_TRAIN, generators=TOY_GAN)
    run_dir = run_dcgan_rare_findings(config, tmp_path)
    records = read_jsonl(run_dir / "results.jsonl")
    assert sorted((r["policy"], r["method"]) for r in records) == [("zeros", "baseline")] * 2 + [("zeros", "dcgan-rare")] * 2
    policies = pd.read_csv(run_dir / "table2_policies.csv")
    assert list(policies.columns) == ["finding", "U-Ones", "U-Zeros", "U-Ignore"] and len(policies) == 15
    assert policies["U-Ones"].equals(policies["U-Zeros"]) and policies["U-Zeros"].equals(policies["U-Ignore"])
    assert "no uncertain (-1) labels" in (run_dir / "summary.md").read_text()
    final = pd.read_csv(run_dir / "table3_gan.csv")
    assert list(final["finding"]) == ["Fibrosis", "Nodule"]
    assert list(final.columns) == ["finding", "generated", "baseline", "DCGAN-augmented", "difference", "paired t p"]
    assert "Test positives of" in (run_dir / "summary.md").read_text()
    gan = [r for r in records if r["method"] == "dcgan-rare"][0]
    assert gan["synthetic"] == sum(t["generated for it"] for t in gan["finding_table"][:-1]) > 0


def write_chexpert_layout(root, nih_path, n_rows: int = 120):
    """A CheXpert-layout folder (train.csv / valid.csv + JPEGs) of real NIH images and their findings, with
    uncertain (-1) labels in train.csv: negatives of Pleural Effusion and Lung Opacity in every third row."""
    nih = load_npz(nih_path, target="findings")
    mapping = {"Effusion": "Pleural Effusion", "Infiltration": "Lung Opacity", "Atelectasis": "Atelectasis",
               "Cardiomegaly": "Cardiomegaly", "Pneumothorax": "Pneumothorax", "Consolidation": "Consolidation"}
    from cxrgan.data import CHEXPERT_FINDINGS

    columns = [nih.label_names.index(n) for n in mapping]
    has = (nih.labels[:, columns] == 1).any(axis=1)
    rows = np.sort(np.concatenate([np.flatnonzero(has)[:80], np.flatnonzero(~has)[: n_rows - 80]]))
    records = {"train": [], "valid": []}
    for i, row in enumerate(rows):
        role = "valid" if i % 4 == 0 else "train"
        relative = f"CheXpert-v1.0-small/{role}/patient{i:05d}/study1/view1_frontal.jpg"
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(nih.images[row]).save(root / relative, quality=95)
        labels = {name: "0.0" for name in CHEXPERT_FINDINGS}
        for nih_name, name in mapping.items():
            if nih.labels[row, nih.label_names.index(nih_name)] == 1:
                labels[name] = "1.0"
            elif role == "train" and i % 3 == 0 and name in ("Pleural Effusion", "Lung Opacity"):
                labels[name] = "-1.0"
        labels["No Finding"] = "0.0" if "1.0" in labels.values() else "1.0"
        records[role].append({"Path": relative, "Sex": "Male", "Age": 50, "Frontal/Lateral": "Frontal",
                              "AP/PA": "PA", **labels})
    folder = root / "CheXpert-v1.0-small"
    for role, table in records.items():
        pd.DataFrame(table).to_csv(folder / f"{role}.csv", index=False)
    return folder


def test_dcgan_rare_findings_on_chexpert_csv_policies_differ(nih_path, tmp_path):
    folder = write_chexpert_layout(tmp_path / "src", nih_path)
    ones, raw = load_findings(folder / "train.csv", "ones")
    zeros, ignore = with_policy(ones, raw, "zeros"), with_policy(ones, raw, "ignore")
    np.testing.assert_array_equal(load_findings(folder / "train.csv", "zeros")[0].labels, zeros.labels)
    uncertain = raw == -1
    assert uncertain.sum() > 0
    assert (ones.labels[uncertain] == 1).all() and (zeros.labels[uncertain] == 0).all()
    assert np.isnan(ignore.labels[uncertain]).all() and not np.isnan(ignore.labels[~uncertain]).any()
    np.testing.assert_array_equal(ones.labels[~uncertain], zeros.labels[~uncertain])
    config = DcganRareConfig(data=str(folder), seeds=1, findings=("Lung Opacity",), ratio=0.5, train=TOY_TRAIN,
                             generators=TOY_GAN)
    run_dir = run_dcgan_rare_findings(config, tmp_path / "runs")
    records = read_jsonl(run_dir / "results.jsonl")
    assert sorted((r["policy"], r["method"]) for r in records) == [
        ("ignore", "baseline"), ("ones", "baseline"), ("zeros", "baseline"), ("zeros", "dcgan-rare")]
    summary = (run_dir / "summary.md").read_text()
    assert "U-Ones maps uncertain labels to 1" in summary and "no uncertain" not in summary


def test_cli_runs_dcgan_rare_findings(small_nih, tmp_path, capsys):
    code = main(["recipe", "dcgan-rare-findings", "--data", str(small_nih), "--seeds", "1", "--epochs", "1",
                 "--findings", "Fibrosis", "--ratio", "0.2", "--gan-steps", "2", "--gan-width", "8",
                 "--out", str(tmp_path), "--device", "cpu"])
    assert code == 0
    run_dir = next(tmp_path.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["kind"] == "dcgan-rare-findings" and config["config"]["train"]["model"] == "resnet18"
    assert (run_dir / "command.txt").read_text().startswith("cxrgan")  # sys.argv as typed (pytest's here)
    assert main(["recipe", "cgan-regimes", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path)]) == 2
    assert "missing.npz" in capsys.readouterr().err


def test_dry_runs_plan_without_training(small_nih, tmp_path, capsys):
    assert main(["recipe", "cgan-regimes", "--data", str(small_nih), "--findings", ",".join(RARE), "--dry-run",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Fibrosis generated" in out and "| 100%" in out and "| 1%" in out
    assert main(["recipe", "dcgan-rare-findings", "--data", str(small_nih), "--findings", "Fibrosis", "--dry-run",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| Fibrosis" in out and "uncertain" in out
    assert not any(tmp_path.iterdir()), "a dry run must not create run directories"
