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
from cxrgan.engine.spec import RunSpec
from cxrgan.recipes.cgan_regimes import CganRegimes, CganRegimesConfig
from cxrgan.recipes.dcgan_rare_findings import DcganRareConfig, DcganRareFindings
from cxrgan.engine import run_recipe
from cxrgan.recipes.findings import load_findings, with_policy

from _report_check import assert_report_renders

TOY_TRAIN = TrainConfig(model="small-cnn", epochs=1, batch_size=32, progress=False, device="cpu", bf16=True)
TOY_GAN = GeneratorSettings(steps=2, width=8)
RARE = ("Fibrosis", "Nodule", "Cardiomegaly")  # rare NIH findings: 2, 4 and 2 test positives (not estimable)
COMMON = ("Effusion", "Infiltration")  # 10 and 11 test positives: the findings whose AUC the tests can test


@pytest.fixture(scope="module")
def small_nih(nih_path, tmp_path_factory):
    """A compact file of real NIH rows: every train row with a chosen finding plus 80 others, 40 val, all test."""
    nih = load_npz(nih_path, target="findings")
    train = nih.split("train")
    columns = [train.label_names.index(f) for f in (*RARE, *COMMON)]
    rare = (train.labels[:, columns] == 1).any(axis=1)
    keep = np.sort(np.concatenate([np.flatnonzero(rare), np.flatnonzero(~rare)[:80]]))
    parts = [train.subset(keep), nih.split("val").subset(np.arange(40)), nih.split("test")]
    path = tmp_path_factory.mktemp("nih") / "nih_small.npz"
    save_npz(CXRDataset.concat(parts), path)
    return path


def test_cgan_regimes_tables_verdicts_and_resume(small_nih, tmp_path, capsys):
    findings = ("Fibrosis", *COMMON)
    methods = ("none", "flip", "gan", "copies")
    config = CganRegimesConfig(run=RunSpec(str(small_nih), seeds=2), regimes=(0.25, 1.0), findings=findings,
                               train=TOY_TRAIN, methods=methods, generators=TOY_GAN)
    # the count-matched control and the cheap fixes by default
    assert CganRegimesConfig().methods == ("none", "flip", "gan", "copies", "ml-ros", "ldam-drw")
    run_dir = run_recipe(CganRegimes(config), tmp_path)
    records = read_jsonl(run_dir / "results.jsonl")
    assert {(r["regime"], r["method"], r["seed"]) for r in records} == {
        (f, m, s) for f in (0.25, 1.0) for m in methods for s in (0, 1)}
    for r in records:
        assert set(findings) <= set(r["auc"]) and "macro" in r["auc"]
        assert (r["synthetic"] > 0) == (r["method"] == "gan")
    full = [r for r in records if r["regime"] == 1.0 and r["method"] == "gan"]
    for r in full:  # every augmented finding reaches 15 % of the combined set
        table = {t["finding"]: t for t in r["finding_table"]}
        assert all(table[f]["combined %"] >= 15 for f in findings)
        assert table["all rows"]["combined positives"] == r["train_rows"]
    # the control adds as many real rows with the same label vectors as the GAN adds images, regime by regime
    copies = {(r["regime"], r["seed"]): r for r in records if r["method"] == "copies"}
    for r in (r for r in records if r["method"] == "gan"):
        assert copies[r["regime"], r["seed"]]["finding_table"] == r["finding_table"]
        assert copies[r["regime"], r["seed"]]["train_rows"] == r["train_rows"]
    # one GAN per seed, trained on the full training split and reused by both regimes (the paper's setting)
    assert len(list((run_dir / "generators" / "gan").iterdir())) == 2
    table1 = pd.read_csv(run_dir / "table1_generated.csv")
    table2 = pd.read_csv(run_dir / "table2_auc.csv")
    assert list(table1.columns) == ["regime", "real rows", *findings, "augmented rows"]
    assert len(table2) == 8 and table2["seeds"].eq(2).all()
    assert table2.columns[-4:].tolist() == ["mean augmented: Δ vs none", "verdict vs none",
                                            "mean augmented: Δ vs copies", "verdict vs copies"]
    assert table2.loc[table2["method"] == "gan", "verdict vs copies"].ne("").all()
    # Fibrosis has 2 test positives: its AUC is not estimable and is printed as such, never as a number
    assert table2["Fibrosis"].eq("not estimable (2 test +)").all()
    assert table2["Effusion"].str.contains(r"\[").all()  # mean [CI] over two seeds
    verdicts = pd.read_csv(run_dir / "verdicts.csv", keep_default_na=False)
    fibrosis = verdicts[verdicts["finding"] == "Fibrosis"]
    assert len(fibrosis) == 8 and fibrosis["verdict"].eq("not tested").all()
    tested = verdicts[verdicts["p (Holm)"] != ""]
    # per regime: flip, gan and copies against none and gan against copies, each on Effusion, Infiltration and the
    # mean of the two estimable findings: one Holm family of 24
    assert len(tested) == 24 and set(tested["finding"]) == {*COMMON, "mean of 2 estimable"}
    assert set(zip(tested["method"], tested["vs"])) == {("flip", "none"), ("gan", "none"), ("copies", "none"),
                                                        ("gan", "copies")}
    assert (tested["p (Holm)"].replace("<0.001", "0").astype(float) >= tested["p"].replace("<0.001", "0").astype(float)).all()
    assert "min. detectable Δ" in verdicts.columns
    out = capsys.readouterr().out
    assert "Table 2 shape" in out and "Effusion" in out and "[16/16]" in out
    assert "Table 2 shape" in assert_report_renders(run_dir, tmp_path, figures=0)
    # resuming a finished run trains nothing and keeps the records
    run_recipe(CganRegimes(config), tmp_path, resume_dir=run_dir)
    assert len(read_jsonl(run_dir / "results.jsonl")) == len(records)
    assert "0 to run" in capsys.readouterr().out


def test_cgan_regimes_gan_data_regime_trains_per_regime(small_nih, tmp_path):
    config = CganRegimesConfig(run=RunSpec(str(small_nih), seeds=1), regimes=(0.02, 0.5, 1.0), methods=("none", "gan"),
                               findings=RARE[:1], train=TOY_TRAIN, gan_data="regime",
                               generators=TOY_GAN)
    run_dir = run_recipe(CganRegimes(config), tmp_path)
    gans = {r["regime"]: r for r in read_jsonl(run_dir / "results.jsonl") if r["method"] == "gan"}
    assert "fewer than a GAN needs" in gans[0.02]["skipped"] and gans[0.02]["synthetic"] == 0
    assert len(list((run_dir / "generators" / "gan").iterdir())) == 2  # one GAN for the 50 % rows, one for all
    assert "each regime's own rows" in (run_dir / "table2_auc.md").read_text()
    assert "fewer than a GAN needs" in (run_dir / "table1_generated.csv").read_text()


def test_dcgan_rare_findings_on_nih_policies_coincide(small_nih, tmp_path):
    config = DcganRareConfig(run=RunSpec(str(small_nih), seeds=2), findings=("Fibrosis", "Effusion"), ratio=0.3,
                             train=TOY_TRAIN, generators=TOY_GAN)
    run_dir = run_recipe(DcganRareFindings(config), tmp_path)
    records = read_jsonl(run_dir / "results.jsonl")
    assert sorted((r["policy"], r["method"]) for r in records) == [
        ("zeros", m) for m in ("baseline", "dcgan-rare", "ldam-drw", "ml-ros", "rare-copies") for _ in range(2)]
    policies = pd.read_csv(run_dir / "table2_policies.csv")
    assert list(policies.columns) == ["finding", "U-Ones", "U-Zeros", "U-Ignore"] and len(policies) == 15
    assert policies["U-Ones"].equals(policies["U-Zeros"]) and policies["U-Zeros"].equals(policies["U-Ignore"])
    assert "no uncertain (-1) training labels" in (run_dir / "table2_policies.md").read_text()
    final = pd.read_csv(run_dir / "table3_gan.csv", keep_default_na=False)
    assert list(final["finding"]) == ["Fibrosis", "Effusion"]
    assert list(final.columns) == ["finding", "generated", "baseline", "DCGAN-augmented", "Δ [95% CI]", "verdict",
                                   "DCGAN Δ vs rare-copies", "DCGAN verdict vs rare-copies", "rare-copies",
                                   "rare-copies Δ", "rare-copies verdict", "ml-ros", "ml-ros Δ", "ml-ros verdict",
                                   "ldam-drw", "ldam-drw Δ", "ldam-drw verdict"]
    # the DCGAN, its count-matched control and both cheap fixes against the baseline, and the DCGAN against its
    # control, per finding: one Holm family
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    assert set(zip(verdicts["method"], verdicts["vs"])) == {("dcgan-rare", "baseline"), ("rare-copies", "baseline"),
                                                            ("ml-ros", "baseline"), ("ldam-drw", "baseline"),
                                                            ("dcgan-rare", "rare-copies")}
    copies = [r for r in records if r["method"] == "rare-copies"]
    assert [r["train_rows"] for r in copies] == [r["train_rows"] for r in records if r["method"] == "dcgan-rare"]
    assert all(r["synthetic"] == 0 for r in copies)
    assert final["baseline"][0] == "not estimable (2 test +)" and final["verdict"][0] == "not tested"
    assert final["Δ [95% CI]"][0].startswith("not estimable: 2 test positives")
    assert final["Δ [95% CI]"][1].count("[") == 1 and final["verdict"][1] != "not tested"
    gan = [r for r in records if r["method"] == "dcgan-rare"][0]
    assert gan["synthetic"] == sum(t["generated for it"] for t in gan["finding_table"][:-1]) > 0
    assert "Table 3 shape" in assert_report_renders(run_dir, tmp_path, figures=0)


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


def test_policies_apply_to_training_labels_only(nih_path, tmp_path):
    folder = write_chexpert_layout(tmp_path / "src", nih_path)
    ignore = load_findings(folder / "train.csv")
    ones, zeros = with_policy(ignore, "ones"), with_policy(ignore, "zeros")
    uncertain = np.isnan(ignore.labels)
    train = (ignore.meta["split"] == "train").to_numpy()[:, None]
    assert (uncertain & train).sum() > 0 and (uncertain & ~train).sum() > 0
    assert (ones.labels[uncertain & train] == 1).all() and (zeros.labels[uncertain & train] == 0).all()
    # validation and test labels are policy-free: the uncertain ones stay unknown under every policy
    assert np.isnan(ones.labels[uncertain & ~train]).all() and np.isnan(zeros.labels[uncertain & ~train]).all()
    np.testing.assert_array_equal(ones.labels[~uncertain], zeros.labels[~uncertain])
    config = DcganRareConfig(run=RunSpec(str(folder), seeds=1), findings=("Lung Opacity",), ratio=0.5, train=TOY_TRAIN,
                             generators=TOY_GAN, cheap_fixes=())
    run_dir = run_recipe(DcganRareFindings(config), tmp_path / "runs")
    records = read_jsonl(run_dir / "results.jsonl")
    assert sorted((r["policy"], r["method"]) for r in records) == [
        ("ignore", "baseline"), ("ones", "baseline"), ("zeros", "baseline"), ("zeros", "dcgan-rare"),
        ("zeros", "rare-copies")]
    notes = (run_dir / "table2_policies.md").read_text()
    assert "U-Ones maps uncertain training labels to 1" in notes and "uncertain test labels are masked" in notes


def test_cli_runs_dcgan_rare_findings(small_nih, tmp_path, capsys):
    code = main(["recipe", "dcgan-rare-findings", "--data", str(small_nih), "--seeds", "1", "--epochs", "1",
                 "--findings", "Fibrosis", "--ratio", "0.2", "--gan-steps", "2", "--gan-width", "8",
                 "--out", str(tmp_path), "--device", "cpu", "--no-progress"])
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
    assert "Fibrosis generated" in out and "| 100%" in out and "| 1%" in out and "120 cells:" in out  # 5 seeds x 4 x 6
    assert "estimated wall time:" in out  # classifier and cGAN steps probed on this machine
    assert main(["recipe", "dcgan-rare-findings", "--data", str(small_nih), "--findings", "Fibrosis", "--dry-run",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| Fibrosis" in out and "uncertain" in out and "estimated wall time:" in out
    assert not any(tmp_path.iterdir()), "a dry run must not create run directories"


def test_two_findings_files_are_joined_with_their_splits(nih_path, data_dir, tmp_path, capsys):
    """The default multi-label data: the NIH subset and nih_pneumonia, same 14 findings, other patients."""
    second = data_dir / "nih_pneumonia" / "nih_pneumonia_64.npz"
    joined = load_findings((str(nih_path), str(second)))
    parts = [load_npz(nih_path, target="findings"), load_npz(second, target="findings")]
    assert len(joined) == sum(len(p) for p in parts) == 1300
    for split in ("train", "val", "test"):
        assert len(joined.split(split)) == sum(len(p.split(split)) for p in parts)
    assert set(joined.meta["source"]) == {"nih_chestxray14_subset_64", "nih_pneumonia_64"}
    assert main(["recipe", "dcgan-rare-findings", "--data", str(nih_path), "--data", str(second), "--dry-run",
                 "--out", str(tmp_path)]) == 0
    assert "nih_chestxray14_subset_64.npz + " in capsys.readouterr().out


def test_one_generator_probe_serves_every_seed_finding_and_regime(small_nih, monkeypatch):
    """A dry run's step time depends on the network and the image size, not on the seed, the modelled finding or
    how many rows a regime keeps: the probe trains once for all of them."""
    from cxrgan.generators import GeneratorSettings, GeneratorSpec
    from cxrgan.engine import probes as probe

    probes = {}
    monkeypatch.setattr(probe, "_GENERATOR_PROBES", probes)
    train = load_npz(small_nih, target="findings").split("train")
    settings = GeneratorSettings(steps=40, width=8)
    dcgan = lambda settings, seed, finding: GeneratorSpec.resolve("dcgan", settings, seed=seed, target=finding)  # noqa: E731
    first = probe.generator_seconds(dcgan(settings, 0, RARE[0]), train)
    again = [probe.generator_seconds(dcgan(settings, seed, finding), rows)
             for rows, seed, finding in ((train, 1, RARE[0]), (train, 0, RARE[1]), (train.subset(np.arange(50)), 2, RARE[1]))]
    assert len(probes) == 1 and again == [first] * 3 and first > 0
    probe.generator_seconds(dcgan(GeneratorSettings(steps=40, width=16), 0, RARE[0]), train)
    assert len(probes) == 2  # another width is another probe
