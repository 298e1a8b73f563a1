"""DCGAN trained per class and conditional DCGAN sampled with alpha, as used for pneumonia oversampling.

* ``dcgan``: Radford, Metz & Chintala (2015), "Unsupervised Representation Learning with Deep Convolutional
  Generative Adversarial Networks". One model per class: it trains on the training images of ``target`` (a class
  of a binary task or a finding of a multi-label one) and every sample carries that label.
* ``cdcgan``: a conditional DCGAN (Mirza & Osindero 2014) trained on all classes, G conditioned by a label
  embedding concatenated to z and D by a projection term (Miyato & Koyama 2018), see ``blocks``. Sun & Li
  (Stanford CS231n poster, "DCGAN and cDCGAN for pneumonia oversampling") sample labels with a hyper-parameter
  alpha = the probability that a sampled label is the healthy class: label 0 in the binary task, the all-zero
  finding vector in the multi-label case; the other labels are drawn from the training label patterns that have
  at least one positive, by their training frequency. K > 1 multi-hot conditioning works the same way.
* ``cgan-labelvec``: the same conditional DCGAN on multi-label finding vectors (Sundaram & Hulkund 2021, "GAN-based
  Data Augmentation for Chest X-ray Classification"); without requested labels it draws whole training label
  vectors by their frequency, so co-occurring findings keep their real proportions.

All three train through the one loop (``training.py``) with the presets below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cxrgan.generators.adversarial import AdversarialModel, GANConfig
from cxrgan.generators.augment import DEFAULT_POLICY
from cxrgan.generators.base import register_generator
from cxrgan.generators.conditioning import AlphaConditioned, LabelVectorConditioned, OneClass

# CPU preset (runs of the balancers, recipes and `cxrgan train-gan` without --full): width 32, bf16 autocast,
# DiffAugment and EMA; a step at batch 64 and 64 px takes about 0.16 s on this 2-core machine. DiffAugment guards
# against a discriminator memorising few images over many passes; in a short run over many images it only slows D
# and G collapses partially. Measured on Kermany 64 px (3:1), 500 steps, width 32: cDCGAN on 1611 images (20 passes)
# pixel std across samples 15 with DiffAugment vs 30 without (real: 32-36); DCGAN on 403 pneumonia images (80
# passes) 30 with DiffAugment. So it applies from 50 passes over the training rows on. The fidelity score every 100
# steps keeps the best model.
# Steps from the quality curves of benchmarks/generator_quality.py (dcgan-alpha's 3:1 split, audited against the
# rows trained on; reference = real train vs real test): the DCGAN on the 402 pneumonias reaches its best at 3,500
# steps, 17.8 CPU-minutes (FD 8.6 at 500 steps -> 0.18, reference 0.17; recall 0.32 -> 0.85; coverage 0.30 ->
# 0.90), and later snapshots are no better; the cDCGAN on all 1,608 rows (same network with a label input) takes
# 18.8 CPU-minutes to 3,500 steps. The label-vector cGAN shares the preset (not measured on its own).
CPU_PRESET: dict[str, Any] = dict(
    steps=3500, ngf=32, ndf=32, batch_size=64, diffaugment=DEFAULT_POLICY, diffaugment_min_passes=50.0,
    ema_decay=0.999, bf16=True, progress=False, log_every=25, checkpoint_every=100, grid_every=100, quality_every=100)
# Full preset (GPUs): the DCGAN paper's widths in fp32; 10,000 steps of 64 images are 100 passes over 6,400 images
# (the earlier epoch-based preset trained 100 epochs).
FULL_PRESET: dict[str, Any] = dict(
    steps=10_000, ngf=64, ndf=64, batch_size=64, diffaugment=DEFAULT_POLICY, diffaugment_min_passes=50.0,
    ema_decay=0.999, bf16=False, progress=True, log_every=100, checkpoint_every=1000, grid_every=1000,
    quality_every=500)


@dataclass(frozen=True)
class DCGANConfig(GANConfig):
    """DCGAN settings: the shared GAN settings plus the class it models."""

    target: str = ""  # class name ("pneumonia"), "0"/"1", or finding name; "" = the positive class of a binary task


@dataclass(frozen=True)
class CDCGANConfig(GANConfig):
    """Conditional DCGAN settings: the shared GAN settings plus conditioning and the default alpha."""

    embed_dim: int = 32  # size of the label embedding concatenated to z in G
    alpha: float = 0.5  # default probability that a sampled label is the healthy class (Sun & Li)

    # alpha only chooses labels at sampling time: one trained model serves every alpha
    RUN_ONLY_FIELDS: ClassVar[frozenset[str]] = GANConfig.RUN_ONLY_FIELDS | {"alpha"}


@dataclass(frozen=True)
class LabelVectorConfig(GANConfig):
    """Label-vector cGAN settings: the shared GAN settings plus the size of the label embedding."""

    embed_dim: int = 32  # size of the label-vector embedding concatenated to z in G


@register_generator("dcgan")
class DCGAN(OneClass, AdversarialModel):
    """Unconditional DCGAN of one class; ``sample`` returns images of that class."""

    config_class = DCGANConfig
    summary = "unconditional DCGAN of one class (--target), Radford et al. 2015"
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET


@register_generator("cdcgan")
class CDCGAN(AlphaConditioned, AdversarialModel):
    """Conditional DCGAN over all classes; sampled labels are healthy with probability ``alpha``."""

    config_class = CDCGANConfig
    summary = "conditional DCGAN of every class, labels healthy with probability alpha (Sun & Li)"
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET


@register_generator("cgan-labelvec")
class LabelVectorCDCGAN(LabelVectorConditioned, AdversarialModel):
    """The conditional DCGAN on finding vectors; unrequested labels are training label vectors drawn by frequency."""

    config_class = LabelVectorConfig
    summary = "conditional DCGAN of 14-finding label vectors, multi-label data (Sundaram & Hulkund 2021)"
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET
