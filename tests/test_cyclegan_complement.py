"""CycleGAN complement balancer on real Kermany images: both modes under the balancer contract, extra data, factories."""

from __future__ import annotations

import numpy as np
import pytest
from balancer_contract import check_balancer_contract

from cxrgan.balance import BALANCERS, BalanceContext, make_balancer
from cxrgan.balance.complement import CycleGANComplement
from cxrgan.data import load_npz, save_npz
from cxrgan.errors import CxrganError
from cxrgan.generators import CycleGAN, GeneratorSettings
from generator_contract import CONTRACT_CASES, small_train_split

TINY = CONTRACT_CASES["cyclegan"][0]  # width 4, one block, batch 4, 8 steps


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)  # 16 normal, 48 pneumonia real training images


def _balancer(mode: str, seed: int = 0, **kwargs) -> CycleGANComplement:
    return CycleGANComplement(TINY, mode=mode, random_state=seed, name=f"cyclegan-{mode}", **kwargs)


def test_complement_mode_doubles_rows_with_flipped_labels(train64):
    out = check_balancer_contract(_balancer("complement"), train64, expect="balanced", reseeded=_balancer("complement", 1))
    assert len(out) == 2 * len(train64) and out.synthetic.sum() == len(train64)
    twins = out.subset(np.flatnonzero(out.synthetic))
    np.testing.assert_array_equal(twins.labels, 1 - train64.labels)  # twin i is the complement of row i
    assert set(twins.meta["source"]) == {"cyclegan-complement"}
    assert list(twins.meta["patient_id"]) == list(train64.meta["patient_id"].astype(str))


def test_minority_mode_translates_majority_images_until_balanced(train64):
    balancer = _balancer("minority")
    out = check_balancer_contract(balancer, train64, expect="balanced", reseeded=_balancer("minority", 1))
    assert len(out) == 96 and out.synthetic.sum() == 32  # 48 pneumonia vs 16 normal: 32 translated to normal
    assert (out.labels[out.synthetic, 0] == 0).all()
    assert (train64.labels[balancer.source_rows_, 0] == 1).all() and len(set(balancer.source_rows_)) == 32


def test_extra_data_joins_the_cyclegan_domains_only(train64, nih_path, tmp_path):
    nih = load_npz(nih_path)  # normal / abnormal: 24 of each from its training split, plus val rows to be ignored
    y = nih.labels[:, 0]
    train_rows = [np.flatnonzero((y == v) & (nih.meta["split"] == "train").to_numpy())[:24] for v in (0, 1)]
    extra_path = save_npz(nih.subset(np.sort(np.concatenate([*train_rows, np.flatnonzero(nih.meta["split"] == "val")[:10]]))),
                          tmp_path / "nih_extra.npz")
    balancer = _balancer("complement", extra_data=extra_path, work_dir=tmp_path)
    out = balancer.fit_resample(train64)
    assert len(out) == 2 * len(train64)  # the classifier's rows: the training split and its twins only
    assert balancer.model_.data_info_["n_train"] == [16 + 24, 48 + 24]
    assert balancer.model_.data_info_["class_names"] == ["normal", "pneumonia"]
    cached = list((tmp_path / "gan").iterdir())
    assert len(cached) == 1 and (cached[0] / "checkpoint.pt").exists()
    again = _balancer("complement", extra_data=extra_path, work_dir=tmp_path).fit_resample(train64)  # from the cache
    np.testing.assert_array_equal(again.images, out.images)
    with pytest.raises(CxrganError, match="not found"):
        _balancer("complement", extra_data=tmp_path / "missing.npz").fit_resample(train64)


def test_factories_registered_with_cpu_defaults():
    for name in ("cyclegan-complement", "cyclegan-minority", "cyclegan-complement-extra"):
        assert name in BALANCERS
    balancer = make_balancer("cyclegan-complement", BalanceContext(random_state=2, generators=GeneratorSettings(width=8)))
    assert balancer.config.ngf == balancer.config.ndf == 8 and balancer.random_state == 2
    assert balancer.config.steps == CycleGAN.cpu_preset["steps"] == 1000 and balancer.config.decay_fraction == 0.5
    assert balancer.config.bf16 and balancer.mode == "complement"
    assert make_balancer("cyclegan-minority", BalanceContext(0, generators=GeneratorSettings(full=True))).config.n_blocks == 9
    with pytest.raises(CxrganError, match="--gan-extra-data"):
        make_balancer("cyclegan-complement-extra", BalanceContext(0))
    extra = make_balancer("cyclegan-complement-extra", BalanceContext(0, extra_data="nih.npz"))
    assert extra.extra_data.name == "nih.npz"
    with pytest.raises(CxrganError, match="--gan-steps must be at least 1"):
        GeneratorSettings(steps=0)
    config = make_balancer("cyclegan-complement", BalanceContext(5, generators=GeneratorSettings(steps=20))).config_for()
    assert (config.steps, config.seed) == (20, 5)  # steps end to end: no conversion to epochs
