"""Synthetic-image audit on real Kermany X-rays: constructed cases (copies of training images, noise, a class-specific
set), the metric formulas on known distributions, audit of a trained GAN run, and clean errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import linalg

from cxrgan.data import CXRDataset, save_npz
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import AuditConfig, audit_images, audit_table, train_feature_model, train_on_synthetic
from cxrgan.evaluate.generator_audit import audit_run
from cxrgan.evaluate.audit_metrics import frechet_distance, kernel_inception_distance, prdc, two_sample_auc

FAST = AuditConfig(feature_epochs=2, tstr_epochs=2, batch_size=32, kid_subsets=20, kid_subset_size=60, tstr=False)


@pytest.fixture(scope="module")
def splits(kermany):
    """Real rows: 320 train, 80 val, 120 test, drawn at random from the official splits."""
    rng = np.random.default_rng(1)
    picked = []
    for name, n in (("train", 320), ("val", 80), ("test", 120)):
        part = kermany.split(name)
        picked.append(part.subset(np.sort(rng.choice(len(part), n, replace=False))))
    return tuple(picked)


@pytest.fixture(scope="module")
def feature_model(splits):
    return train_feature_model(splits[0], splits[1], FAST)


def test_copies_of_training_images_are_flagged_as_memorised(splits, feature_model, tmp_path):
    train, val, test = splits
    rows = np.random.default_rng(0).choice(len(train), 100, replace=False)
    result = audit_images(train.images[rows], train.labels[rows], train, val, test, tmp_path, FAST, feature_model)
    metrics = result["metrics"]
    assert metrics["memorised_feature"]["synthetic"] == 1.0 and metrics["memorised_pixel"]["synthetic"] == 1.0
    assert metrics["memorised_pixel"]["reference"] < 0.05  # real test images are not copies
    assert result["nearest_train_index"]["pixel"] == rows.tolist()  # each copy found its own original
    assert max(result["memorisation"]["pixel"]["synthetic_to_train"]) < 1e-4  # zero up to rounding
    # copies of real images are real images: a classifier cannot tell them from real test images
    assert abs(metrics["two_sample_auc"]["synthetic"] - 0.5) < 0.15
    assert metrics["precision"]["synthetic"] > 0.8 and metrics["coverage"]["synthetic"] > 0.7
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["metrics"]["memorised_pixel"]["synthetic"] == 1.0
    assert "two-sample classifier AUC" in (tmp_path / "audit.csv").read_text()
    for name in ("distances.png", "nearest_pairs.png"):
        assert (tmp_path / name).stat().st_size > 10_000, name
    table = audit_table(result)
    assert list(table.columns) == ["metric", "synthetic", "real train vs test (reference)", "ideal"]
    assert len(table) == 9 and "1st pct." in table["metric"].iloc[-1]


def test_noise_is_far_from_real_images(splits, feature_model):
    train, val, test = splits
    noise = np.random.default_rng(0).integers(0, 256, (100, 64, 64), dtype=np.uint8)
    metrics = audit_images(noise, None, train, val, test, None, FAST, feature_model)["metrics"]
    assert metrics["precision"]["synthetic"] <= 0.02 and metrics["density"]["synthetic"] <= 0.02
    assert metrics["precision"]["reference"] > 0.8
    assert metrics["frechet_distance"]["synthetic"] > 20 * metrics["frechet_distance"]["reference"]
    assert metrics["kid"]["synthetic"] > 100 * abs(metrics["kid"]["reference"]) + 5 * metrics["kid"]["synthetic_std"]
    assert metrics["two_sample_auc"]["synthetic"] > 0.95
    assert metrics["memorised_pixel"]["synthetic"] == 0.0


def test_class_specific_images_are_compared_with_their_class_and_train_on_synthetic(splits, feature_model):
    train, val, test = splits
    positives = np.flatnonzero(train.labels[:, 0] == 1)[:60]
    result = audit_images(train.images[positives], train.labels[positives], train, val, test, None,
                          AuditConfig(**{**FAST.__dict__, "tstr": True}), feature_model)
    assert result["real_rows"] == "class 'pneumonia' only (the synthetic images are all 'pneumonia')"
    assert result["n_train"] == int(train.labels[:, 0].sum()) and result["n_test"] == int(test.labels[:, 0].sum())
    assert "one class" in result["tstr"]["skipped"]


def test_train_on_synthetic_with_both_classes(splits, feature_model):
    train, val, test = splits
    rows = np.random.default_rng(2).choice(len(train), 160, replace=False)
    config = AuditConfig(**{**FAST.__dict__, "tstr": True})
    result = audit_images(train.images[rows], train.labels[rows], train, val, test, None, config, feature_model)
    tstr = result["metrics"]["tstr_auc"]
    # a few epochs on a few hundred images, tested on Kermany's shifted official test set: modest but real signal
    assert tstr["reference"] > 0.55 and tstr["synthetic"] > 0.55
    scrambled = np.random.default_rng(3).permutation(train.labels[rows])  # labels unrelated to the images
    chance = train_on_synthetic(train.images[rows], scrambled, val, test, config)
    assert abs(chance - 0.5) < 0.15 and chance < tstr["synthetic"]


def test_metric_formulas_on_known_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(3000, 4)), rng.normal(size=(3000, 4)) * 2 + 1
    sigma_a, sigma_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    direct = (np.sum((a.mean(0) - b.mean(0)) ** 2)
              + np.trace(sigma_a + sigma_b - 2 * np.real(linalg.sqrtm(sigma_a @ sigma_b))))
    assert frechet_distance(a, b) == pytest.approx(direct, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance(a[:10], b[:10]) >= 0.0  # singular covariances (N < D would be too) stay finite
    same = kernel_inception_distance(a[:1500], a[1500:], n_subsets=20, subset_size=200)
    assert abs(same[0]) < 3 * same[1] + 1e-3  # unbiased: about zero for one distribution
    assert kernel_inception_distance(a, b, n_subsets=20, subset_size=200)[0] > 1.0
    identical = prdc(a[:300], a[:300], k=5)
    assert identical["precision"] == identical["recall"] == identical["coverage"] == 1.0
    assert prdc(a[:300], b[:300] + 50, k=5) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    assert abs(two_sample_auc(a[:300], a[300:600]) - 0.5) < 0.1
    assert two_sample_auc(a[:300], a[300:600] + 2) > 0.95


def test_audit_of_a_trained_gan_run(kermany_small, tmp_path):
    from cxrgan.generators.dcgan import CDCGANConfig
    from cxrgan.generators.runs import train_gan

    data = save_npz(kermany_small, tmp_path / "small.npz")
    run_dir = train_gan("cdcgan", data, tmp_path / "gans", CDCGANConfig(ngf=8, ndf=8, z_dim=16, embed_dim=4,
                        batch_size=32, steps=5, progress=False))
    result = audit_run(run_dir, n=40, config=FAST)
    assert result["data_path"] == str(data) and result["n_synthetic"] == 40
    assert result["metrics"]["two_sample_auc"]["synthetic"] > result["metrics"]["two_sample_auc"]["reference"]
    assert json.loads((run_dir / "audit" / "audit.json").read_text())["generator_run"] == str(run_dir)
    assert (run_dir / "audit" / "nearest_pairs.png").exists()


def test_bad_input_is_a_clear_error(splits, feature_model, tmp_path):
    train, val, test = splits
    with pytest.raises(CxrganError, match=r"synthetic images are \(32, 32\) px but the real ones are \(64, 64\) px"):
        audit_images(np.zeros((20, 32, 32), np.uint8), None, train, val, test, None, FAST, feature_model)
    with pytest.raises(CxrganError, match="uint8 array"):
        audit_images(np.zeros((20, 64, 64), np.float32), None, train, val, test, None, FAST, feature_model)
    with pytest.raises(CxrganError, match="at least 6 synthetic images, got 3"):
        audit_images(train.images[:3], None, train, val, test, None, FAST, feature_model)
    mixed = CXRDataset.concat([train, train.subset([0])])
    mixed.meta.loc[len(mixed) - 1, "synthetic"] = True
    with pytest.raises(CxrganError, match="trained on real images"):
        train_feature_model(mixed, val, FAST)
    with pytest.raises(CxrganError, match="no config.json naming the generator's data file"):
        audit_run(tmp_path)
    with pytest.raises(CxrganError, match="no checkpoint.pt; not a trained GAN run directory"):
        audit_run(tmp_path, data_path=tmp_path / "any.npz")
