"""CycleGAN on real Kermany images: networks, history pool, LR schedule and batching in the one loop, exact resume,
divergence stop, Figure 1."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cxrgan.data import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators import CycleGAN, CycleGANConfig, Stream, Trainer, load_run, save_translation_figure
from cxrgan.generators.cyclegan_networks import ImagePool, PatchDiscriminator, ResnetGenerator, patch_layers
from generator_contract import CONTRACT_CASES, small_train_split

TINY = dataclasses.replace(CONTRACT_CASES["cyclegan"][0], steps=24, ema_decay=0.0)  # width 4, one block, batch 4


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)  # 16 normal, 48 pneumonia real training images


@pytest.mark.parametrize("size, layers", [(32, 1), (64, 2), (128, 3)])
def test_networks_keep_size_and_patchgan_scales_with_image(size, layers):
    x = torch.rand(2, 1, size, size) * 2 - 1
    out = ResnetGenerator(width=4, n_blocks=2)(x)
    assert out.shape == x.shape and out.abs().max() <= 1
    # receptive field 16 / 34 / 70 px (a quarter to a half of the image): a 14 x 14 map of patch scores
    assert patch_layers(size) == layers
    assert PatchDiscriminator(size, width=4)(x).shape == (2, 1, 14, 14)


def test_history_pool_fills_then_swaps_reproducibly():
    batches = [torch.full((3, 1, 2, 2), float(i)) for i in range(30)]

    def run(seed: int) -> list[float]:
        pool, rng, seen = ImagePool(5), torch.Generator().manual_seed(seed), []
        for b in batches:
            seen += pool.query(b, rng)[:, 0, 0, 0].tolist()
        return seen

    first = run(0)
    assert first[:6] == [0, 0, 0, 1, 1, 1]  # while filling, the new images themselves
    assert any(v < i // 3 for i, v in enumerate(first)), "older images come back from the pool"
    assert first == run(0) and first != run(1)
    assert torch.equal(ImagePool(0).query(batches[3], torch.Generator()), batches[3])


def test_learning_rate_constant_then_linear_to_zero(train64):
    model = CycleGAN(dataclasses.replace(TINY, steps=48))
    model.data_info_ = {"image_size": 64}
    model.build()
    y = train64.labels[:, 0]
    trainer = Trainer(model, [Stream(train64.images[y == 0]), Stream(train64.images[y == 1])])
    assert trainer.steps_per_pass == 12  # 48 pneumonia images / batch 4
    rates = [TINY.lr * model.learning_rate_factor(s) for s in range(48)]
    assert rates[:24] == [TINY.lr] * 24
    assert rates[24] == TINY.lr and np.all(np.diff(rates[24:]) < 0) and rates[-1] == pytest.approx(TINY.lr / 24)
    order = trainer.pass_orders(0)[0]  # 16 normal images cover 48 slots in three fresh permutations
    assert len(order) == 48 and all(sorted(order[i:i + 16]) == list(range(16)) for i in (0, 16, 32))


def _weights(model: CycleGAN) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v for n, net in model.networks_.items() for k, v in net.state_dict().items()}


def test_resume_after_interruption_matches_uninterrupted_run(train64, tmp_path):
    config = dataclasses.replace(TINY, checkpoint_every=5, grid_every=12)
    full = CycleGAN(config, run_dir=tmp_path / "full").fit(train64)

    def interrupt(step: int) -> None:
        if step == 7:
            raise KeyboardInterrupt  # after the step-5 checkpoint (pool full), mid-epoch

    with pytest.raises(KeyboardInterrupt):
        CycleGAN(config, run_dir=tmp_path / "cut", step_hook=interrupt).fit(train64)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 5 and not saved["done"] and saved["training_state"]["pool_a"].shape == (20, 1, 64, 64)
    resumed = CycleGAN(config, run_dir=tmp_path / "cut").fit(train64, resume=True)
    for key, value in _weights(full).items():
        torch.testing.assert_close(_weights(resumed)[key], value, rtol=0, atol=0, msg=key)
    for name in ("metrics.jsonl", "loss_curves.png", "translations.png", "samples/step000024.png"):
        assert (tmp_path / "full" / name).stat().st_size > 0, name
    loaded = load_run(tmp_path / "full", method="cyclegan")
    np.testing.assert_array_equal(loaded.translate(train64.images[:4], 0), full.translate(train64.images[:4], 0))
    with pytest.raises(CxrganError, match="another config"):
        CycleGAN(dataclasses.replace(config, n_blocks=2), run_dir=tmp_path / "cut").fit(train64, resume=True)


def test_translations_change_images_and_cycle_back(train64, tmp_path):
    model = CycleGAN(dataclasses.replace(TINY, steps=36, decay_fraction=1 / 3, ngf=8, ndf=8)).fit(train64)
    normals = train64.images[train64.labels[:, 0] == 0][:6]
    translated, restored = model.cycle(normals, 0)
    assert translated.shape == normals.shape and translated.dtype == np.uint8
    assert not np.array_equal(translated, normals)
    # the cycle loss pulls G_ba(G_ab(x)) toward x: closer than an unrelated real image is
    other = train64.images[train64.labels[:, 0] == 1][:6]
    assert np.abs(restored.astype(float) - normals).mean() < np.abs(other.astype(float) - normals).mean()
    path = save_translation_figure(model, normals[:4], other[:4], tmp_path / "figure1.png")
    from PIL import Image

    assert Image.open(path).size[0] > 200
    with pytest.raises(CxrganError, match=r"\(N, 64, 64\) uint8"):
        model.translate(normals[:, :32, :32], 0)
    with pytest.raises(CxrganError, match="source_class"):
        model.translate(normals, 2)


def test_divergence_stop_and_bad_training_sets(train64, kermany_small):
    with pytest.raises(CxrganError, match="diverged at step 2"):
        CycleGAN(dataclasses.replace(TINY, divergence_d_loss=100.0, divergence_patience=2)).fit(train64)
    normals = train64.subset(np.flatnonzero(train64.labels[:, 0] == 0))
    one_pneumonia = CXRDataset.concat([normals, train64.subset(np.flatnonzero(train64.labels[:, 0] == 1)[:1])])
    with pytest.raises(CxrganError, match="at least 2 training images of class 'pneumonia'"):
        CycleGAN(TINY).fit(one_pneumonia)
    with pytest.raises(CxrganError, match="training split only"):
        CycleGAN(TINY).fit(kermany_small)
    with pytest.raises(CxrganError, match="lambda_cycle"):
        CycleGANConfig(lambda_cycle=-1)
