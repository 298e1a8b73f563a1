"""Synthetic files made elsewhere (``--synthetic``): loading, the three modes, the leakage check, the audit, and a
tiny comparison whose file comes from a generator cxrgan trains; on small real Kermany and NIH files."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from cxrgan.balance import BalanceContext, SyntheticFileRows, check_synthetic_files, make_balancer
from cxrgan.balance.stages import Main
from cxrgan.cli import main
from cxrgan.data import CXRDataset, load_npz, save_npz
from cxrgan.data.synthetic import SyntheticFiles, load_synthetic
from cxrgan.errors import CxrganError
from cxrgan.testing import check_balancer_contract


@pytest.fixture(scope="module")
def train(kermany_small):
    return kermany_small.split("train")  # 40 normal : 120 pneumonia


@pytest.fixture(scope="module")
def elsewhere(data_dir, tmp_path_factory):
    """Images made elsewhere with the same class names: 120 normal and 60 pneumonia NIH training images."""
    nih = load_npz(data_dir / "nih_pneumonia" / "nih_pneumonia_64.npz").split("train")
    y = nih.labels[:, 0]
    rows = nih.subset(np.sort(np.concatenate([np.flatnonzero(y == 0)[:120], np.flatnonzero(y == 1)[:60]])))
    return rows, str(save_npz(rows, tmp_path_factory.mktemp("elsewhere") / "nih_made.npz"))


def test_npz_of_another_size_and_class_folders_load_at_the_data_size(train, elsewhere, tmp_path):
    rows, _ = elsewhere
    big = np.stack([np.asarray(Image.fromarray(x).resize((96, 96), Image.BICUBIC)) for x in rows.images[:20]])
    path = save_npz(CXRDataset(big, rows.labels[:20], rows.label_names, rows.meta.iloc[:20],
                               class_names=rows.class_names), tmp_path / "big.npz")
    loaded = load_synthetic(path, train)
    assert loaded.images.shape == (20, 64, 64) and loaded.synthetic.all() and set(loaded.meta["split"]) == {"train"}
    assert set(loaded.meta["source"]) == {"synthetic:big"} and loaded.class_names == train.class_names
    np.testing.assert_array_equal(loaded.labels, rows.labels[:20])
    assert np.abs(loaded.images.astype(int) - rows.images[:20]).mean() < 4  # the same pictures, resampled
    folder = tmp_path / "made"
    for name, rows_of_class, suffix in (("PNEUMONIA", rows.images[-5:], ".png"), ("normal", rows.images[:3], ".jpg")):
        (folder / name).mkdir(parents=True)
        for i, image in enumerate(rows_of_class):
            Image.fromarray(image).save(folder / name / f"{i}{suffix}")
    loaded = load_synthetic(folder, train)
    assert loaded.labels[:, 0].tolist() == [0.0] * 3 + [1.0] * 5 and set(loaded.meta["source"]) == {"synthetic:made"}


def test_balance_mode_adds_what_the_dcgan_row_would_and_passes_the_contract(train, elsewhere):
    _, path = elsewhere
    balancer = SyntheticFileRows(path, "balance", random_state=0)
    out = check_balancer_contract(balancer, train, "balanced", reseeded=SyntheticFileRows(path, "balance",
                                                                                          random_state=1))
    assert balancer.n_added_ == 80 and (out.labels[len(train):, 0] == 0).all()  # 120 - 40 normal images
    assert balancer.draws(train, load_synthetic(path, train)) == {"normal": 80}
    context = BalanceContext(random_state=0, synthetic=SyntheticFiles((path,), "add"))
    added = make_balancer("synthetic:nih_made", context)
    out = check_balancer_contract(added, train, "any")
    assert len(out) == len(train) + 180 and out.synthetic.sum() == 180


def test_pretrain_mode_keeps_the_rows_and_schedules_pretraining(train, elsewhere, tmp_path):
    _, path = elsewhere
    balancer = SyntheticFileRows(path, "pretrain", work_dir=tmp_path)
    check_balancer_contract(balancer, train, "identity")
    pretrain, main = balancer.stages(8)
    assert pretrain.epochs == 7 and main == Main()  # 8 epochs x 160 real rows / 180 synthetic rows, as synth-pretrain
    pretraining = load_npz(pretrain.data)
    assert len(pretraining) == 180 and pretraining.synthetic.all()


def test_findings_files_fill_the_augmented_findings_as_dcgan_rare(nih_path, data_dir, tmp_path):
    nih = load_npz(nih_path, target="findings").split("train")
    made = load_npz(data_dir / "nih_pneumonia" / "nih_pneumonia_64.npz", target="findings")
    path = save_npz(made, tmp_path / "nih_findings.npz")
    balancer = SyntheticFileRows(path, "balance", ratio=0.1, findings=("Pneumonia", "Edema"))
    out = check_balancer_contract(balancer, nih, "any", new_label_vectors=True)
    draws = balancer.draws(nih, load_synthetic(path, nih))
    assert draws == {"Pneumonia": 41, "Edema": 40}  # ceil(0.1 x negatives) - positives, as the dcgan-rare row
    added = out.labels[len(nih):]
    assert len(added) == 81 and ((added[:, 6] == 1) | (added[:, 9] == 1)).all()
    with pytest.raises(CxrganError, match=r"holds 302 'Pneumonia' images; balance draws 453 per seed"):
        SyntheticFileRows(path, "balance", findings=("Pneumonia",)).fit_resample(nih)


def test_plan_check_refuses_copies_of_evaluation_images_and_counts_training_copies(kermany_small, train, elsewhere,
                                                                                    tmp_path):
    rows, path = elsewhere
    test = kermany_small.split("test")
    reports = check_synthetic_files(SyntheticFiles((path,)), train, {"the test split of data.npz": test.images})
    assert reports["synthetic:nih_made"]["near-copies of training images"] == 0
    assert reports["synthetic:nih_made"]["draws per seed"] == {"normal": 80}
    mirrored = CXRDataset(np.ascontiguousarray(test.images[:4, :, ::-1]), test.labels[:4], rows.label_names,
                          test.meta.iloc[:4], class_names=rows.class_names)
    leaky = save_npz(CXRDataset.concat([rows, mirrored]), tmp_path / "leaky.npz")
    with pytest.raises(CxrganError, match=r"4 of its 184 images are near-duplicates of images of the test split of "
                                          r"data\.npz \(the first: its image 180 ~ row 0 there, mirrored"):
        check_synthetic_files(SyntheticFiles(str(leaky), "add"), train, {"the test split of data.npz": test.images})


@pytest.fixture(scope="module")
def small_file(kermany_small, tmp_path_factory):
    return str(save_npz(kermany_small, tmp_path_factory.mktemp("data") / "kermany_small.npz"))


def test_audit_json_reports_near_copies_of_training_images_as_memorised(small_file, train, tmp_path, capsys):
    def jpeg(image):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, "JPEG", quality=75)
        return np.asarray(Image.open(buffer).convert("L"))

    changes = (lambda x: np.clip(x.astype(np.int16) + 1, 0, 255).astype(np.uint8), lambda x: x[:, ::-1], jpeg)
    copies = np.stack([changes[i % 3](np.ascontiguousarray(x)) for i, x in enumerate(train.images[:30])])
    path = save_npz(CXRDataset(copies, train.labels[:30], train.label_names, train.meta.iloc[:30],
                               class_names=train.class_names), tmp_path / "copies.npz")
    capsys.readouterr()
    assert main(["audit", "--images", str(path), "--data", small_file, "--json", "--feature-epochs", "2", "--no-tstr",
                 "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)  # one JSON object, nothing else on stdout
    assert result["near_duplicates"]["train"]["count"] == 30 and result["near_duplicates"]["test"]["count"] == 0
    assert result["metrics"]["near_copies_train"]["synthetic"] == 1.0
    assert result["metrics"]["memorised_same_class"]["synthetic"] >= 0.5 > result["metrics"][
        "memorised_same_class"]["reference"]


def test_tiny_compare_tabulates_a_sampled_file_with_verdicts_and_its_audit(small_file, tmp_path, capsys):
    assert main(["train-gan", "--method", "dcgan", "--data", small_file, "--gan-steps", "3", "--gan-width", "8",
                 "--batch-size", "16", "--out", str(tmp_path / "gan"), "--device", "cpu", "--no-progress"]) == 0
    run = next((tmp_path / "gan").iterdir())
    assert main(["sample", str(run), "--n", "60", "--out", str(tmp_path / "synth.npz"), "--device", "cpu"]) == 0
    assert main(["compare", small_file, "--imbalance", "3:1", "--synthetic", str(tmp_path / "synth.npz"),
                 "--methods", "none", "--seeds", "2", "--model", "small-cnn", "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", "--no-progress", "--out", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr().out
    assert "synthetic:synth: 60 images (balance, 26 'pneumonia' per seed)" in printed  # 39 : 13 rows
    run_dir = next((tmp_path / "runs").iterdir())
    verdicts = (run_dir / "verdicts.md").read_text()
    row = next(line for line in verdicts.splitlines() if line.startswith("| synthetic:synth"))
    assert "| none" in row and ("no detectable difference" in row or "better" in row or "worse" in row)
    audit = (run_dir / "synthetic_audit.md").read_text()
    assert "synthetic:synth" in audit and "near-copies of training images" in audit
    records = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    assert sorted(r["train_synthetic"] for r in records if r.get("method") == "synthetic:synth") == [26, 26]
