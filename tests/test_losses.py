"""Long-tail losses against hand-computed values, and the training stages that use them (DRW, logit adjustment,
cRT) on real Kermany and NIH images."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.classify.decoupled import class_aware_rows
from cxrgan.balance.stages import DecoupledHead, Loss, Main, PosthocLogitAdjust, check_stages
from cxrgan.classify.losses import (
    bce_terms,
    build_loss,
    drw_weights,
    focal_terms,
    ldam_margins,
    ldam_terms,
    logit_offsets,
    output_layer,
)
from cxrgan.classify.networks import CLASSIFIERS, build_classifier
from cxrgan.data import load_npz
from cxrgan.errors import CxrganError

FAST = TrainConfig(model="small-cnn", epochs=2, batch_size=32, lr=1e-3, progress=False, device="cpu", patience=5)


# ---- the math, by hand ------------------------------------------------------------------------------------------
def test_ldam_margins_by_hand():
    # n = 81 negatives, 16 positives: m = C / n^(1/4) with C so the rarer class gets 0.5:
    # positives 0.5, negatives 0.5 * (16 / 81)^(1/4) = 0.5 * 2 / 3
    np.testing.assert_allclose(ldam_margins([[81, 16]], 0.5), [[1 / 3, 0.5]])
    np.testing.assert_allclose(ldam_margins([[16, 81], [10, 0]], 0.6), [[0.6, 0.4], [0.6, 0.0]])  # per column


def test_ldam_terms_by_hand():
    margins = torch.tensor([[1 / 3, 0.5]])
    logits = torch.tensor([[1.0], [1.0]])
    targets = torch.tensor([[1.0], [0.0]])
    terms = ldam_terms(logits, targets, margins, scale=2.0)
    # positive: BCE(2 (1 - 0.5), 1) = log(1 + e^-1); negative: BCE(2 (1 + 1/3), 0) = log(1 + e^(8/3))
    np.testing.assert_allclose(terms.numpy().ravel(), [math.log1p(math.exp(-1)), math.log1p(math.exp(8 / 3))],
                               rtol=1e-6)


def test_logit_offsets_by_hand():
    # prior 25 / 100: tau log(0.25 / 0.75) = tau log(1/3); a column without positives is not adjusted
    np.testing.assert_allclose(logit_offsets([[75, 25], [50, 0]], 1.0), [math.log(1 / 3), 0.0])
    np.testing.assert_allclose(logit_offsets([[75, 25]], 2.0), [2 * math.log(1 / 3)])


def test_focal_terms_by_hand():
    logits, targets = torch.zeros(1, 1), torch.ones(1, 1)
    # p_t = 0.5: -(1 - 0.5)^2 log 0.5 = 0.25 log 2; gamma 0 is BCE
    assert focal_terms(logits, targets, 2.0).item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    x, y = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 1.0]])
    torch.testing.assert_close(focal_terms(x, y, 0.0), bce_terms(x, y))


def test_drw_weights_by_hand():
    # beta 0.9, n = (2, 1): effective numbers (1 - 0.81) / 0.1 = 1.9 and 1; weights 1/1.9 : 1 scaled to sum 2
    np.testing.assert_allclose(drw_weights([[2, 1]], 0.9), [[2 / 2.9, 2 * 1.9 / 2.9]], rtol=1e-6)
    np.testing.assert_array_equal(drw_weights([[5, 0]], 0.9), [[1.0, 1.0]])  # nothing to re-weight


def test_build_loss_logit_adjusted_and_masked():
    counts = np.array([[75, 25], [20, 80]])
    loss = build_loss(Loss(logit_adjust_tau=1.0), counts)
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.4]])
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    shifted = logits + torch.tensor([math.log(1 / 3), math.log(4)])
    expected = bce_terms(shifted, torch.nan_to_num(targets))[[0, 1, 1], [0, 0, 1]].mean()
    torch.testing.assert_close(loss(logits, targets), expected)


@pytest.mark.parametrize("stages,message", [
    ((Main(Loss("focal", focal_gamma=-1.0)),), "focal: gamma must be >= 0, got -1.0"),
    ((Main(Loss(logit_adjust_tau=-1.0)),), "logit adjustment: tau must be >= 0, got -1.0"),
    ((Main(Loss("ldam", ldam_scale=0.0)),), "ldam: scale must be > 0, got 0.0"),
    ((Main(drw_beta=1.0),), "drw: beta must be in (0, 1), got 1.0"),
    ((Main(), DecoupledHead(-2)), "crt: head epochs must be >= 1, got -2"),
    ((DecoupledHead(2),), "training stages ['DecoupledHead']: each kind at most once, Main always"),
])
def test_bad_stages_are_refused(stages, message):
    with pytest.raises(CxrganError, match=f"^{message}".replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_stages(stages, epochs=2)
    with pytest.raises(CxrganError, match="^unknown loss 'hinge'"):
        build_loss(Loss("hinge"), np.array([[1, 1]]))


def test_output_layer_needs_a_separable_head():
    assert isinstance(output_layer(build_classifier("small-cnn", 2), "crt"), nn.Linear)
    with pytest.raises(CxrganError, match=r"^crt: model Sequential has no separable classifier head"):
        output_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 1)), "crt")


def test_class_aware_rows_balance_the_labels():
    generator = torch.Generator().manual_seed(0)
    binary = np.array([1.0] * 10 + [0.0] * 90)[:, None]
    drawn = class_aware_rows(binary, 20000, generator)
    assert abs(binary[drawn, 0].mean() - 0.5) < 0.02  # each class half the draws, not 10 %
    # findings A (rows 0-1), B (rows 2-9, one row also A), no finding (rows 10-99): each label a third of the draws
    labels = np.zeros((100, 2), np.float32)
    labels[:2, 0] = 1
    labels[2:10, 1] = 1
    labels[1, 1] = 1
    drawn = class_aware_rows(labels, 30000, generator)
    assert abs((drawn < 2).mean() - 1 / 3 * (1 + 1 / 9)) < 0.02  # A's draws plus B's draws of row 1
    assert abs((drawn >= 10).mean() - 1 / 3) < 0.02


# ---- the loop ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def kermany_splits(kermany_small):
    return kermany_small.split("train"), kermany_small.split("val")


def test_crt_retrains_only_the_head(kermany_splits):
    train, val = kermany_splits
    plain = train_classifier(train, val, FAST, seed=2)
    decoupled = train_classifier(train, val, FAST, seed=2, stages=(Main(), DecoupledHead(2)))
    plain_state, crt_state = plain.model.state_dict(), decoupled.model.state_dict()
    features = [k for k in plain_state if k.startswith("features.")]
    assert any(k.endswith("running_mean") for k in features)  # BatchNorm statistics are compared too
    for key in features:
        torch.testing.assert_close(crt_state[key], plain_state[key], rtol=0, atol=0)
    assert not torch.equal(crt_state["head.2.weight"], plain_state["head.2.weight"])
    assert [h.get("stage") for h in decoupled.history] == [None, None, "crt", "crt"]
    assert decoupled.best_epoch in (3, 4) and all(p.requires_grad for p in decoupled.model.parameters())


def test_crt_needs_a_model_with_a_separable_head(kermany_splits, monkeypatch):
    def flat(n_outputs: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.LazyLinear(n_outputs))

    monkeypatch.setitem(CLASSIFIERS, "flat", flat)
    train, val = kermany_splits
    with pytest.raises(CxrganError, match=r"^crt: model Sequential has no separable classifier head"):
        train_classifier(train, val, replace(FAST, model="flat"), seed=0, stages=(Main(), DecoupledHead(1)))


def test_posthoc_logit_adjustment_shifts_only_the_output_bias(kermany_splits):
    train, val = kermany_splits
    plain = train_classifier(train, val, FAST, seed=1)
    adjusted = train_classifier(train, val, FAST, seed=1, stages=(Main(), PosthocLogitAdjust(1.0)))
    # 40 normal, 120 pneumonia: offset log(120 / 40) = log 3
    before, after = plain.model.state_dict(), adjusted.model.state_dict()
    for key in before:
        expected = before[key] - math.log(3) if key == "head.2.bias" else before[key]
        torch.testing.assert_close(after[key], expected)
    p_plain, p_adjusted = predict(plain.model, val), predict(adjusted.model, val)
    logit = lambda p: np.log(p) - np.log1p(-p)  # noqa: E731
    np.testing.assert_allclose(logit(p_adjusted), logit(p_plain) - math.log(3), atol=1e-3)


def test_drw_keeps_a_reweighted_model(kermany_splits):
    train, val = kermany_splits
    config = replace(FAST, epochs=3, patience=1)
    result = train_classifier(train, val, config, seed=0, stages=(Main(Loss("ldam"), drw_start_epoch=3),))
    assert [h.get("stage") for h in result.history] == [None, None, "drw"] and result.best_epoch == 3
    with pytest.raises(CxrganError, match=r"^drw: start epoch 4 is after the last epoch 3"):
        train_classifier(train, val, config, seed=0, stages=(Main(Loss("ldam"), drw_start_epoch=4),))


@pytest.mark.parametrize("stages", [
    (Main(Loss("focal")),),
    (Main(Loss("ldam"), drw_start_epoch=1),),
    (Main(Loss(logit_adjust_tau=1.0)),),
    (Main(), PosthocLogitAdjust(1.0)),
    (Main(), DecoupledHead(1)),
], ids=["focal", "ldam-drw", "logit-adjust", "logit-adjust-posthoc", "crt"])
def test_long_tail_stages_train_on_nih_findings(stages, nih_path):
    data = load_npz(nih_path, target="findings")
    train, val = data.split("train"), data.split("val")
    config = replace(FAST, epochs=1, batch_size=64)
    result = train_classifier(train, val, config, seed=0, stages=stages)
    scores = predict(result.model, val)
    assert scores.shape == (len(val), 14) and np.isfinite(scores).all()
    assert np.isfinite(result.best_val_auc) and np.isfinite([h["train_loss"] for h in result.history]).all()
