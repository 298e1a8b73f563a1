"""Training curves pinned before the loops were unified: the one loop must give the old losses and weights.

``pinned_curves.json`` holds every step's statistics and the final weight sums recorded with the per-model loops
that ``generators/training.py`` replaced (DCGAN family: ``generators/loop.py``, counting epochs; CycleGAN: its own
``CycleGANTrainer``) at commit e94f322, on the 64 real Kermany images of ``small_train_split`` with one torch thread
(conftest). The configs below are those runs in steps: 48 pneumonia images at batch 16 made 3 steps per epoch
(2 epochs = 6 steps), 64 images 4 (1 epoch = 4 steps), and the CycleGAN's 1 + 1 epochs of 12 steps are 24 steps
with the rate decaying over the second half.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrgan.generators import CDCGAN, DCGAN, CDCGANConfig, CycleGAN, CycleGANConfig, DCGANConfig
from generator_contract import small_train_split

PINNED = json.loads((Path(__file__).parent / "pinned_curves.json").read_text())
TINY = dict(ngf=8, ndf=8, z_dim=16, batch_size=16, progress=False, log_every=1)  # one metrics record per step
CASES = {
    "dcgan": lambda: DCGAN(DCGANConfig(**TINY, steps=6, target="pneumonia", ema_decay=0.9,
                                       diffaugment="translation,cutout,brightness,contrast")),
    "cdcgan": lambda: CDCGAN(CDCGANConfig(**TINY, steps=4, d_norm="spectral", loss="hinge", embed_dim=4)),
    "cyclegan": lambda: CycleGAN(CycleGANConfig(ngf=4, ndf=4, n_blocks=1, steps=24, decay_fraction=0.5, batch_size=4,
                                                bank_size=8, progress=False, log_every=1)),
}


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_curve_matches_the_pinned_one(name, train64):
    model = CASES[name]().fit(train64)
    pinned = PINNED[name]
    assert [r["step"] for r in model.history_] == list(range(1, len(pinned["steps"]) + 1))
    for got, expected in zip(model.history_, pinned["steps"]):
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), (got["step"], key)
    networks = dict(model.networks_.items())
    networks.update({f"{k}_ema": v for k, v in (model.ema_ or {}).items()})
    assert networks.keys() == pinned["weights"].keys()
    for net_name, net in networks.items():
        total = float(sum(t.double().sum() for t in net.state_dict().values() if t.is_floating_point()))
        assert total == pytest.approx(pinned["weights"][net_name], rel=1e-6, abs=1e-6), net_name
