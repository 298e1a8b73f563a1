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

import math
from typing import Any

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
from cxrgan.generators.diffusion_config import (CPU_PRESET, FULL_PRESET, CLDMConfig, DiffusionConfig, GuidedConfig,
                                               LDMConfig)
from cxrgan.generators.diffusion_networks import build_autoencoder, build_denoiser, build_patch_discriminator
from cxrgan.generators.seam import Batch, Statistic, StepContext, Stream
from cxrgan.generators.trainable import NetworkSide, TrainableModel

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
