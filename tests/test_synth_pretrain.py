"""Synthetic pretraining: a balanced synthetic set from a conditional generator, pretraining, then the real rows."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from balancer_contract import check_balancer_contract

from cxrgan.balance import BALANCERS, BalanceContext, SyntheticPretraining, make_balancer
from cxrgan.balance.stages import Main, Pretrain
from cxrgan.classify import TrainConfig, train_classifier
from cxrgan.data import load_npz
from cxrgan.errors import CxrganError
from cxrgan.generators import GeneratorSettings

TINY_SETTINGS = GeneratorSettings(steps=4, width=8)
CLASSIFIER = TrainConfig(model="small-cnn", epochs=2, batch_size=32, lr=1e-3, device="cpu", progress=False, bf16=True)


@pytest.fixture(scope="module")
def splits(kermany_small):
    return kermany_small.split("train"), kermany_small.split("val")


@pytest.fixture(scope="module")
def pretrained(splits, tmp_path_factory):
    """The balancer fitted on the 160 training rows (40 normal : 120 pneumonia) with a tiny cDCGAN."""
    balancer = SyntheticPretraining("cdcgan", "cgan-labelvec", TINY_SETTINGS, work_dir=tmp_path_factory.mktemp("work"))
    out = check_balancer_contract(balancer, splits[0], expect="identity")
    return balancer, out


def test_balanced_synthetic_set_beside_the_cached_generator(pretrained, splits):
    balancer, _ = pretrained
    synthetic = load_npz(balancer.pretrain_data_)
    assert len(synthetic) == 2 * math.ceil(2.0 * 120)  # scale x the larger class, per class
    assert np.bincount(synthetic.binary_targets()).tolist() == [240, 240] and synthetic.synthetic.all()
    assert balancer.pretrain_data_.parent == next((balancer.work_dir / "gan").glob("cdcgan-*"))
    pretrain, main = balancer.stages(CLASSIFIER.epochs)
    assert pretrain.data == str(balancer.pretrain_data_) and main == Main()
    assert pretrain.epochs == max(1, round(2 * 160 / 480))  # as many image passes as the real epochs


def test_pretraining_then_real_rows(pretrained, splits, tmp_path):
    balancer, _ = pretrained
    train, val = splits
    pretrain, main = balancer.stages(CLASSIFIER.epochs)
    stages = (dataclasses.replace(pretrain, epochs=2), main)
    config = CLASSIFIER
    result = train_classifier(train, val, config, seed=0, stages=stages)
    assert [r.get("stage") for r in result.history] == ["pretrain", "pretrain", None, None]
    assert [r["epoch"] for r in result.history] == [-1, 0, 1, 2]
    plain = train_classifier(train, val, CLASSIFIER, seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(result.model.state_dict().values(),
                                                     plain.model.state_dict().values()))

    # a run resumed after its first real epoch does not pretrain again and ends as the uninterrupted one
    def stop(record: dict) -> None:
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    every_epoch = dataclasses.replace(config, checkpoint_seconds=0, checkpoint_epochs=1)  # same science, more writes
    with pytest.raises(KeyboardInterrupt):
        train_classifier(train, val, every_epoch, seed=0, checkpoint_path=tmp_path / "cut.pt", on_epoch=stop,
                         stages=stages)
    assert torch.load(tmp_path / "cut.pt", weights_only=True)["epoch"] == 1
    resumed = train_classifier(train, val, every_epoch, seed=0, checkpoint_path=tmp_path / "cut.pt", resume=True,
                               stages=stages)
    def timeless(history: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert timeless(resumed.history) == timeless(result.history)
    for key, value in result.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key


def test_settings_are_checked(splits):
    train, val = splits
    with pytest.raises(CxrganError, match="pretrain"):
        train_classifier(train, val, CLASSIFIER, seed=0, stages=(Pretrain("synthetic.npz", 0), Main()))
    with pytest.raises(CxrganError, match="one class"):
        SyntheticPretraining("dcgan", "cgan-labelvec")
    with pytest.raises(CxrganError, match="fit_resample"):
        SyntheticPretraining("cdcgan", "cgan-labelvec").stages(CLASSIFIER.epochs)


def test_registered_methods():
    for name, binary in (("synth-pretrain", "cldm"), ("synth-pretrain-cldm", "cldm"),
                         ("synth-pretrain-cdcgan", "cdcgan")):
        assert name in BALANCERS
        balancer = make_balancer(name, BalanceContext(random_state=2, generators=TINY_SETTINGS))
        assert balancer.generator_names[True] == binary and balancer.name == name and balancer.random_state == 2


def test_multilabel_set_gives_every_finding_its_share(nih_path):
    train = load_npz(nih_path, target="findings").split("train")
    balancer = SyntheticPretraining("cdcgan", "cgan-labelvec", scale=0.5)
    labels = balancer.pretraining_labels(train, np.random.default_rng(0))
    n = balancer.n_per_class(train)
    assert n == math.ceil(0.5 * np.nansum(train.labels, axis=0).max())
    present = np.nan_to_num(labels) == 1
    assert (present.sum(axis=0) >= n).all()  # every finding has a training positive in this subset
    assert (~present.any(axis=1)).sum() >= n  # and the all-negative vectors their n
    assert len(labels) == n * (train.n_labels + 1)
