"""Recipes sgan-scarcity and sgan-domain at toy sizes on real images; dataset 2's labels never reach training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cxrgan.classify import sgan
from cxrgan.classify.sgan import SGANConfig
from cxrgan.data import load_npz
from cxrgan.data.npz import save_npz
from cxrgan.io import read_jsonl
from _report_check import assert_report_renders

TOY = SGANConfig(ndf=8, ngf=8, z_dim=16, steps=3, batch_size=8, reference_size=16)


def _toy_file(dataset, path, per_split: dict[str, tuple[int, int]], seed: int = 0):
    """A small real-image .npz: (normal, abnormal) counts per split."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, counts in per_split.items():
        part = np.flatnonzero(dataset.meta["split"].to_numpy() == split)
        y = dataset.labels[part, 0]
        rows += [rng.choice(part[y == k], n, replace=False) for k, n in enumerate(counts)]
    save_npz(dataset.subset(np.concatenate(rows)), path)
    return str(path)


@pytest.fixture(scope="module")
def toy_files(kermany, nih_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sgan")
    first = _toy_file(kermany, folder / "kermany_toy.npz", {"train": (12, 30), "test": (10, 10)})
    second = _toy_file(load_npz(nih_path), folder / "nih_toy.npz", {"train": (15, 15), "test": (10, 10)}, seed=1)
    return first, second


def test_sgan_scarcity_caps_sizes_resumes_and_writes_table1(toy_files, tmp_path, capsys):
    from cxrgan.engine.run import run_recipe
    from cxrgan.engine.spec import RunSpec
    from cxrgan.recipes.sgan_scarcity import SganScarcity, SganScarcityConfig

    config = SganScarcityConfig(run=RunSpec(toy_files[0], seeds=2, external=(toy_files[1],),
                                            external_labels=(("abnormal", "pneumonia"),)), per_class=(3, 10, 2000),
                                sgan=TOY)
    run_dir = run_recipe(SganScarcity(config), tmp_path, command="cxrgan recipe sgan-scarcity")
    records = pd.DataFrame(read_jsonl(run_dir / "results.jsonl"))
    assert sorted(records["n"].unique()) == [3, 10, 12]  # 2000 capped by the 12 normal training images
    assert len(records) == 3 * 2 * 2
    sgan_rows = records[records["method"] == "SGAN"]
    assert (sgan_rows["n_unlabeled"] == 42 - 2 * sgan_rows["n"]).all()  # the rest of the training split
    assert (records[records["method"] == "CNN"]["n_unlabeled"] == 0).all()
    assert records["roc_auc"].between(0, 1).all() and records["accuracy"].between(0, 1).all()
    assert records["parameters"].nunique() == 1  # CNN and SGAN matched
    table = pd.read_csv(run_dir / "table1.csv")
    assert list(table.columns) == ["labelled / class", "CNN accuracy", "SGAN accuracy", "CNN ROC AUC", "SGAN ROC AUC",
                                   "SGAN - CNN ROC AUC", "verdict", "CNN ROC AUC @ nih_toy", "SGAN ROC AUC @ nih_toy",
                                   "SGAN - CNN @ nih_toy", "verdict @ nih_toy"]
    # the paired difference is computed seed by seed on the same labelled subset
    at3 = records[records["n"] == 3].pivot(index="seed", columns="method", values="roc_auc")
    assert table["SGAN - CNN ROC AUC"][0].startswith(f"{(at3['SGAN'] - at3['CNN']).mean():+.3f} [")
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    # one Holm family over the three sizes on the internal test split and on the external site
    assert len(verdicts) == 6 and verdicts["p (Holm)"].notna().all()
    assert set(verdicts["site"]) == {"internal test", "nih_toy"} and "SGAN - CNN @ nih_toy" in table.columns
    assert table["labelled / class"].tolist() == [3, 10, 12]
    assert table["SGAN accuracy"].str.contains(r"\[").all()  # mean [CI] with two seeds
    assert (run_dir / "figure5.png").stat().st_size > 1000
    # the external site's AUC by view, age band and sex, per labelled size: where a below-chance AUC comes from
    groups = pd.read_csv(run_dir / "external_subgroups.csv")
    assert list(groups.columns) == ["labelled / class", "site", "subgroup", "n", "+", "CNN", "SGAN"]
    assert {"view AP", "view PA"} <= set(groups["subgroup"]) and any(groups["subgroup"].str.startswith("age "))
    assert set(groups["labelled / class"]) == {3, 10, 12} and set(groups["site"]) == {"nih_toy"}
    assert (groups.groupby("labelled / class")["n"].max() < 50).all()  # subgroups of the site's 50 rows (all splits)
    assert "Table 1 shape" in assert_report_renders(run_dir, tmp_path, figures=1)
    assert "Table 1 shape" in capsys.readouterr().out
    # resuming trains nothing new
    run_recipe(SganScarcity(config), tmp_path, resume_dir=run_dir)
    assert len(read_jsonl(run_dir / "results.jsonl")) == 12


def test_sgan_domain_never_trains_on_dataset2_labels(toy_files, tmp_path, monkeypatch, capsys):
    from cxrgan.engine.run import run_recipe
    from cxrgan.engine.spec import RunSpec
    from cxrgan.recipes.sgan_domain import ROWS, SganDomain, SganDomainConfig

    seen = []
    original_fit = sgan.SemiSupervisedGAN.fit

    def spy(self, labeled, unlabeled=(), random_state=0):
        seen.append((len(labeled), [u.labels.copy() for u in unlabeled]))
        return original_fit(self, labeled, unlabeled, random_state=random_state)

    monkeypatch.setattr(sgan.SemiSupervisedGAN, "fit", spy)
    config = SganDomainConfig(run=RunSpec(toy_files[0], seeds=1), second_data=toy_files[1], sgan=TOY)
    run_dir = run_recipe(SganDomain(config), tmp_path)
    assert [(n, [len(u) for u in unl]) for n, unl in seen] == [(42, []), (42, [30])]  # ds1 train; + ds2 train
    assert all(np.isnan(labels).all() for _, unl in seen for labels in unl)
    table = pd.read_csv(run_dir / "table2.csv", keep_default_na=False)
    assert table["training"].tolist() == list(ROWS.values())
    records = pd.DataFrame(read_jsonl(run_dir / "results.jsonl")).set_index("row")["roc_auc"]
    # one seed: the SGAN rows show their difference to the CNN, with no interval and no test
    assert table["ROC AUC - CNN"].tolist() == ["", *(f"{records[row] - records['cnn-d1']:+.3f}" for row in list(ROWS)[1:])]
    assert table["verdict"].tolist() == ["", *["needs >= 2 seeds"] * 4]
    # the adapted SGAN is also tested against each non-GAN control given the same unlabelled images
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    assert list(zip(verdicts["training"], verdicts["vs"]))[-2:] == [(ROWS["sgan-d1+d2"], ROWS["cnn-d1+pseudo"]),
                                                                   (ROWS["sgan-d1+d2"], ROWS["cnn-d1+norm"])]
    assert len(verdicts) == 6
    pseudo = read_jsonl(run_dir / "results.jsonl")[3]
    assert pseudo["row"] == "cnn-d1+pseudo" and sum(pseudo["pseudo_labels"].values()) <= 30
    assert "Table 2 shape" in capsys.readouterr().out
    # dataset 2's test split by view, age band and sex, one column per row
    groups = pd.read_csv(run_dir / "subgroups.csv")
    assert list(groups.columns) == ["subgroup", "n", "+", *ROWS.values()]
    assert {"view AP", "view PA"} <= set(groups["subgroup"]) and groups["n"].max() <= 20
    assert "Table 2 shape" in assert_report_renders(run_dir, tmp_path, figures=0)


def test_cli_runs_sgan_domain_with_second_data_flag(toy_files, tmp_path):
    from cxrgan.cli import main

    assert main(["recipe", "sgan-domain", "--data", toy_files[0], "--second-data", toy_files[1], "--seeds", "1",
                 "--gan-steps", "2", "--norm", "batch", "--out", str(tmp_path)]) == 0
    (run_dir,) = list(tmp_path.iterdir())
    assert len(read_jsonl(run_dir / "results.jsonl")) == 5  # three paper rows and two controls (BatchNorm here)
    assert "nih_toy" in run_dir.name


def test_dry_run_plans_without_training(toy_files, tmp_path, capsys):
    from cxrgan.cli import main

    assert main(["recipe", "sgan-scarcity", "--data", toy_files[0], "--per-class", "5,50", "--dry-run",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| 12 " in out and "| 50 " not in out  # 50 capped at the 12 normal training images
    assert "estimated wall time:" in out
    assert main(["recipe", "sgan-domain", "--data", toy_files[0], "--second-data", toy_files[1], "--dry-run",
                 "--out", str(tmp_path)]) == 0
    assert "| 30 " in capsys.readouterr().out  # dataset 2's training split, unlabelled
    assert not list(tmp_path.iterdir())
