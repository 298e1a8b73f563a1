"""Loss-side methods as balancers: the training stages they hand on, bad input, and end-to-end runs on real images
(through ``compare``, which trains with ``balancer.stages(epochs)``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cxrgan.balance import BalanceContext, make_balancer
from cxrgan.balance.longtail import ClassifierRetrainingMethod, FocalMethod, LdamDrwMethod, LogitAdjustMethod
from cxrgan.balance.stages import DecoupledHead, Loss, Main, PosthocLogitAdjust
from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.cli import main
from cxrgan.data import load_npz, save_npz
from cxrgan.errors import CxrganError
from cxrgan.io import read_jsonl

FAST = TrainConfig(model="small-cnn", epochs=1, batch_size=64, lr=1e-3, progress=False, device="cpu")


def test_training_stages_of_each_method(kermany_small):
    train = kermany_small.split("train")  # 40 normal, 120 pneumonia
    counts = ((40, 120),)

    def stages(name: str, epochs: int = 1) -> tuple:
        balancer = make_balancer(name, BalanceContext(random_state=0))
        balancer.fit_resample(train)
        np.testing.assert_array_equal(balancer.label_counts_, [[40, 120]])
        assert balancer.priors_.tolist() == [0.75]
        return balancer.stages(epochs)

    assert stages("focal") == (Main(Loss("focal", focal_gamma=2.0), label_counts=counts),)
    (ldam,) = stages("ldam-drw", 8)
    assert ldam.loss == Loss("ldam", ldam_max_margin=0.5, ldam_scale=30.0) and ldam.drw_beta == 0.9999
    assert ldam.drw_start_epoch == 7  # floor(0.8 * 8) + 1: the last 20 % of the epochs, as Cao et al.'s 160 of 200
    assert stages("ldam-drw", 30)[0].drw_start_epoch == 25
    assert stages("ldam-drw")[0].drw_start_epoch == 1  # one epoch: re-weighted throughout
    assert stages("logit-adjust") == (Main(Loss(logit_adjust_tau=1.0), label_counts=counts),)
    assert stages("logit-adjust-posthoc") == (Main(label_counts=counts), PosthocLogitAdjust(1.0))
    assert stages("crt", 6) == (Main(label_counts=counts), DecoupledHead(6))
    explicit = ClassifierRetrainingMethod(0, head_epochs=2)
    explicit.fit_resample(train)
    assert explicit.stages(6)[1] == DecoupledHead(2)
    # row methods train plainly
    assert make_balancer("oversample", BalanceContext(random_state=0)).stages(6) == (Main(),)


def test_stages_need_fit_resample_first():
    with pytest.raises(CxrganError, match=r"^crt: call fit_resample before stages$"):
        ClassifierRetrainingMethod(0).stages(1)


@pytest.mark.parametrize("make,message", [
    (lambda: FocalMethod(0, gamma=-1), "focal: gamma must be >= 0, got -1"),
    (lambda: LdamDrwMethod(0, max_margin=0), "ldam-drw: max margin must be > 0, got 0"),
    (lambda: LdamDrwMethod(0, deferred_fraction=1.0), "ldam-drw: deferred fraction must be in [0, 1), got 1.0"),
    (lambda: LogitAdjustMethod(0, tau=-0.5), "logit-adjust: tau must be >= 0, got -0.5"),
    (lambda: LogitAdjustMethod(0, form="both"), "logit-adjust: form must be 'loss' or 'posthoc', got 'both'"),
    (lambda: ClassifierRetrainingMethod(0, head_epochs=0), "crt: head epochs must be >= 1, got 0"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(CxrganError) as error:
        make()
    assert str(error.value) == message


@pytest.mark.parametrize("name", ["focal", "ldam-drw", "logit-adjust", "logit-adjust-posthoc", "crt"])
def test_each_loss_method_trains_on_nih_findings(name, nih_path):
    """A few hundred real NIH rows (463 training, 14 findings), one epoch, the small CNN, through the balancer."""
    data = load_npz(nih_path, target="findings")
    train, val = data.split("train"), data.split("val")
    balancer = make_balancer(name, BalanceContext(random_state=0))
    rows = balancer.fit_resample(train)
    stages = balancer.stages(FAST.epochs)
    main = stages[0]
    assert main.label_counts == tuple(map(tuple, balancer.label_counts_.tolist())) and len(main.label_counts) == 14
    result = train_classifier(rows, val, FAST, seed=0, stages=stages)
    scores = predict(result.model, val)
    assert scores.shape == (len(val), 14) and np.isfinite(scores).all() and math.isfinite(result.best_val_auc)
    assert [h.get("stage") for h in result.history] == {"ldam-drw": ["drw"], "crt": [None, "crt"]}.get(name, [None])


def test_compare_trains_with_the_methods_settings(kermany_small, tmp_path, capsys):
    data = save_npz(kermany_small, tmp_path / "small.npz")
    assert main(["compare", str(data), "--methods", "none,crt", "--seeds", "1", "--model", "small-cnn", "--epochs",
                 "1", "--batch-size", "32", "--lr", "1e-3", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "runs")]) == 0
    records = {r["method"]: r for r in read_jsonl(next((tmp_path / "runs").iterdir()) / "results.jsonl")}
    assert [h.get("stage") for h in records["crt"]["history"]] == [None, "crt"]
    assert [h.get("stage") for h in records["none"]["history"]] == [None]
    assert "crt" in capsys.readouterr().out
