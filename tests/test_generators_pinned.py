"""Training curves pinned before the loops were unified: the same seed must give the same losses and weights.

``pinned_curves.json`` holds every step's statistics and the final weight sums recorded with the per-model loops
(DCGAN family: ``generators/loop.py``; CycleGAN: its own ``CycleGANTrainer``) on the 64 real Kermany images of
``small_train_split``, one torch thread (conftest). Any training loop must reproduce them to 1e-6.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cxrgan.generators import CDCGAN, DCGAN, CDCGANConfig, CycleGAN, CycleGANConfig, DCGANConfig
from cxrgan.generators.cyclegan import CycleGANTrainer
from cxrgan.generators.loop import GANTrainer
from generator_contract import small_train_split

PINNED = json.loads((Path(__file__).parent / "pinned_curves.json").read_text())
TINY = dict(ngf=8, ndf=8, z_dim=16, batch_size=16, progress=False, grid_every=0)
CASES = {
    "dcgan": lambda: DCGAN(DCGANConfig(**TINY, epochs=2, target="pneumonia", ema_decay=0.9,
                                       diffaugment="translation,cutout,brightness,contrast")),
    "cdcgan": lambda: CDCGAN(CDCGANConfig(**TINY, epochs=1, d_norm="spectral", loss="hinge", embed_dim=4)),
    "cyclegan": lambda: CycleGAN(CycleGANConfig(ngf=4, ndf=4, n_blocks=1, epochs=1, decay_epochs=1, batch_size=4,
                                                bank_size=8, progress=False, grid_every=0)),
}


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)


def _networks(model) -> dict[str, torch.nn.Module]:
    if isinstance(model, CycleGAN):
        return dict(model.nets_.items())
    nets = {"generator": model.generator_, "discriminator": model.discriminator_}
    if model.generator_ema_ is not None:
        nets["generator_ema"] = model.generator_ema_
    return nets


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_curve_matches_the_pinned_one(name, train64, monkeypatch):
    recorded: list[dict] = []
    for trainer in (GANTrainer, CycleGANTrainer):
        original = trainer.train_step

        def step(self, *args, _original=original):
            stats = _original(self, *args)
            recorded.append(dict(stats))
            return stats

        monkeypatch.setattr(trainer, "train_step", step)
    model = CASES[name]().fit(train64)
    pinned = PINNED[name]
    assert len(recorded) == len(pinned["steps"])
    for got, expected in zip(recorded, pinned["steps"]):
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    for net_name, net in _networks(model).items():
        total = float(sum(t.double().sum() for t in net.state_dict().values() if t.is_floating_point()))
        assert total == pytest.approx(pinned["weights"][net_name], rel=1e-6, abs=1e-6), net_name
