"""The latent diffusion networks: MONAI's ``AutoencoderKL`` and a ``DiffusionModelUNet`` conditioned on label vectors.

Conditioning: as class labels in Dhariwal & Nichol (2021), "Diffusion Models Beat GANs on Image Synthesis" (and
MONAI's ``num_class_embeds``), a label embedding is added to the timestep embedding, so it shifts and scales every
residual block. A (multi-hot) vector of K labels is embedded as the sum of K learned vectors, one per label and state
(absent, present, or null), in MONAI's class-embedding table of 3K rows: for one label (a binary task) this is
exactly MONAI's class conditioning with classes {0, 1, null}. Classifier-free guidance (Ho & Salimans 2022,
"Classifier-Free Diffusion Guidance") trains the same network unconditionally on a fraction of the rows by giving
their labels the null state.

Every network is built from the seed handed in (MONAI's layers draw their initial weights from the global RNG, so
construction runs inside ``cxrgan.device.seeded`` and the caller's RNG, CPU or CUDA, is left as found).
"""

from __future__ import annotations

import math

import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet, PatchDiscriminator
from torch import nn

from cxrgan.device import seeded
from cxrgan.errors import CxrganError

NULL = 2  # the label state of a row trained (or sampled) without conditioning


class LabelVectorEmbedding(nn.Module):
    """(B, K) label states in {0 absent, 1 present, 2 null} -> (B, D): the sum of one table row per label."""

    def __init__(self, table: nn.Embedding, n_labels: int):
        super().__init__()
        if table.num_embeddings != 3 * n_labels:
            raise CxrganError(f"a label-vector embedding of {n_labels} labels needs {3 * n_labels} rows")
        self.table = table
        self.register_buffer("offsets", 3 * torch.arange(n_labels), persistent=False)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.table(states.long() + self.offsets).sum(dim=1)


def label_states(labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K) labels in {0, 1} (and rows to drop) -> (B, K) states for ``LabelVectorEmbedding``."""
    states = labels.round().long()
    return states if drop is None else torch.where(drop[:, None], torch.full_like(states, NULL), states)


class Denoiser(nn.Module):
    """A ``DiffusionModelUNet`` predicting the noise (or velocity) of a latent, optionally given label vectors."""

    def __init__(self, unet: DiffusionModelUNet, n_labels: int):
        super().__init__()
        self.unet, self.n_labels = unet, n_labels
        if n_labels:
            unet.class_embedding = LabelVectorEmbedding(unet.class_embedding, n_labels)

    def forward(self, z: torch.Tensor, timesteps: torch.Tensor, labels: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        if self.n_labels and labels is None:
            raise CxrganError("this conditional denoiser needs labels")
        states = label_states(labels, drop) if self.n_labels else None
        return self.unet(z, timesteps, class_labels=states)


def build_autoencoder(channels: tuple[int, ...], latent_channels: int, res_blocks: int, seed: int) -> AutoencoderKL:
    """A one-channel MONAI ``AutoencoderKL`` halving the side ``len(channels) - 1`` times, without attention (CPU)."""
    groups = min(channels)
    if any(c % groups for c in channels):
        raise CxrganError(f"autoencoder channels {list(channels)} must all be multiples of the smallest")
    with seeded(seed):
        return AutoencoderKL(spatial_dims=2, in_channels=1, out_channels=1, channels=tuple(channels),
                             latent_channels=latent_channels, num_res_blocks=res_blocks,
                             attention_levels=(False,) * len(channels), norm_num_groups=groups,
                             with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False)


def build_patch_discriminator(width: int, seed: int) -> PatchDiscriminator:
    """MONAI's ``PatchDiscriminator`` (Isola et al. 2017's PatchGAN, three strided layers) for the autoencoder's
    adversarial term, as MONAI's latent diffusion tutorials train ``AutoencoderKL``."""
    with seeded(seed):
        return PatchDiscriminator(spatial_dims=2, num_layers_d=3, channels=width, in_channels=1, out_channels=1)


def build_denoiser(latent_channels: int, latent_size: int, channels: tuple[int, ...], attention: tuple[bool, ...],
                   res_blocks: int, head_channels: int, n_labels: int, seed: int) -> Denoiser:
    """The UNet of the latent space; with ``n_labels`` > 0 conditioned on label vectors (see the module docstring).
    Its attention runs through ``torch.nn.functional.scaled_dot_product_attention`` (MONAI's ``use_flash_attention``):
    fused kernels that never hold the attention matrix, whose size grows with the fourth power of the level's side."""
    if len(channels) != len(attention):
        raise CxrganError(f"the UNet has {len(channels)} levels but {len(attention)} attention flags")
    if latent_size % 2 ** (len(channels) - 1):
        raise CxrganError(f"a {latent_size} x {latent_size} latent cannot be halved {len(channels) - 1} times; "
                          "use fewer UNet levels or a larger latent")
    with seeded(seed):
        unet = DiffusionModelUNet(spatial_dims=2, in_channels=latent_channels, out_channels=latent_channels,
                                  channels=tuple(channels), attention_levels=tuple(attention),
                                  num_res_blocks=res_blocks,
                                  num_head_channels=tuple(math.gcd(head_channels, c) for c in channels),
                                  norm_num_groups=min(32, min(channels)), num_class_embeds=3 * n_labels or None,
                                  use_flash_attention=True)
        return Denoiser(unet, n_labels)
