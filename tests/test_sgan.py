"""Semi-supervised GAN: the three loss terms, virtual batch norm, unlabelled data, the label guard, the matched CNN,
both trained by the generators' one loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrgan.classify.sgan import (MatchedCNN, SemiSupervisedGAN, SGANConfig, SGANDiscriminator, generated_loss,
                                  labeled_loss, strip_labels, unlabeled_loss)
from cxrgan.errors import CxrganError

TINY = SGANConfig(ndf=8, ngf=8, z_dim=16, steps=6, batch_size=8, reference_size=16)


@pytest.fixture(scope="module")
def small(kermany):
    """20 labelled (10 per class), 60 unlabelled-to-be training images and 30 test images, real Kermany at 64 px."""
    rng = np.random.default_rng(0)
    train, test = kermany.split("train"), kermany.split("test")
    y = train.binary_targets()
    labelled = np.concatenate([rng.choice(np.flatnonzero(y == k), 10, replace=False) for k in (0, 1)])
    rest = rng.choice(np.setdiff1d(np.arange(len(train)), labelled), 60, replace=False)
    return train.subset(labelled), train.subset(rest), test.subset(rng.choice(len(test), 30, replace=False))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_loss_terms_match_the_formulas_on_hand_made_logits():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 1.5, -2.0], [-0.3, 0.2, 3.0]])
    y = np.array([0, 1, 1])
    p = _softmax(logits)
    p_real = _softmax(logits[:, :2])  # p(y | x, y < K+1)
    expected_labeled = -np.mean(np.log(p_real[np.arange(3), y]))
    expected_unlabeled = -np.mean(np.log(1.0 - p[:, 2]))
    expected_generated = -np.mean(np.log(p[:, 2]))
    t = torch.tensor(logits, dtype=torch.float64)
    assert labeled_loss(t, torch.tensor(y)).item() == pytest.approx(expected_labeled, rel=1e-12)
    assert unlabeled_loss(t).item() == pytest.approx(expected_unlabeled, rel=1e-12)
    assert generated_loss(t).item() == pytest.approx(expected_generated, rel=1e-12)
    # the generated logit does not enter L_labeled; it does enter the other two
    shifted = t.clone()
    shifted[:, 2] += 5.0
    assert labeled_loss(shifted, torch.tensor(y)).item() == pytest.approx(expected_labeled, rel=1e-12)
    assert unlabeled_loss(shifted).item() > expected_unlabeled
    assert generated_loss(shifted).item() < expected_generated


def test_virtual_batch_norm_makes_predictions_independent_of_the_batch(small):
    labelled, _, test = small
    model = MatchedCNN(TINY).fit(labelled, random_state=0)
    full = model.predict_proba(test)
    parts = np.concatenate([model.predict_proba(test.subset(np.arange(i, min(i + 7, len(test)))))
                            for i in range(0, len(test), 7)])
    np.testing.assert_allclose(full, parts, atol=1e-5)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, atol=1e-5)
    assert full.shape == (len(test), 2)


def test_virtual_batch_norm_needs_a_reference_pass():
    net = SGANDiscriminator(32, 2, ndf=8, norm="virtual")
    with pytest.raises(CxrganError, match="reference"):
        net(torch.zeros(2, 1, 32, 32))


def test_unlabelled_data_changes_the_discriminator(small):
    labelled, unlabelled, test = small
    unlabelled = strip_labels(unlabelled)
    alone = SemiSupervisedGAN(TINY).fit(labelled, random_state=3)
    with_unlabelled = SemiSupervisedGAN(TINY).fit(labelled, [unlabelled], random_state=3)
    assert alone.n_unlabeled_ == 0 and with_unlabelled.n_unlabeled_ == len(unlabelled)
    first_conv = lambda m: m.discriminator_.convs[0].weight.detach()  # noqa: E731
    assert not torch.allclose(first_conv(alone), first_conv(with_unlabelled))
    assert np.abs(alone.predict_proba(test) - with_unlabelled.predict_proba(test)).max() > 1e-4
    # L_unlabeled alone sends gradient into every conv layer of the classifier
    net = with_unlabelled.discriminator_
    net.zero_grad()
    x = torch.from_numpy(unlabelled.images[:8, ::2, ::2].astype(np.float32) / 127.5 - 1)[:, None]
    net.set_reference(with_unlabelled.reference_)
    unlabeled_loss(net(x)).backward()
    assert all(conv.weight.grad.abs().sum() > 0 for conv in net.convs)


def test_unlabelled_data_with_labels_is_refused(small):
    labelled, unlabelled, _ = small
    with pytest.raises(CxrganError, match="carries 60 known labels"):
        SemiSupervisedGAN(TINY).fit(labelled, [unlabelled], random_state=0)
    stripped = strip_labels(unlabelled)
    assert np.isnan(stripped.labels).all() and not np.isnan(unlabelled.labels).any()  # the original is untouched
    np.testing.assert_array_equal(stripped.images, unlabelled.images)


@pytest.mark.parametrize("norm,generator_loss", [("virtual", "feature-matching"), ("batch", "plain")])
def test_sgan_trains_predicts_and_samples(small, norm, generator_loss):
    labelled, unlabelled, test = small
    config = SGANConfig(ndf=8, ngf=8, z_dim=16, steps=4, batch_size=8, reference_size=16, norm=norm,
                        generator_loss=generator_loss)
    model = SemiSupervisedGAN(config).fit(labelled, [strip_labels(unlabelled)], random_state=1)
    proba = model.predict_proba(test)
    assert proba.shape == (len(test), 2) and np.isfinite(proba).all()
    images, labels = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert images.shape == (5, 32, 32) and images.dtype == np.uint8 and np.isnan(labels).all()
    np.testing.assert_array_equal(images, model.sample(5, generator=torch.Generator().manual_seed(0))[0])
    assert {"loss_labeled", "loss_unlabeled", "loss_generated", "loss_g"} <= set(model.history_[-1])
    again = SemiSupervisedGAN(config).fit(labelled, [strip_labels(unlabelled)], random_state=1)
    np.testing.assert_allclose(again.predict_proba(test), proba, atol=1e-6)  # a function of random_state


def test_matched_cnn_has_the_discriminator_layers_and_parameter_count(small):
    labelled, _, _ = small
    cnn = MatchedCNN(TINY).fit(labelled, random_state=0)
    sgan = SemiSupervisedGAN(TINY).fit(labelled, random_state=0)
    assert cnn.n_parameters() == sgan.n_parameters()
    assert [tuple(p.shape) for p in cnn.discriminator_.parameters()] == \
        [tuple(p.shape) for p in sgan.discriminator_.parameters()]
    assert not hasattr(cnn, "generator_")


def test_bad_inputs_name_the_problem(small):
    labelled, _, _ = small
    one_class = labelled.subset(np.flatnonzero(labelled.binary_targets() == 0))
    with pytest.raises(CxrganError, match="single class"):
        MatchedCNN(TINY).fit(one_class)
    with pytest.raises(CxrganError, match="generator loss"):
        SemiSupervisedGAN(SGANConfig(generator_loss="wasserstein"))
    with pytest.raises(CxrganError, match="not fitted"):
        SemiSupervisedGAN(TINY).predict_proba(labelled)


def test_sgan_and_cnn_train_through_the_one_loop_and_resume(small, tmp_path):
    from cxrgan.generators import GENERATORS

    labelled, unlabelled, test = small
    assert GENERATORS["sgan"] is SemiSupervisedGAN
    config = SGANConfig(ndf=8, ngf=8, z_dim=16, steps=6, batch_size=8, reference_size=16, checkpoint_every=2,
                        log_every=2)
    full = SemiSupervisedGAN(config, run_dir=tmp_path / "full").fit(labelled, [strip_labels(unlabelled)], random_state=2)
    assert [r["step"] for r in full.history_] == [2, 4, 6]

    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        SemiSupervisedGAN(config, run_dir=tmp_path / "cut", step_hook=interrupt).fit(
            labelled, [strip_labels(unlabelled)], random_state=2)
    resumed = SemiSupervisedGAN(config, run_dir=tmp_path / "cut").fit(labelled, [strip_labels(unlabelled)],
                                                                        random_state=2, resume=True)
    np.testing.assert_array_equal(resumed.predict_proba(test), full.predict_proba(test))
    cnn = MatchedCNN(config, run_dir=tmp_path / "cnn").fit(labelled, random_state=2)
    assert (tmp_path / "cnn" / "checkpoint.pt").exists() and cnn.history_[-1]["step"] == 6
    assert set(cnn.history_[-1]) == {"loss_labeled", "step", "seconds"}
