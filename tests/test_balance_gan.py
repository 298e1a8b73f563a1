"""GAN oversampling balancers on real Kermany images: counts reach the target, rows flagged, train-only, run dirs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from balancer_contract import check_balancer_contract

from cxrgan.balance import BALANCERS, BalanceContext, make_balancer
from cxrgan.balance.gan import GANOversampler
from cxrgan.errors import CxrganError
from cxrgan.generators import DCGAN, CDCGANConfig, DCGANConfig, GeneratorSettings, train_gan
from cxrgan.generators.cache import entry_name
from cxrgan.data import save_npz
from generator_contract import TINY



@pytest.fixture(scope="module")
def pneumonia_minority(kermany):
    """88 real training images, 64 normal : 24 pneumonia (the paper's direction of imbalance)."""
    train = kermany.split("train")
    y = train.binary_targets()
    return train.subset(np.sort(np.concatenate([np.flatnonzero(y == 0)[:64], np.flatnonzero(y == 1)[:24]])))


def _dcgan(seed: int = 0, **kwargs) -> GANOversampler:
    return GANOversampler("dcgan", DCGANConfig(**TINY), random_state=seed, **kwargs)


def _cdcgan(alpha: float, seed: int = 0, **kwargs) -> GANOversampler:
    return GANOversampler("cdcgan", CDCGANConfig(embed_dim=4, **TINY), alpha=alpha, random_state=seed,
                          name=f"cdcgan-a{alpha:g}", **kwargs)


def test_factories_registered_with_cpu_defaults():
    for name, alpha in (("dcgan", None), ("cdcgan", 0.5), ("cdcgan-a0.25", 0.25), ("cdcgan-a0.5", 0.5), ("cdcgan-a0.75", 0.75)):
        assert name in BALANCERS
        balancer = make_balancer(name, BalanceContext(random_state=3))
        assert balancer.name == name and balancer.random_state == 3
        assert balancer.config.ngf == DCGAN.cpu_preset["ngf"] and balancer.config.steps == DCGAN.cpu_preset["steps"]
        if alpha is not None:
            assert balancer.alpha == alpha
    full = make_balancer("dcgan", BalanceContext(random_state=0, generators=GeneratorSettings(full=True)))
    assert full.config.ngf == 64 and full.config.steps == DCGAN.full_preset["steps"]
    typed = make_balancer("cdcgan-a0.25", BalanceContext(0, generators=GeneratorSettings(steps=40, width=8)))
    assert (typed.config.steps, typed.config.ngf, typed.config.ndf, typed.config.alpha) == (40, 8, 8, 0.25)


def test_dcgan_balances_with_synthetic_minority(pneumonia_minority):
    out = check_balancer_contract(_dcgan(0), pneumonia_minority, expect="balanced", reseeded=_dcgan(1))
    added = out.subset(out.synthetic)
    assert len(added) == 40 and (added.labels[:, 0] == 1).all()
    assert set(added.meta["source"]) == {"dcgan"} and set(added.meta["split"]) == {"train"}


@pytest.mark.parametrize("alpha, healthy, diseased", [(0.0, 0, 40), (0.25, 13, 40), (0.5, 40, 40), (0.75, 120, 40)])
def test_cdcgan_alpha_decides_the_label_mix(pneumonia_minority, alpha, healthy, diseased):
    balancer = _cdcgan(alpha)
    out = check_balancer_contract(balancer, pneumonia_minority, expect="balanced" if alpha == 0 else "any")
    added = out.subset(out.synthetic)
    assert balancer.synthetic_counts_ == {"normal": healthy, "pneumonia": diseased}
    assert int((added.labels[:, 0] == 0).sum()) == healthy and int((added.labels[:, 0] == 1).sum()) == diseased
    assert (out.binary_targets() == 1).sum() == 64  # the minority reaches the majority's count


def test_explicit_count_and_ratio(pneumonia_minority):
    assert _dcgan(n_synthetic=7).fit_resample(pneumonia_minority).synthetic.sum() == 7
    half = _dcgan(ratio=0.5).fit_resample(pneumonia_minority)
    assert (half.binary_targets() == 1).sum() == 32
    counts = _cdcgan(0.25, n_synthetic=20)
    counts.fit_resample(pneumonia_minority)
    assert counts.synthetic_counts_ == {"normal": 5, "pneumonia": 15}


def test_alphas_share_one_cached_generator(pneumonia_minority, tmp_path):
    out = _cdcgan(0.25, work_dir=tmp_path).fit_resample(pneumonia_minority)
    assert _cdcgan(0.25).planned_rows(pneumonia_minority) == len(out)  # planned without training
    cached = list((tmp_path / "gan").glob("cdcgan-*/checkpoint.pt"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    _cdcgan(0.75, work_dir=tmp_path).fit_resample(pneumonia_minority)
    assert list((tmp_path / "gan").glob("cdcgan-*/checkpoint.pt")) == cached
    assert cached[0].stat().st_mtime_ns == stamp, "the second alpha retrained instead of loading"
    _cdcgan(0.25, seed=1, work_dir=tmp_path).fit_resample(pneumonia_minority)
    assert len(list((tmp_path / "gan").glob("cdcgan-*"))) == 2  # another seed trains its own
    # what the balancers declare is what the cache holds: the dry run, the audits and the cache agree
    declared = {entry_name(spec, b.generator_rows(pneumonia_minority)) for b in (_cdcgan(0.75), _cdcgan(0.25, seed=1))
                for spec in b.generators(pneumonia_minority)}
    assert declared == {p.name for p in (tmp_path / "gan").iterdir()}


def test_refuses_other_splits_and_too_few_minority_images(kermany_small, pneumonia_minority):
    with pytest.raises(CxrganError, match="training split only"):
        _dcgan().fit_resample(kermany_small)
    y = pneumonia_minority.binary_targets()
    few = pneumonia_minority.subset(np.sort(np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:9]])))
    with pytest.raises(CxrganError, match="class 'pneumonia' has 9 training images"):
        _dcgan().fit_resample(few)


def test_loads_run_dir_and_refuses_mismatches(pneumonia_minority, tmp_path):
    data = tmp_path / "train.npz"
    save_npz(pneumonia_minority, data)
    run_dir = train_gan("dcgan", data, tmp_path / "runs", DCGANConfig(**TINY))
    out = _dcgan(run_dir=run_dir).fit_resample(pneumonia_minority)
    assert out.synthetic.sum() == 40
    with pytest.raises(CxrganError, match="is a 'dcgan' run, expected a 'cdcgan' run"):
        _cdcgan(0.5, run_dir=run_dir).fit_resample(pneumonia_minority)
    small = replace(pneumonia_minority, images=np.ascontiguousarray(pneumonia_minority.images[:, ::2, ::2]))
    with pytest.raises(CxrganError, match="makes 64 px images but the data are 32 px"):
        _dcgan(run_dir=run_dir).fit_resample(small)
    normal_run = train_gan("dcgan", data, tmp_path / "runs", DCGANConfig(**TINY, target="normal"))
    with pytest.raises(CxrganError, match="models 'normal' but the minority class is 'pneumonia'"):
        _dcgan(run_dir=normal_run).fit_resample(pneumonia_minority)


def test_steps_are_steps_and_diffaugment_needs_enough_passes(pneumonia_minority):
    config = DCGANConfig(**{**TINY, "steps": 7}, diffaugment="translation", diffaugment_min_passes=50)
    balancer = GANOversampler("dcgan", config)
    balancer.fit_resample(pneumonia_minority)  # 24 pneumonia images at batch 16: 7 steps show each 4.7 times
    assert balancer.model_.config.steps == 7 and balancer.model_.history_[-1]["step"] == 7
    assert balancer.model_.data_info_["diffaugment"] == ""  # too short for DiffAugment to help
    longer = DCGAN(replace(balancer.config_for(1), steps=80))  # 80 x 16 / 24 = 53 passes
    assert longer._training_streams(pneumonia_minority)[1]["diffaugment"] == "translation"
