"""Every recipe's ``--full`` configuration (DenseNet-121 or ResNet-18 at 224 px, the paper-size generator presets)
runs end to end on a few real images for two generator steps and one epoch, so a GPU user meets no shape or
configuration error after hours of setup.

What differs from a GPU run: the data (per recipe, the fewest real images its generators train on, 8-36
training rows resized to 224 px, split 5:4 or 1:1 where the recipes would take 3:1, and 2-6 held-out rows per
class: the classifier rows dominate, a DenseNet-121 / ResNet-18 step costs 0.2-0.5 s an image here), ``--gan-steps
2``, ``--epochs 1``, one seed, the methods (one baseline, every generator the recipe trains and the controls it
adds; no cheap fixes, which change only the rows or the loss of the same classifier), and the GAN width
(``--gan-width 8`` instead of 64: at 256 px one paper-width DCGAN step on 16 images takes about a minute on a
2-core CPU). Width multiplies channel counts uniformly; image sizes, depths, batch sizes, EMA, DiffAugment, quality
tracking, CycleGAN's nine residual blocks and batch of one, and every classifier setting are the ``--full`` ones.
``test_paper_width_networks_take_full_size_images`` runs the paper widths themselves on one batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from cxrgan.cli import main
from cxrgan.data import CXRDataset, load_npz, save_npz
from cxrgan.data.images import resize_stack
from _data_helpers import class_subset

pytestmark = pytest.mark.slow
SIZE = 224
COMMON = ["--full", "--seeds", "1", "--gan-steps", "2", "--device", "cpu", "--no-progress"]
NARROW = ["--gan-width", "8"]  # the DCGAN-family and CycleGAN recipes; the SGAN's paper width is cheap at 32 px


def _subset(dataset: CXRDataset, counts: dict[str, tuple[int, int]], out: Path, finding: str | None = None) -> str:
    """``counts[split]`` = (negatives, positives) real rows of ``dataset`` (of ``finding`` for findings data), at
    224 px."""
    rows = class_subset(dataset, counts, 0 if finding is None else dataset.label_names.index(finding))
    return str(save_npz(CXRDataset(resize_stack(rows.images, SIZE), rows.labels, rows.label_names, rows.meta,
                                   rows.class_names), out))


# Held-out rows every run needs: a validation AUC and a Youden threshold (both classes), a test AUC.
HELD_OUT = {"val": (2, 2), "test": (2, 2)}


@pytest.fixture(scope="module")
def files(data_dir, tmp_path_factory) -> dict[str, str]:
    """Each recipe's own real subset at 224 px, as small as its generators allow: a DenseNet-121 / ResNet-18 step
    at 224 px costs about 0.2-0.5 s an image on one core, so the classifier rows dominate and scale with the rows."""
    folder = tmp_path_factory.mktemp("full224")
    kermany = load_npz(data_dir / "kermany_pneumonia" / "kermany_pneumonia_128.npz")
    nih = load_npz(data_dir / "nih_pneumonia" / "nih_pneumonia_128.npz")
    findings = load_npz(data_dir / "nih_chestxray14_subset" / "nih_chestxray14_subset_64.npz", target="findings")
    return {
        # the SGAN recipes (a second or two each at 32 px): 16 labelled rows per class for --per-class 16
        "binary": _subset(kermany, {"train": (32, 16), "val": (4, 4), "test": (6, 6)}, folder / "kermany_224.npz"),
        "second": _subset(nih, {"train": (16, 16), "val": (4, 4), "test": (6, 6)}, folder / "nih_pneumonia_224.npz"),
        # dcgan-alpha: the cDCGAN needs 16 rows per class and the 5:4 imbalance 4 synthetic pneumonias; the audit
        # needs 6 test rows per class (its k = 5 nearest neighbours)
        "alpha": _subset(kermany, {"train": (20, 16), "val": (2, 2), "test": (6, 6)}, folder / "alpha_224.npz"),
        # cyclegan-complement: its CycleGAN trains on these 8 rows and the extra file's 8 (16 in all, 2+ per class)
        "cyclegan": _subset(kermany, {"train": (4, 4), **HELD_OUT}, folder / "cyclegan_224.npz"),
        "cyclegan_extra": _subset(nih, {"train": (4, 4), **HELD_OUT}, folder / "cyclegan_extra_224.npz"),
        # cgan-regimes: the label-vector cGAN trains on all 18 rows; Effusion (6 of 18) is below --threshold 0.5
        "regimes": _subset(findings, {"train": (12, 6), **HELD_OUT}, folder / "regimes_224.npz", finding="Effusion"),
        # dcgan-rare-findings: its DCGAN needs 16 Effusion rows; 18 others make it the rarer side (2 images added)
        "rare": _subset(findings, {"train": (18, 16), **HELD_OUT}, folder / "rare_224.npz", finding="Effusion"),
    }


RECIPES = {
    "dcgan-alpha": (["--data", "{alpha}", "--imbalance", "5:4", "--methods", "none,cdcgan-a0.5", "--epochs", "1",
                     "--tstr-images", "2"], "resnet18", 5),  # 2 rows, the TSTR of real and cDCGAN, its audit
    "cyclegan-complement": (["--data", "{cyclegan}", "--imbalance", "1:1", "--gan-extra-data", "{cyclegan_extra}",
                             "--methods", "none,cyclegan-complement-extra", "--epochs", "1", "--fidelity-images", "2"],
                            "densenet121", 3),  # 2 rows and the CycleGAN's fidelity
    "cgan-regimes": (["--data", "{regimes}", "--findings", "Effusion", "--threshold", "0.5", "--regimes", "1",
                      "--methods", "none,gan", "--epochs", "1"], "densenet121", 2),
    # baseline, DCGAN and its count-matched rare-copies; no cheap fix: ml-ros / ldam-drw only reorder rows or change
    # the loss on the logits, the same DenseNet-121 at 224 px as the three rows here (test_multilabel_recipes runs them)
    "dcgan-rare-findings": (["--data", "{rare}", "--findings", "Effusion", "--cheap-fixes", "", "--epochs", "1"],
                            "densenet121", 3),
    "sgan-scarcity": (["--data", "{binary}", "--per-class", "16"], None, 2),
    "sgan-domain": (["--data", "{binary}", "--second-data", "{second}"], None, 5),
}


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_every_recipe_runs_its_full_configuration_end_to_end(recipe, files, tmp_path, capsys):
    flags, classifier, cells = RECIPES[recipe]
    started = time.perf_counter()
    code = main(["recipe", recipe, *[f.format(**files) for f in flags], *COMMON,
                 *([] if recipe.startswith("sgan") else NARROW), "--out", str(tmp_path)])
    seconds = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code == 0, err
    run_dir = next(tmp_path.iterdir())
    assert len(list((run_dir / "records").glob("*.json"))) == cells and (run_dir / "report.html").is_file()
    config = json.loads((run_dir / "config.json").read_text())["config"]
    config = config.get("compare", config)  # a paper recipe's comparison holds its classifier
    if classifier:
        assert config["train"]["model"] == classifier and config["train"]["epochs"] == 1
    generators = [json.loads(p.read_text()) for p in run_dir.rglob("status.json")]
    assert recipe.startswith("sgan") or generators  # every generator recipe trained (and cached) its generators
    for status in generators:
        assert status["done"] and status["step"] == 2 and status["config"]["ngf"] == 8
        assert status["config"]["batch_size"] == (1 if status["method"] == "cyclegan" else 64)  # the full presets
    with capsys.disabled():
        print(f"\n--full {recipe}: {seconds:.0f} s")


def test_paper_width_networks_take_full_size_images():
    """The paper widths of the --full presets on one small batch at the --full sizes (224 px data; DCGAN-family
    networks at 256 px), forward and backward."""
    from cxrgan.generators.adversarial import network_size
    from cxrgan.generators.blocks import DCGANDiscriminator, DCGANGenerator
    from cxrgan.generators.cyclegan import FULL_PRESET as CYCLEGAN_FULL
    from cxrgan.generators.cyclegan_networks import PatchDiscriminator, ResnetGenerator
    from cxrgan.generators.dcgan import FULL_PRESET as DCGAN_FULL

    size = network_size(SIZE)
    generator = DCGANGenerator(size, 100, DCGAN_FULL["ngf"], n_labels=1)
    discriminator = DCGANDiscriminator(size, DCGAN_FULL["ndf"], n_labels=1)
    fake = generator(torch.randn(2, 100), torch.ones(2, 1))
    assert fake.shape == (2, 1, size, size)
    discriminator(fake, torch.ones(2, 1)).sum().backward()
    translator = ResnetGenerator(CYCLEGAN_FULL["ngf"], CYCLEGAN_FULL["n_blocks"])
    critic = PatchDiscriminator(SIZE, CYCLEGAN_FULL["ndf"])
    image = torch.randn(1, 1, SIZE, SIZE)
    translated = translator(image)
    assert translated.shape == image.shape
    critic(translated).mean().backward()
