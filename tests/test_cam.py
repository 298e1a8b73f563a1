"""CAM / Grad-CAM on real Kermany X-rays: maps equal the published formulas, panels of two models on real and
synthetic images, loading a compare run's saved models, and clean errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cxrgan.balance import BalanceContext, make_balancer
from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.errors import CxrganError
from cxrgan.data import from_arrays, save_npz
from cxrgan.evaluate.cam import (cam_command, cam_for_run, cam_images, cam_panel, class_activation_maps,
                                 load_saved_classifier, run_models)
from cxrgan.generators.dcgan import CDCGAN, CDCGANConfig
from cxrgan.runs import write_config

CONFIG = TrainConfig(model="small-cnn", epochs=1, batch_size=16, lr=1e-3, device="cpu", progress=False)


@pytest.fixture(scope="module")
def models(kermany_small):
    """A small CNN trained on the real training rows as they are, and one on the augment-balanced rows."""
    train, val = kermany_small.split("train"), kermany_small.split("val")
    plain = train_classifier(train, val, CONFIG, seed=0).model
    augmented = make_balancer("augment", BalanceContext(random_state=0)).fit_resample(train)
    return {"none": plain, "augment": train_classifier(augmented, val, CONFIG, seed=0).model}


@pytest.fixture(scope="module")
def test_images(kermany_small):
    return kermany_small.split("test").images[:4]


def _normalise(maps: torch.Tensor) -> np.ndarray:
    """Bilinear upsampling to 64 px and per-image min-max scaling, as MONAI does."""
    up = torch.nn.functional.interpolate(maps[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    low, high = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
    return ((up - low) / (high - low)).detach().numpy()


def _input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div(127.5).sub(1.0).unsqueeze(1)


def test_cam_is_the_output_weights_applied_to_the_last_feature_map(models, test_images):
    model = models["none"]
    maps, probabilities = class_activation_maps(model, test_images, method="cam")
    with torch.no_grad():
        features = model.features(_input(test_images))
        expected = _normalise(torch.einsum("c,nchw->nhw", model.head[2].weight[0], features))  # Zhou et al. 2016
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    assert maps.shape == (4, 64, 64) and maps.min() >= 0 and maps.max() <= 1
    as_dataset = from_arrays(test_images, np.zeros((4, 1)), ["pneumonia"])
    np.testing.assert_allclose(probabilities, predict(model, as_dataset)[:, 0], atol=1e-5)


def test_gradcam_weights_channels_by_mean_gradient(models, test_images):
    model = models["augment"]
    maps, _ = class_activation_maps(model, test_images, method="gradcam")
    x = _input(test_images)
    features = model.features(x).detach().requires_grad_(True)
    logits = model.head(features)[:, 0]
    (grads,) = torch.autograd.grad(logits.sum(), features)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # Selvaraju et al. 2017, eq. 1
    expected = _normalise(torch.relu((weights * features).sum(1)))  # eq. 2
    np.testing.assert_allclose(maps, expected, atol=1e-4)
    assert (maps.reshape(4, -1).std(1) > 0.05).all()  # a real X-ray gets a structured, non-constant map
    # MONAI registers hooks; they must land on a copy, never on the caller's model
    assert not model.features._backward_hooks and not model.features._forward_hooks


def test_panel_of_two_models_on_real_and_synthetic_images(models, kermany_small, test_images, tmp_path):
    generator = CDCGAN(CDCGANConfig(ngf=8, ndf=8, z_dim=16, embed_dim=4, batch_size=16, steps=10, progress=False,
                                    grid_every=0)).fit(kermany_small.split("train"))
    synthetic, _ = generator.sample(2, labels=np.array([1.0]), generator=torch.Generator().manual_seed(0))
    path = cam_panel(models, {"real": test_images[:2], "synthetic": synthetic}, tmp_path / "panel.png",
                     target_name="pneumonia")
    with Image.open(path) as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert width > height * 0.5 and height > 4 * 200  # 4 rows (2 real + 2 synthetic) x 3 columns
    colourful = np.abs(pixels[..., 0] - pixels[..., 2]) > 60  # the jet heat maps, absent from gray X-rays
    assert colourful.mean() > 0.05


def test_panel_from_a_compare_runs_saved_models(models, kermany_small, test_images, tmp_path):
    run_dir = tmp_path / "00000-compare-x"
    data = save_npz(kermany_small, tmp_path / "small.npz")
    # config.json as compare writes it: the data file in its run spec
    write_config(run_dir.mkdir() or run_dir, {"run": {"data": [str(data)]}, "target": "labels"}, kind="compare")
    for name, model in models.items():
        (run_dir / "models").mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "config": "small-cnn", "n_outputs": 1},
                   run_dir / "models" / f"{name}-seed0.pt")
    loaded = run_models(run_dir)
    assert list(loaded) == ["augment", "none"]  # no methods in this config: file order
    for name, model in loaded.items():
        np.testing.assert_allclose(class_activation_maps(model, test_images)[0],
                                   class_activation_maps(models[name], test_images)[0], atol=1e-5)
    out = cam_for_run(run_dir, test_images[:2], tmp_path / "cam.png", methods=["none", "augment"])
    assert out.stat().st_size > 10_000
    # the command-line path: a data file's test rows, a sample file of synthetic rows, and a PNG of another size
    samples = save_npz(from_arrays(test_images[:2][:, ::-1].copy(), np.ones((2, 1)), ["pneumonia"],
                                   class_names=["normal", "pneumonia"], synthetic=[True, True]), tmp_path / "s.npz")
    Image.fromarray(np.kron(test_images[0], np.ones((2, 2), np.uint8))).save(tmp_path / "big.png")
    groups = cam_images([data, samples, tmp_path / "big.png"], size=64, n=3)
    assert {k: v.shape for k, v in groups.items()} == {"small (test)": (3, 64, 64), "s (synthetic)": (2, 64, 64),
                                                       "files": (1, 64, 64)}
    assert cam_command(run_dir, [data, samples], tmp_path / "cmd.png", n=2).stat().st_size > 10_000
    with pytest.raises(CxrganError, match="missing.png: no such image file"):
        cam_images([tmp_path / "missing.png"], size=64)
    with pytest.raises(CxrganError, match=r"no saved model for method\(s\) \['smote'\]"):
        run_models(run_dir, ["smote"])
    with pytest.raises(CxrganError, match="no saved models under models/"):
        run_models(tmp_path / "empty")


def test_bad_input_is_a_clear_error(models, test_images, tmp_path):
    with pytest.raises(CxrganError, match="unknown CAM method 'lime'"):
        class_activation_maps(models["none"], test_images, method="lime")
    with pytest.raises(CxrganError, match=r"uint8 array, got \(4, 64, 64\) float32"):
        class_activation_maps(models["none"], test_images.astype(np.float32))
    with pytest.raises(CxrganError, match="target column 3 is out of range"):
        class_activation_maps(models["none"], test_images, target=3)
    no_pool = torch.nn.Module()
    no_pool.features, no_pool.head = torch.nn.Identity(), torch.nn.Linear(3, 1)
    with pytest.raises(CxrganError, match="CAM needs a global-pool"):
        class_activation_maps(no_pool, test_images, method="cam")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CxrganError, match="broken.pt: not a readable cxrgan saved classifier"):
        load_saved_classifier(broken)
