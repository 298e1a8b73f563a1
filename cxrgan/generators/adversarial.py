"""The DCGAN family's shared body: its config, G/D networks, the alternating step the one loop runs, and sampling.

The step is the standard alternating update of Goodfellow et al. (2014) written to avoid wasted work (measured in
``benchmarks/gan_step.py``):

* the fakes are generated once per step; the D step uses ``fake.detach()`` so no generator graph is walked back,
  and the G step reuses the same fakes through the *updated* D (so the G step needs its own D forward);
* during the G step D's parameters are frozen (``requires_grad_(False)``): backward computes only the gradient
  with respect to the images, not D's weight gradients;
* with a BatchNorm-free discriminator (spectral norm) real and fake go through D in one forward pass; with
  BatchNorm they stay separate batches as in DCGAN, since a joint batch would mix their statistics;
* ``zero_grad(set_to_none=True)``, fused Adam, channels-last tensors and optional bf16 autocast (weights stay fp32).

DiffAugment (Zhao et al. 2020) is applied to real and fake images in both steps when the config names a policy and
the run shows each training image at least ``diffaugment_min_passes`` times (steps x batch / rows).

The networks work at a power-of-two side (:data:`~cxrgan.generators.blocks.SUPPORTED_SIZES`); images of another
size (224 px, DenseNet's input) are resized to the next supported side for training and samples resized back
(:func:`network_size`).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.images import resize_stack
from cxrgan.data.transforms import tensor_to_images
from cxrgan.errors import CxrganError
from cxrgan.generators.augment import diff_augment, parse_policy
from cxrgan.generators.base import GenerativeModel
from cxrgan.generators.blocks import (NORMS, SUPPORTED_SIZES, DCGANDiscriminator, DCGANGenerator, init_weights,
                                      recalibrate_batchnorm)
from cxrgan.generators.losses import get_loss
from cxrgan.generators.seam import Batch, Statistic, StepContext, Stream
from cxrgan.generators.trainable import NetworkSide, TrainableModel
from cxrgan.generators.trainer_config import TrainerConfig


@dataclass(frozen=True)
class GANConfig(TrainerConfig):
    """Settings shared by every adversarial model (the loop's settings plus these); method configs add their own."""

    z_dim: int = 100  # latent size (Radford et al. 2015: 100)
    ngf: int = 64  # generator width: channels of its last hidden layer
    ndf: int = 64  # discriminator width: channels of its first layer
    d_norm: str = "batch"  # discriminator normalisation: "batch" (DCGAN), "spectral" or "none"
    loss: str = "bce"  # adversarial loss: "bce" (non-saturating, from logits) or "hinge"
    lr_g: float = 2e-4  # generator Adam learning rate (Radford et al.)
    lr_d: float = 2e-4  # discriminator Adam learning rate
    beta1: float = 0.5  # Adam beta1 (Radford et al.: 0.5)
    beta2: float = 0.999  # Adam beta2
    diffaugment: str = ""  # DiffAugment ops, e.g. "translation,cutout,brightness,contrast"; "" = none
    diffaugment_min_passes: float = 0.0  # use DiffAugment only when steps x batch / rows reaches this; 0 = always
    channels_last: bool = True  # channels-last memory format (faster oneDNN convolutions on CPU)

    describes: ClassVar[str] = "GAN"

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "d_norm": self.d_norm in NORMS, "z_dim": self.z_dim >= 1, "ngf": self.ngf >= 1,
                "ndf": self.ndf >= 1, "batch_size": self.batch_size >= 2, "lr_g": self.lr_g > 0, "lr_d": self.lr_d > 0,
                "beta1": 0 <= self.beta1 < 1, "beta2": 0 <= self.beta2 < 1,
                "diffaugment_min_passes": self.diffaugment_min_passes >= 0}

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_policy(self.diffaugment)
        get_loss(self.loss)


def network_size(image_size: int) -> int:
    """The side G and D work at for images of ``image_size``: itself when supported, else the next supported side
    above it (the largest below it past the last): 224 -> 256, 300 -> 256, 48 -> 64."""
    above = [s for s in SUPPORTED_SIZES if s >= image_size]
    return above[0] if above else SUPPORTED_SIZES[-1]


class AdversarialModel(NetworkSide, TrainableModel, GenerativeModel):
    """A z -> image GAN behind the GenerativeModel interface; subclasses choose training rows and sampled labels.

    Args:
        config: the method's frozen config (defaults when None).
        device: torch device to train and sample on.
        run_dir: folder for checkpoints, metrics and sample grids; None trains in memory only.
        step_hook: called with the number of finished steps after each step (progress reporting, tests).
    """

    config_class = GANConfig
    ema_networks = ("generator",)
    divergence_advice = "Try a lower learning rate, DiffAugment, spectral norm (d_norm='spectral') or another seed."

    @property
    def channels_last(self) -> bool:
        return self.config.channels_last

    @property
    def generator_(self) -> DCGANGenerator | None:
        return None if self.networks_ is None else self.networks_["generator"]

    @property
    def discriminator_(self) -> DCGANDiscriminator | None:
        return None if self.networks_ is None else self.networks_["discriminator"]

    @property
    def generator_ema_(self) -> DCGANGenerator | None:
        return None if self.ema_ is None else self.ema_["generator"]

    # ---- what a method decides ------------------------------------------------------------------------------------
    @abstractmethod
    def _training_rows(self, dataset: CXRDataset) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """(images to train on, (N, K) conditioning labels or None, method facts kept in ``data_info_``)."""

    @abstractmethod
    def _sample_labels(self, n: int, labels: np.ndarray | None, generator: torch.Generator) -> tuple[torch.Tensor | None, np.ndarray]:
        """(conditioning tensor for G or None, (n, K) labels returned with the images)."""

    def _n_conditioning(self) -> int:
        """Number of label columns G and D are conditioned on (0 = unconditional)."""
        return 0

    def _recalibration_labels(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        return None

    # ---- the loop's seam ------------------------------------------------------------------------------------------
    def _training_streams(self, dataset: CXRDataset) -> tuple[list[Stream], dict[str, Any]]:
        images, cond_labels, info = self._training_rows(dataset)
        size = network_size(dataset.image_size)
        if size != dataset.image_size:
            images = resize_stack(np.asarray(images), size)
            info["network_size"] = size
        cfg, n = self.config, len(images)
        passes = cfg.steps * min(cfg.batch_size, n) / n  # how often the run shows each training image
        info.update(n_train=int(n), diffaugment=cfg.diffaugment if passes >= cfg.diffaugment_min_passes else "")
        return [Stream(images, cond_labels)], info

    def _build_networks(self) -> nn.ModuleDict:
        cfg, size = self.config, self._network_size
        n_cond = self._n_conditioning()
        G = DCGANGenerator(size, cfg.z_dim, cfg.ngf, n_labels=n_cond, embed_dim=getattr(cfg, "embed_dim", 32))
        D = DCGANDiscriminator(size, cfg.ndf, cfg.d_norm, n_labels=n_cond)
        init_rng = torch.Generator().manual_seed(cfg.seed + 1)  # a stream apart from the training noise
        init_weights(G, init_rng)
        init_weights(D, init_rng)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        return nn.ModuleDict({"generator": G.to(self.device, memory_format=memory_format),
                              "discriminator": D.to(self.device, memory_format=memory_format)})

    def start_training(self) -> dict[str, torch.optim.Optimizer]:
        cfg, betas = self.config, (self.config.beta1, self.config.beta2)
        self._loss = get_loss(cfg.loss)
        self._policy = parse_policy(self.data_info_["diffaugment"])
        # fused Adam: one kernel per parameter group instead of ~8 elementwise passes per tensor (CPU and CUDA have it;
        # a traced run on the meta device, cxrgan.memory, takes the plain one)
        fused = self.device.type in ("cpu", "cuda")
        return {"generator": torch.optim.Adam(self.generator_.parameters(), lr=cfg.lr_g, betas=betas, fused=fused),
                "discriminator": torch.optim.Adam(self.discriminator_.parameters(), lr=cfg.lr_d, betas=betas,
                                                  fused=fused)}

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]:
        """One alternating D then G update (see the module docstring)."""
        (real, labels), = batches
        G, D = self.generator_, self.discriminator_
        z = torch.randn(len(real), G.z_dim, generator=ctx.rng).to(self.device, non_blocking=True)
        augment = (lambda x: diff_augment(x, self._policy, ctx.rng)) if self._policy else (lambda x: x)

        with ctx.autocast():
            fake = G(z, labels)
            real_in, fake_in = augment(real), augment(fake.detach())
            if D.mixes_batch:
                real_logits, fake_logits = D(real_in, labels), D(fake_in, labels)
            else:
                both_labels = None if labels is None else torch.cat([labels, labels])
                real_logits, fake_logits = D(torch.cat([real_in, fake_in]), both_labels).split(len(real))
        d_loss = self._loss.d_loss(real_logits, fake_logits)
        ctx.check_finite("discriminator", d_loss)
        opt_d = ctx.optimizers["discriminator"]
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        g_loss = self._generator_update(ctx, lambda: D(augment(fake), labels))
        with torch.no_grad():
            return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                    "d_real": torch.sigmoid(real_logits.float()).mean(), "d_fake": torch.sigmoid(fake_logits.float()).mean()}

    def _generator_update(self, ctx: StepContext, fake_logits) -> torch.Tensor:
        """One G step with D frozen (gradients w.r.t. the images only, none for D's weights): ``fake_logits()``
        scores the generated batch under autocast; returns the generator loss."""
        D, opt_g = self.discriminator_, ctx.optimizers["generator"]
        D.requires_grad_(False)
        try:
            with ctx.autocast():
                g_logits = fake_logits()
            g_loss = self._loss.g_loss(g_logits)
            ctx.check_finite("generator", g_loss)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        finally:
            D.requires_grad_(True)
        return g_loss

    def finalize_training(self) -> None:
        """Give the EMA generator BatchNorm statistics of its own weights (after training, before grids and scores)."""
        if self.ema_ is not None:
            rng = torch.Generator().manual_seed(self.config.seed + 2)
            recalibrate_batchnorm(self.generator_ema_, 8, min(64, self.config.batch_size * 2), self._recalibration_labels, rng)
            self.generator_ema_.eval()

    # ---- interface --------------------------------------------------------------------------------------------------
    def _generate(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images at the networks' side and their (n, K) labels."""
        net = self.sampled("generator")
        if n < 0:
            raise CxrganError(f"cannot sample a negative number of images ({n})")
        generator = generator if generator is not None else torch.Generator().manual_seed(self.config.seed)
        cond, out_labels = self._sample_labels(n, labels, generator)
        size = self._network_size
        chunks = [np.zeros((0, size, size), np.uint8)]
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    stop = min(n, start + batch_size)
                    z = torch.randn(stop - start, net.z_dim, generator=generator).to(self.device)
                    y = None if cond is None else cond[start:stop].to(self.device)
                    chunks.append(tensor_to_images(net(z, y)))
        finally:
            net.train(was_training)
        return np.concatenate(chunks), out_labels.astype(np.float32)
