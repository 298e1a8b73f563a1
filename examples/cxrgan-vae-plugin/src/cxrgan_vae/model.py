"""A variational autoencoder of one class behind cxrgan's generator interface, trained by cxrgan's one loop.

Kingma & Welling (2014), "Auto-Encoding Variational Bayes": an encoder q(z | x) = N(mu(x), diag sigma^2(x)) and a
decoder p(x | z) = N(decoder(z), s^2 I) with a standard normal prior p(z); training maximises the evidence lower
bound (their eq. 10), estimated with one reparameterised sample z = mu + sigma * eps per image:

    loss = ||x - decoder(z)||^2 / (2 s^2) + beta * KL(q(z | x) || N(0, I)),
    KL = -1/2 sum_j (1 + log sigma_j^2 - mu_j^2 - sigma_j^2)

(beta = 1 is the ELBO; Higgins et al. 2017 weight it). Sampling decodes z ~ N(0, I). The model subclasses cxrgan's
``TrainableModel`` (fit, checkpoints, exact resume, EMA, state dicts) and ``OneClass`` (which rows it trains on,
which label its samples carry), and adds only its networks and its step, as a built-in generator would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.transforms import tensor_to_images
from cxrgan.errors import CxrganError
from cxrgan.generators.base import GenerativeModel
from cxrgan.generators.conditioning import OneClass
from cxrgan.generators.trainable import TrainableModel
from cxrgan.generators.training import Batch, StepContext, Stream, TrainerConfig

# CPU preset: width 16, 32 latent dimensions, batch 64; the fidelity score every 250 steps keeps the best model.
CPU_PRESET: dict[str, Any] = dict(steps=2000, width=16, latent_dim=32, batch_size=64, progress=False, log_every=25,
                                  checkpoint_every=250, grid_every=250, quality_every=250)
FULL_PRESET: dict[str, Any] = dict(steps=10_000, width=32, latent_dim=128, batch_size=64, progress=True,
                                   log_every=100, checkpoint_every=1000, grid_every=1000, quality_every=500)


@dataclass(frozen=True)
class VAEConfig(TrainerConfig):
    """The loop's settings plus the VAE's."""

    target: str = ""  # class name ("pneumonia"), "0"/"1", or finding name; "" = the positive class of a binary task
    latent_dim: int = 32  # dimensions of z
    width: int = 16  # channels of the encoder's first layer (doubling per halving of the side)
    lr: float = 1e-3  # Adam learning rate
    beta: float = 1.0  # weight of the KL term (1 = the ELBO)
    decoder_std: float = 0.1  # s, the decoder's fixed standard deviation on pixels scaled to [-1, 1]

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "latent_dim": self.latent_dim >= 1, "width": self.width >= 1, "lr": self.lr > 0,
                "beta": self.beta >= 0, "decoder_std": self.decoder_std > 0}


def _levels(size: int) -> int:
    """Halvings from ``size`` down to a 4 x 4 map (``size`` a power of two >= 8)."""
    if size < 8 or size & (size - 1):
        raise CxrganError(f"the vae needs a power-of-two image side >= 8, got {size}; prepare the data at 64 px")
    return int(math.log2(size)) - 2


class Encoder(nn.Module):
    """x (B, 1, S, S) -> (mu, log sigma^2), each (B, latent_dim): strided convolutions down to 4 x 4, then linear."""

    def __init__(self, size: int, width: int, latent_dim: int):
        super().__init__()
        layers, channels = [], 1
        for level in range(_levels(size)):
            out = width * 2 ** level
            layers += [nn.Conv2d(channels, out, 4, 2, 1), nn.LeakyReLU(0.2)]
            channels = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(channels * 16, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, log_var = self.head(self.features(x)).chunk(2, dim=1)
        return mu, log_var.clamp(-10.0, 10.0)


class Decoder(nn.Module):
    """z (B, latent_dim) -> image (B, 1, S, S) in [-1, 1]: linear to 4 x 4, then transposed convolutions."""

    def __init__(self, size: int, width: int, latent_dim: int):
        super().__init__()
        levels = _levels(size)
        channels = width * 2 ** (levels - 1)
        self.latent_dim, self.channels = latent_dim, channels
        self.project = nn.Linear(latent_dim, channels * 16)
        layers = []
        for level in reversed(range(levels)):
            out = 1 if level == 0 else width * 2 ** (level - 1)
            layers += [nn.ReLU(), nn.ConvTranspose2d(channels, out, 4, 2, 1)]
            channels = out
        self.body = nn.Sequential(*layers, nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z).view(len(z), self.channels, 4, 4))


def _init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """He initialisation (He et al. 2015) of every layer from ``generator``, biases 0: the networks are a function
    of the seed alone (layer constructors draw from the global RNG, which cxrgan never relies on)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                nn.init.kaiming_normal_(layer.weight, a=0.2, generator=generator)
                layer.bias.zero_()


class VAE(OneClass, TrainableModel, GenerativeModel):
    """Variational autoencoder of one class (``config.target``); every sample carries that class."""

    name = "vae"
    config_class = VAEConfig
    summary = "variational autoencoder of one class (--target), Kingma & Welling 2014 (plugin example)"
    ema_networks = ("decoder",)
    divergence_statistic: ClassVar[str | None] = None  # no discriminator to win
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET
    width_fields = ("width",)

    def _training_streams(self, dataset: CXRDataset) -> tuple[list[Stream], dict[str, Any]]:
        _levels(dataset.image_size)  # a clear error before anything trains
        images, _, info = self._training_rows(dataset)
        return [Stream(images, None)], {**info, "n_train": int(len(images))}

    def _build_networks(self) -> nn.ModuleDict:
        cfg, size = self.config, int(self.data_info_["image_size"])
        networks = nn.ModuleDict({"encoder": Encoder(size, cfg.width, cfg.latent_dim),
                                  "decoder": Decoder(size, cfg.width, cfg.latent_dim)})
        _init_weights(networks, torch.Generator().manual_seed(cfg.seed + 1))
        return networks.to(self.device)

    def start_training(self) -> dict[str, torch.optim.Optimizer]:
        return {"vae": torch.optim.Adam(self.networks_.parameters(), lr=self.config.lr)}

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, float]:
        """One step on the negative ELBO (module docstring), averaged over the batch."""
        (x, _), = batches
        cfg, optimizer = self.config, ctx.optimizers["vae"]
        eps = torch.randn(len(x), cfg.latent_dim, generator=ctx.rng).to(self.device)
        with ctx.autocast():
            mu, log_var = self.networks_["encoder"](x)
            recon = self.networks_["decoder"](mu + torch.exp(0.5 * log_var) * eps)
        mu, log_var = mu.float(), log_var.float()
        reconstruction = (recon.float() - x.float()).pow(2).flatten(1).sum(1).mean() / (2 * cfg.decoder_std ** 2)
        kl = (-0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(1)).mean()
        loss = reconstruction + cfg.beta * kl
        ctx.check_finite("vae", loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "reconstruction": reconstruction.item(), "kl": kl.item()}

    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        decoder = self.sampled("decoder")
        if n < 0:
            raise CxrganError(f"cannot sample a negative number of images ({n})")
        generator = generator if generator is not None else torch.Generator().manual_seed(self.config.seed)
        _, out_labels = self._sample_labels(n, labels, generator)
        size = int(self.data_info_["image_size"])
        chunks = [np.zeros((0, size, size), np.uint8)]
        was_training = decoder.training
        decoder.eval()
        try:
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    z = torch.randn(min(n, start + batch_size) - start, self.config.latent_dim, generator=generator)
                    chunks.append(tensor_to_images(decoder(z.to(self.device))))
        finally:
            decoder.train(was_training)
        return np.concatenate(chunks), out_labels.astype(np.float32)
