"""FastGAN of one class: a small-data GAN (skip-layer excitation, self-supervised discriminator, DiffAugment, hinge).

Liu, Zhang, Song & Elgammal (2021), "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis" (ICLR); networks in ``fastgan_networks``. It trains on the images of one class, as ``dcgan`` does, through
the one loop with the DCGAN family's sampling and EMA; only the step differs:

* D step: hinge loss on DiffAugmented real and fake images (Lim & Ye 2017; Zhao et al. 2020 as in the paper) plus
  ``reconstruction_weight`` x the L1 reconstruction losses of the discriminator's two decoders on the augmented
  real batch (the quadrant drawn from the step's generator);
* G step: -D(augment(G(z))), through the updated D with its weights frozen.

The hinge generator loss does not saturate when D wins, so there is no divergence stop; the fidelity score keeps the
best generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cxrgan.errors import CxrganError
from cxrgan.generators.adversarial import AdversarialModel, GANConfig
from cxrgan.generators.augment import DEFAULT_POLICY, diff_augment
from cxrgan.generators.base import register_generator
from cxrgan.generators.blocks import init_weights
from cxrgan.generators.conditioning import OneClass
from cxrgan.generators.fastgan_networks import SIZE, FastGANDiscriminator, FastGANGenerator, reconstruction_targets
from cxrgan.generators.seam import Batch, Statistic, StepContext

# CPU preset: widths 16 at 32 px (43 GFLOP per training step, as many as a width-32 DCGAN step: 39, counted with
# torch.utils.flop_counter), bf16, DiffAugment from the first step (the paper trains on 100-1000 images with it;
# diffaugment_min_passes stays 0), EMA. Steps from its quality curve (benchmarks/generator_quality.py, the 402
# training pneumonias of dcgan-alpha's 3:1 split, audited against them; constant learning rates, so a shorter run is
# a prefix of a longer one): at 1,000 steps (8.8 CPU-minutes) FD 0.38 (reference 0.17), recall 0.89, coverage 0.85,
# two-sample AUC 0.93, the lowest of every generator measured; the trainer's own fidelity score then prefers step
# 1,800, which the audit rates worse (FD 1.20, two-sample AUC 0.96), and nothing later is better.
CPU_PRESET: dict[str, Any] = dict(
    steps=1000, ngf=16, ndf=16, batch_size=64, diffaugment=DEFAULT_POLICY, ema_decay=0.999, bf16=True,
    progress=False, log_every=25, checkpoint_every=100, grid_every=500, quality_every=100)
# Full preset (GPUs): twice the widths, fp32, 20,000 steps.
FULL_PRESET: dict[str, Any] = dict(
    steps=20_000, ngf=64, ndf=64, batch_size=64, diffaugment=DEFAULT_POLICY, ema_decay=0.999, bf16=False,
    progress=True, log_every=100, checkpoint_every=1000, grid_every=1000, quality_every=500)


@dataclass(frozen=True)
class FastGANConfig(GANConfig):
    """FastGAN settings: the shared GAN settings (hinge loss, Adam 2e-4, beta1 0.5) plus the class and the
    weight of the discriminator's reconstruction loss."""

    target: str = ""  # class name ("pneumonia"), "0"/"1", or finding name; "" = the positive class of a binary task
    reconstruction_weight: float = 1.0  # weight of the self-supervised reconstruction losses in D's loss
    loss: str = "hinge"  # the paper's loss
    ngf: int = 16  # generator width at 32 px
    ndf: int = 16  # discriminator width at 32 px

    describes: ClassVar[str] = "FastGAN"

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "reconstruction_weight": self.reconstruction_weight >= 0}


@register_generator("fastgan")
class FastGAN(OneClass, AdversarialModel):
    """FastGAN of one class; ``sample`` returns images of that class."""

    config_class = FastGANConfig
    summary = "FastGAN of one class (--target): skip-layer excitation, self-supervised D (Liu et al. 2021)"
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET
    divergence_statistic = None
    image_sizes = (SIZE,)

    def _build_networks(self) -> nn.ModuleDict:
        cfg, size = self.config, int(self.data_info_["image_size"])
        if size != SIZE:
            raise CxrganError(f"fastgan is laid out for {SIZE} px images, got {size} px; prepare the data at {SIZE}")
        G, D = FastGANGenerator(cfg.z_dim, cfg.ngf), FastGANDiscriminator(cfg.ndf)
        init_rng = torch.Generator().manual_seed(cfg.seed + 1)
        init_weights(G, init_rng)
        init_weights(D, init_rng)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        return nn.ModuleDict({"generator": G.to(self.device, memory_format=memory_format),
                              "discriminator": D.to(self.device, memory_format=memory_format)})

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]:
        """One D update (hinge + reconstruction) and one G update (see the module docstring)."""
        (real, _), = batches
        G, D, cfg = self.generator_, self.discriminator_, self.config
        z = torch.randn(len(real), G.z_dim, generator=ctx.rng).to(self.device, non_blocking=True)
        quadrant = int(torch.randint(0, 4, (1,), generator=ctx.rng))
        augment = (lambda x: diff_augment(x, self._policy, ctx.rng)) if self._policy else (lambda x: x)

        with ctx.autocast():
            fake = G(z)
            real_in = augment(real)
            real_logits, whole, part = D(real_in, quadrant)
            fake_logits = D(augment(fake.detach()))
        whole_target, part_target = reconstruction_targets(real_in.float(), quadrant)
        reconstruction = F.l1_loss(whole.float(), whole_target) + F.l1_loss(part.float(), part_target)
        adversarial = self._loss.d_loss(real_logits, fake_logits)
        d_loss = adversarial + cfg.reconstruction_weight * reconstruction
        ctx.check_finite("discriminator", d_loss)
        opt_d = ctx.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        g_loss = self._generator_update(ctx, lambda: D(augment(fake)))
        with torch.no_grad():
            return {"d_loss": adversarial.detach(), "g_loss": g_loss.detach(), "reconstruction": reconstruction.detach(),
                    "real_logit": real_logits.float().mean(), "fake_logit": fake_logits.float().mean()}
