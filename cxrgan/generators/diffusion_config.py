"""Settings of the latent diffusion models (``cxrgan.generators.diffusion``): the shared two-phase settings, the
one-class, guided and class-conditional variants, and the CPU and full (GPU) presets with the measurements that
set them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from cxrgan.generators.trainer_config import TrainerConfig

PREDICTIONS = ("epsilon", "v_prediction")

# CPU preset: 16 x 16 x 4 latents of a small autoencoder (16/32/64 channels), a 1.4 M-parameter UNet (32/64/64,
# attention at the 4 x 4 level) and bf16. On one thread of this 2-core machine while other jobs ran, an autoencoder
# step (32 images, with its patch discriminator) took about 0.57 CPU-s and a UNet step (64 latents) 0.26 s; a UNet
# step in 64 px pixel space takes ~2.5 s, hence the latent space. The autoencoder's patch-adversarial term is what
# makes its reconstructions usable: after 1,000 steps on the 402 pneumonias of dcgan-alpha's split, held-out
# reconstructions in the audit's feature space had FD 14.9 / recall 0.53 / coverage 0.35 with L1 + KL alone (also
# with 8 latent channels) and FD 1.6 / recall 0.88 / coverage 0.85 with the adversarial term (real: FD 0.18).
# Steps from the quality curves of benchmarks/generator_quality.py (dcgan-alpha's 3:1 split; 1,200 autoencoder
# steps, then the UNet; constant learning rates, so the preset below is the 3,000-step point of the measured run):
# one-class on the 402 pneumonias, FD 1.90 / 1.38 / 1.27 (reference 0.17), recall 0.73 / 0.86 / 0.85, two-sample
# AUC 0.98 at 2,000 / 3,000 / 4,000 steps, memorised 0.005 / 0.005 / 0.015 (reference 0.010); class-conditional on
# all 1,608 rows, FD 6.4 / 1.77 / 1.46, coverage 0.50 / 0.66 / 0.73 and train-on-synthetic AUC 0.925 / 0.930 / 0.936
# (the same classifier on real rows: 0.907). The FD floor is the autoencoder's (held-out reconstructions: FD 1.6). 3,000 steps cost
# about 24 CPU-minutes here (4,000: 30-32), of which the autoencoder is half.
CPU_PRESET: dict[str, Any] = dict(
    steps=3000, autoencoder_fraction=0.4, batch_size=64, autoencoder_batch_size=32, latent_size=16, ema_decay=0.999,
    bf16=True, progress=False, log_every=25, checkpoint_every=250, grid_every=500, quality_every=500)
# Full preset (GPUs): 32 x 32 latents whatever the image size (224 px data: 256 px halved three times) of a wider
# autoencoder (64 / 128 / 128 / 128 channels at 256 px), a 3-level UNet with attention at 16 and 8 px, fp32. The
# autoencoder trains on 16 of each batch's 64 images and decodes 16 samples at a time: its full-resolution
# activations are the largest of the run. Peak allocated memory at 224 px, traced by cxrgan.generators.memory (see
# tests/test_memory.py): an autoencoder step 7.9 GiB (with all 64 images: 30.7 GiB), a UNet step 4.1 GiB, sampling
# 256 guided images 4.5 GiB. The preset as it was (one halving: 112 x 112 latents, attention matrices materialised,
# 64 images per autoencoder step, 256 decoded at once) traced 22 / 166 / 323 GiB.
FULL_PRESET: dict[str, Any] = dict(
    steps=60_000, autoencoder_fraction=0.2, batch_size=64, autoencoder_batch_size=16, ae_width=64,
    ae_multipliers=(1, 2), latent_size=32, unet_width=128, unet_multipliers=(1, 2, 2),
    unet_attention=(False, True, True), unet_res_blocks=2, decode_batch_size=16, ema_decay=0.9999, bf16=False,
    progress=True, log_every=100, checkpoint_every=1000, grid_every=2000, quality_every=2000)


@dataclass(frozen=True)
class DiffusionConfig(TrainerConfig):
    """Settings shared by the latent diffusion models (the loop's settings plus these)."""

    steps: int = 3000  # optimisation steps of both phases
    autoencoder_fraction: float = 0.4  # share of the steps (the first ones) that train the autoencoder
    autoencoder_batch_size: int = 32  # rows of each batch the autoencoder phase trains on (a random subset)
    ae_width: int = 16  # autoencoder channels at full resolution
    ae_multipliers: tuple[int, ...] = (1, 2, 4)  # channels per level / ae_width (the last repeats for deeper levels)
    latent_size: int = 0  # latent side (power of two) reached whatever the image size; 0 = one halving per multiplier
    latent_channels: int = 4  # channels of the latent
    ae_res_blocks: int = 1  # residual blocks per autoencoder level
    kl_weight: float = 1e-6  # weight of the KL term (MONAI's LDM tutorials: 1e-6)
    adversarial_weight: float = 0.01  # weight of the autoencoder's patch-adversarial term (tutorials: 0.01); 0 = none
    adversarial_start: float = 0.2  # share of the autoencoder phase trained before the adversarial term starts
    discriminator_width: int = 32  # channels of the patch discriminator's first layer
    ae_lr: float = 2e-4  # autoencoder Adam learning rate
    unet_width: int = 32  # DiffusionModelUNet channels at the latent's resolution (--gan-width sets it)
    unet_multipliers: tuple[int, ...] = (1, 2, 2)  # UNet channels per level / unet_width
    unet_attention: tuple[bool, ...] = (False, False, True)  # levels with (cross-)attention
    unet_res_blocks: int = 1  # residual blocks per UNet level
    head_channels: int = 32  # channels per attention head (at most; a divisor of each level's channels)
    lr: float = 2e-4  # UNet Adam learning rate
    train_timesteps: int = 1000  # T of the forward process
    beta_start: float = 0.0015  # scaled-linear beta schedule (Rombach et al.; MONAI's LDM tutorials)
    beta_end: float = 0.0195
    prediction_type: str = "v_prediction"  # what the UNet predicts: "v_prediction" (Salimans & Ho) or "epsilon"
    sample_steps: int = 50  # DDIM steps when sampling
    decode_batch_size: int = 64  # latents the autoencoder decodes at once when sampling

    describes: ClassVar[str] = "latent diffusion"
    REPEAT_FIELDS: ClassVar[frozenset[str]] = frozenset({"sample_steps"})  # each DDIM step is one more UNet pass

    @property
    def autoencoder_steps(self) -> int:
        """Steps of the autoencoder phase: at least one, and at least one step is left for the UNet."""
        return min(self.steps - 1, max(1, round(self.autoencoder_fraction * self.steps)))

    @property
    def ae_channels(self) -> tuple[int, ...]:
        return tuple(self.ae_width * m for m in self.ae_multipliers)

    def autoencoder_geometry(self, image_size: int) -> tuple[int, tuple[int, ...]]:
        """(the side the autoencoder works at, its channels per level) for images of ``image_size``: without
        ``latent_size`` the image side and one level per multiplier; with it the smallest side latent_size x 2^k
        (k >= 1) that holds the image, and k + 1 levels, deeper levels repeating the last multiplier."""
        if not self.latent_size:
            return image_size, self.ae_channels
        halvings = max(1, math.ceil(math.log2(image_size / self.latent_size)))
        multipliers = [self.ae_multipliers[min(i, len(self.ae_multipliers) - 1)] for i in range(halvings + 1)]
        return self.latent_size * 2 ** halvings, tuple(self.ae_width * m for m in multipliers)

    @property
    def unet_channels(self) -> tuple[int, ...]:
        return tuple(self.unet_width * m for m in self.unet_multipliers)

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "steps": self.steps >= 2, "autoencoder_fraction": 0 < self.autoencoder_fraction < 1,
                "autoencoder_batch_size": 2 <= self.autoencoder_batch_size <= self.batch_size,
                "ae_width": self.ae_width >= 1, "ae_multipliers": len(self.ae_multipliers) >= 2,
                "latent_size": self.latent_size == 0 or (self.latent_size >= 2 and
                                                         self.latent_size & (self.latent_size - 1) == 0),
                "decode_batch_size": self.decode_batch_size >= 1,
                "latent_channels": self.latent_channels >= 1, "ae_res_blocks": self.ae_res_blocks >= 1,
                "kl_weight": self.kl_weight >= 0, "ae_lr": self.ae_lr > 0, "lr": self.lr > 0,
                "adversarial_weight": self.adversarial_weight >= 0, "adversarial_start": 0 <= self.adversarial_start < 1,
                "discriminator_width": self.discriminator_width >= 1,
                "unet_width": self.unet_width >= 1, "unet_multipliers": len(self.unet_multipliers) >= 2,
                "unet_res_blocks": self.unet_res_blocks >= 1, "head_channels": self.head_channels >= 1,
                "train_timesteps": self.train_timesteps >= 2, "beta_start": 0 < self.beta_start < self.beta_end < 1,
                "prediction_type": self.prediction_type in PREDICTIONS,
                "sample_steps": 1 <= self.sample_steps <= self.train_timesteps}


@dataclass(frozen=True)
class LDMConfig(DiffusionConfig):
    """One-class latent diffusion: the shared settings plus the class it models."""

    target: str = ""  # class name ("pneumonia"), "0"/"1", or finding name; "" = the positive class of a binary task


@dataclass(frozen=True)
class GuidedConfig(DiffusionConfig):
    """Conditional latent diffusion: the shared settings plus classifier-free guidance."""

    cond_dropout: float = 0.1  # fraction of training rows whose labels are replaced by null tokens (Ho & Salimans)
    guidance_scale: float = 2.0  # w of classifier-free guidance when sampling; 1 = conditional only

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "cond_dropout": 0 <= self.cond_dropout < 1,
                "guidance_scale": self.guidance_scale >= 0 and (self.cond_dropout > 0 or self.guidance_scale == 1)}


@dataclass(frozen=True)
class CLDMConfig(GuidedConfig):
    """Class-conditional latent diffusion: guidance settings plus the default alpha of sampled labels."""

    alpha: float = 0.5  # default probability that a sampled label is the healthy class (as the cDCGAN's)

    # alpha only chooses labels at sampling time: one trained model serves every alpha
    RUN_ONLY_FIELDS: ClassVar[frozenset[str]] = GuidedConfig.RUN_ONLY_FIELDS | {"alpha"}
