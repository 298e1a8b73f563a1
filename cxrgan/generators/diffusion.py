"""Latent diffusion models of one class, of alpha-drawn classes and of label vectors, trained in two phases in one loop.

Rombach, Blattmann, Lorenz, Esser & Ommer (2022), "High-Resolution Image Synthesis with Latent Diffusion Models",
with MONAI's generative components (Pinaya et al. 2022, "Brain Imaging Generation with Latent Diffusion Models"):

1. the first ``autoencoder_fraction`` of the steps train a KL-regularised autoencoder (MONAI ``AutoencoderKL``) on
   the images: L1 reconstruction + ``kl_weight`` x KL(q(z|x) || N(0, I)) + ``adversarial_weight`` x a patch-
   adversarial term (MONAI's ``PatchDiscriminator``; the LDM paper's KL-reg autoencoder without its perceptual term,
   which needs a pretrained network);
2. the remaining steps freeze it and train a ``DiffusionModelUNet`` on its latents, scaled to unit variance by the
   standard deviation of the first latent batch (the LDM paper's rescaling, appendix G; under torchrun, of the
   global batch), with the DDPM objective of
   Ho, Jain & Abbeel (2020), "Denoising Diffusion Probabilistic Models", eq. 14, with the velocity
   v = sqrt(a_t) eps - sqrt(1 - a_t) z_0 as the target by default (Salimans & Ho 2022, "Progressive Distillation
   for Fast Sampling of Diffusion Models", sec. 4): in short CPU runs an eps-predicting UNet is still inaccurate at
   the highest noise levels, where x_0 = (z_t - sqrt(1 - a_t) eps) / sqrt(a_t) multiplies its error by up to 70, and
   DDIM's latents drifted to 9x their scale (measured on the conditioning fixture of tests/test_diffusion.py, 200
   UNet steps); with v the samples kept unit scale and the conditioned brightness. The EMA of the UNet starts with
   this phase (``ema_age``), and the fidelity score waits for it (``samples_at``).

Sizes. With ``latent_size`` set (both presets) the autoencoder halves the image as often as it takes to reach that
latent side, whatever the image size: images are resized to the smallest side latent_size x 2^k (k >= 1) that holds
them (224 px -> 256 px with k = 3 for the full preset's 32 x 32 latents) and samples are resized back, as the GANs
do. The UNet's attention runs through PyTorch's fused ``scaled_dot_product_attention`` (MONAI's
``use_flash_attention``), which never materialises the (H W)^2 attention matrix: flash or memory-efficient kernels
on CUDA, a flash kernel on the CPU. Sampling denoises ``batch_size`` latents at a time and decodes them in chunks of
``decode_batch_size``, where the decoder's full-resolution activations would otherwise dominate.

Sampling runs DDIM (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models", eq. 12 with eta = 0: given the
initial noise, deterministic) for ``sample_steps`` steps and decodes the latents. The conditional models use
classifier-free guidance (Ho & Salimans 2022): trained with labels dropped for ``cond_dropout`` of the rows, sampled
with eps = eps(z, null) + w (eps(z, y) - eps(z, null)), w = ``guidance_scale`` (1 = conditional only).

* ``ldm``: one class, unconditional (rows and labels as ``dcgan``);
* ``cldm``: every class, labels healthy with probability alpha when not requested (as ``cdcgan``);
* ``ldm-labelvec``: multi-label finding vectors, unrequested labels drawn as training vectors (as ``cgan-labelvec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import math

import numpy as np
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from cxrgan import distributed
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.images import resize_stack
from cxrgan.data.transforms import tensor_to_images
from cxrgan.device import autocast
from cxrgan.errors import CxrganError
from cxrgan.generators.base import GenerativeModel, register_generator
from cxrgan.generators.conditioning import AlphaConditioned, LabelVectorConditioned, OneClass
from cxrgan.generators.diffusion_networks import build_autoencoder, build_denoiser, build_patch_discriminator
from cxrgan.generators.trainable import NetworkSide, TrainableModel
from cxrgan.generators.training import Batch, Statistic, StepContext, Stream, TrainerConfig

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


class LatentDiffusion(NetworkSide, TrainableModel, GenerativeModel):
    """The two-phase latent diffusion body; a conditioning mixin chooses training rows and sampled labels."""

    config_class = DiffusionConfig
    ema_networks = ("denoiser",)
    divergence_statistic = None  # no adversary: a non-finite loss stops the run (ctx.check_finite)
    width_fields = ("unet_width",)  # --gan-width sets the UNet's width; the autoencoder keeps its own
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # 1 / std of the first latent batch (a 0-d tensor, read without waiting for the device); set when the UNet
        # phase starts
        self.scale_factor_: torch.Tensor | float | None = None

    # ---- rows, networks, phases -----------------------------------------------------------------------------------
    def _training_streams(self, dataset: CXRDataset) -> tuple[list[Stream], dict[str, Any]]:
        images, cond_labels, info = self._training_rows(dataset)
        size, _ = self.config.autoencoder_geometry(int(dataset.image_size))
        if size != dataset.image_size:
            images = resize_stack(np.asarray(images), size)
            info["network_size"] = size
        return [Stream(images, cond_labels)], {**info, "n_train": int(len(images))}

    @property
    def _latent_side(self) -> int:
        size, channels = self.config.autoencoder_geometry(self._network_size)
        return size // 2 ** (len(channels) - 1)

    def _build_networks(self) -> nn.ModuleDict:
        cfg = self.config
        size, channels = cfg.autoencoder_geometry(self._network_size)
        halvings = len(channels) - 1
        if size % 2 ** halvings:
            raise CxrganError(f"{size} px images cannot be halved {halvings} times by the autoencoder")
        autoencoder = build_autoencoder(channels, cfg.latent_channels, cfg.ae_res_blocks, cfg.seed + 1)
        denoiser = build_denoiser(cfg.latent_channels, size // 2 ** halvings, cfg.unet_channels, cfg.unet_attention,
                                  cfg.unet_res_blocks, cfg.head_channels, self._n_conditioning(), cfg.seed + 2)
        networks = {"autoencoder": autoencoder, "denoiser": denoiser}
        if cfg.adversarial_weight:
            networks["discriminator"] = build_patch_discriminator(cfg.discriminator_width, cfg.seed + 3)
        return nn.ModuleDict(networks).to(self.device)

    def _initialise(self, streams: list[Stream]) -> None:
        self.scale_factor_ = None
        self.build()

    def ema_age(self, step: int) -> int:
        return step - self.config.autoencoder_steps

    def samples_at(self, step: int) -> bool:
        return step > self.config.autoencoder_steps

    def phases(self) -> dict[str, int]:
        cfg = self.config
        phases = {"autoencoder": 0}
        if cfg.adversarial_weight:
            phases["autoencoder + patch adversary"] = min(cfg.autoencoder_steps - 1,
                                                          math.ceil(cfg.adversarial_start * cfg.autoencoder_steps))
        return {**phases, "UNet": cfg.autoencoder_steps}

    def extra_state(self) -> dict[str, Any]:
        scale = self.scale_factor_
        return {"scale_factor": scale.detach().cpu() if isinstance(scale, torch.Tensor) else scale}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.scale_factor_ = state.get("scale_factor")

    def _scheduler(self, sampling: bool) -> DDPMScheduler | DDIMScheduler:
        cfg = self.config
        common = dict(num_train_timesteps=cfg.train_timesteps, schedule="scaled_linear_beta",
                      beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type)
        if not sampling:
            return DDPMScheduler(**common)
        scheduler = DDIMScheduler(clip_sample=False, **common)  # latents are not bounded like pixels
        scheduler.set_timesteps(cfg.sample_steps)
        return scheduler

    # ---- the loop's seam ------------------------------------------------------------------------------------------
    def start_training(self) -> dict[str, torch.optim.Optimizer]:
        cfg, networks = self.config, self.networks_
        self._noise_schedule = self._scheduler(sampling=False)
        optimizers = {"autoencoder": torch.optim.Adam(networks["autoencoder"].parameters(), lr=cfg.ae_lr),
                      "denoiser": torch.optim.Adam(networks["denoiser"].parameters(), lr=cfg.lr)}
        if "discriminator" in networks:
            optimizers["discriminator"] = torch.optim.Adam(networks["discriminator"].parameters(), lr=cfg.ae_lr)
        return optimizers

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]:
        """An autoencoder step in the first phase, a denoising step in the second."""
        (images, labels), = batches
        if ctx.step < self.config.autoencoder_steps:
            return self._autoencoder_step(images, ctx)
        return self._denoising_step(images, labels, ctx)

    def _autoencoder_step(self, images: torch.Tensor, ctx: StepContext) -> dict[str, Statistic]:
        """L1 + KL (+ the patch-adversarial term once it has started: least squares, Mao et al. 2017, as MONAI's
        ``PatchAdversarialLoss``), then the discriminator's update on the real and the reconstructed batch."""
        cfg, autoencoder = self.config, self.networks_["autoencoder"]
        keep = torch.randperm(len(images), generator=ctx.rng)[:cfg.autoencoder_batch_size]
        x = images[keep.to(images.device, non_blocking=True)]
        with ctx.autocast():
            mu, sigma = autoencoder.encode(x)
            z = mu + sigma * torch.randn(mu.shape, generator=ctx.rng).to(mu, non_blocking=True)
            reconstruction = autoencoder.decode(z)
        l1 = (reconstruction.float() - x).abs().mean()
        mu, sigma = mu.float(), sigma.float()
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - torch.log(sigma.pow(2)) - 1).sum(dim=(1, 2, 3)).mean()
        loss, stats = l1 + cfg.kl_weight * kl, {"ae_l1": l1.detach(), "ae_kl": kl.detach()}
        adversarial = "discriminator" in self.networks_ and ctx.step >= cfg.adversarial_start * cfg.autoencoder_steps
        if adversarial:
            D = self.networks_["discriminator"].requires_grad_(False)
            with ctx.autocast():
                fake_logits = D(reconstruction)[-1]
            g_adv = (fake_logits.float() - 1).pow(2).mean()
            loss = loss + cfg.adversarial_weight * g_adv
            stats["ae_g_adv"] = g_adv.detach()
        ctx.check_finite("autoencoder", loss)
        optimizer = ctx.optimizers["autoencoder"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if adversarial:
            D.requires_grad_(True)
            with ctx.autocast():
                real_logits, fake_logits = D(x)[-1], D(reconstruction.detach())[-1]
            d_loss = cfg.adversarial_weight * 0.5 * ((real_logits.float() - 1).pow(2).mean()
                                                     + fake_logits.float().pow(2).mean())
            ctx.check_finite("patch discriminator", d_loss)
            ctx.optimizers["discriminator"].zero_grad(set_to_none=True)
            d_loss.backward()
            ctx.optimizers["discriminator"].step()
            stats["ae_d_loss"] = d_loss.detach() / cfg.adversarial_weight
        return stats

    @torch.no_grad()
    def encode(self, images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Scaled latents of (B, 1, H, W) images in [-1, 1]: a draw of q(z|x) times ``scale_factor_``."""
        with autocast(self.device, self.config.bf16):
            mu, sigma = self.networks_["autoencoder"].encode(images)
        z = mu.float() + sigma.float() * torch.randn(mu.shape, generator=rng).to(mu.device, non_blocking=True)
        if self.scale_factor_ is None:  # the first UNet step fixes the scale (kept in every checkpoint after it)
            self.scale_factor_ = 1.0 / distributed.global_std(z)
        return z * self.scale_factor_

    def _denoising_step(self, images: torch.Tensor, labels: torch.Tensor | None,
                        ctx: StepContext) -> dict[str, Statistic]:
        cfg, denoiser, schedule = self.config, self.networks_["denoiser"], self._noise_schedule
        z = self.encode(images, ctx.rng)
        noise = torch.randn(z.shape, generator=ctx.rng).to(z.device, non_blocking=True)
        timesteps = torch.randint(0, cfg.train_timesteps, (len(z),), generator=ctx.rng).to(z.device, non_blocking=True)
        noisy = schedule.add_noise(z, noise, timesteps)
        drop = None
        if labels is not None:
            drop = (torch.rand(len(z), generator=ctx.rng) < cfg.cond_dropout).to(z.device, non_blocking=True)
        with ctx.autocast():
            prediction = denoiser(noisy, timesteps, labels, drop)
        target = noise if cfg.prediction_type == "epsilon" else schedule.get_velocity(z, noise, timesteps)
        loss = (prediction.float() - target).pow(2).mean()
        ctx.check_finite("denoiser", loss)
        optimizer = ctx.optimizers["denoiser"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"diffusion_loss": loss.detach()}

    def preview_images(self) -> tuple[np.ndarray, int] | None:
        return None if self.scale_factor_ is None else super().preview_images()

    # ---- sampling ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def denoise(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """DDIM from noise ``z`` to a scaled latent, guided towards labels ``cond`` (None: unconditional model)."""
        net, scheduler = self.sampled("denoiser"), self._scheduler(sampling=True)
        w = getattr(self.config, "guidance_scale", 1.0)
        guided = cond is not None and w != 1.0
        if guided:  # one batch: the conditional rows, then the same latents with null tokens
            cond = torch.cat([cond, cond])
            drop = torch.cat([torch.zeros(len(z), dtype=torch.bool), torch.ones(len(z), dtype=torch.bool)])
        else:
            drop = None
        for t in scheduler.timesteps:
            x = torch.cat([z, z]) if guided else z
            timesteps = torch.full((len(x),), int(t), dtype=torch.long, device=z.device)
            with autocast(self.device, self.config.bf16):
                out = net(x, timesteps, cond, None if drop is None else drop.to(z.device)).float()
            if guided:
                conditional, unconditional = out.chunk(2)
                out = unconditional + w * (conditional - unconditional)
            z, _ = scheduler.step(out, int(t), z)
        return z

    def _generate(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images at the autoencoder's side and their (n, K) labels: ``batch_size`` latents denoised at a
        time (twice as many UNet rows under guidance), decoded ``decode_batch_size`` at a time."""
        self._fitted()
        if self.scale_factor_ is None:
            raise CxrganError(f"this {self.name} model has not reached its diffusion phase; train it longer")
        if n < 0:
            raise CxrganError(f"cannot sample a negative number of images ({n})")
        generator = generator if generator is not None else torch.Generator().manual_seed(self.config.seed)
        cond, out_labels = self._sample_labels(n, labels, generator)
        size, side, channels = self._network_size, self._latent_side, self.config.latent_channels
        autoencoder, decode = self.networks_["autoencoder"], self.config.decode_batch_size
        chunks = [np.zeros((0, size, size), np.uint8)]
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            z = torch.randn(stop - start, channels, side, side, generator=generator).to(self.device)
            z = self.denoise(z, None if cond is None else cond[start:stop].to(self.device)) / self.scale_factor_
            for part in z.split(decode):
                with torch.no_grad(), autocast(self.device, self.config.bf16):
                    images = autoencoder.decode(part)
                chunks.append(tensor_to_images(images.float()))
        return np.concatenate(chunks), out_labels.astype(np.float32)


@register_generator("ldm")
class LDM(OneClass, LatentDiffusion):
    """Latent diffusion model of one class; ``sample`` returns images of that class."""

    config_class = LDMConfig
    summary = "latent diffusion model of one class (--target), Rombach et al. 2022, MONAI AutoencoderKL + UNet"


@register_generator("cldm")
class CLDM(AlphaConditioned, LatentDiffusion):
    """Class-conditional latent diffusion, classifier-free guidance; sampled labels healthy with probability alpha."""

    config_class = CLDMConfig
    summary = "class-conditional latent diffusion, classifier-free guidance, labels healthy with probability alpha"


@register_generator("ldm-labelvec")
class LabelVectorLDM(LabelVectorConditioned, LatentDiffusion):
    """Latent diffusion conditioned on finding vectors (one token per finding) with classifier-free guidance."""

    config_class = GuidedConfig
    summary = "latent diffusion conditioned on finding vectors, classifier-free guidance, multi-label data"
