"""Shared network pieces: DCGAN conv blocks, N(0, 0.02) init, optional spectral norm, conditional G and projection D.

The architecture follows Radford, Metz & Chintala (2015), "Unsupervised Representation Learning with Deep
Convolutional Generative Adversarial Networks": a generator of transposed convolutions with BatchNorm and ReLU
ending in tanh, and a discriminator of strided convolutions with LeakyReLU(0.2) (BatchNorm everywhere but the
first layer). Depth follows the image size: a 4 x 4 seed is doubled until it reaches 32, 64, 128 or 256 pixels.

Conditioning (Mirza & Osindero 2014, "Conditional GANs"; Miyato & Koyama 2018, "cGANs with Projection
Discriminator", eq. 3): the generator concatenates a learned embedding of the (multi-hot) label vector to z; the
discriminator adds the inner product of a label embedding with its pooled features to its unconditional logit,
``D(x, y) = psi(phi(x)) + <W y, phi(x)>``. A multi-hot y projects onto the sum of its labels' embeddings.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cxrgan.errors import CxrganError

SUPPORTED_SIZES = (32, 64, 128, 256)
NORMS = ("batch", "spectral", "none")


def n_doublings(image_size: int) -> int:
    """How many 2x up-samplings take a 4 x 4 map to ``image_size`` (3 for 32 px, 4 for 64 px, ...)."""
    if image_size not in SUPPORTED_SIZES:
        raise CxrganError(f"GANs support image sizes {list(SUPPORTED_SIZES)}, got {image_size}; prepare the data at one of them")
    return int(math.log2(image_size)) - 2


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """DCGAN init: conv/linear/embedding weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), biases 0.

    Spectral-norm power-iteration vectors are redrawn from ``generator`` too, so a network is a function of the
    seed alone (layer constructors draw from the global RNG, which we never rely on).
    """
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            weight = layer.parametrizations.weight.original if hasattr(layer, "parametrizations") else layer.weight
            with torch.no_grad():
                nn.init.normal_(weight, 0.0, 0.02, generator=generator)
                if getattr(layer, "bias", None) is not None:
                    layer.bias.zero_()
            if hasattr(layer, "parametrizations"):
                sn = layer.parametrizations.weight[0]
                with torch.no_grad():
                    sn._u.copy_(nn.functional.normalize(torch.randn(sn._u.shape, generator=generator), dim=0))
                    sn._v.copy_(nn.functional.normalize(torch.randn(sn._v.shape, generator=generator), dim=0))
        elif isinstance(layer, nn.BatchNorm2d):
            with torch.no_grad():
                nn.init.normal_(layer.weight, 1.0, 0.02, generator=generator)
                layer.bias.zero_()


def _maybe_sn(layer: nn.Module, norm: str) -> nn.Module:
    return spectral_norm(layer) if norm == "spectral" else layer


def up_block(in_channels: int, out_channels: int, first: bool = False) -> nn.Sequential:
    """ConvTranspose (4x4 from a 1x1 input when ``first``, else stride 2) + BatchNorm + ReLU."""
    stride, padding = (1, 0) if first else (2, 1)
    return nn.Sequential(
        nn.ConvTranspose2d(in_channels, out_channels, 4, stride, padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def down_block(in_channels: int, out_channels: int, norm: str, first: bool = False) -> nn.Sequential:
    """Strided 4x4 conv + (BatchNorm unless first or ``norm`` != "batch") + LeakyReLU(0.2)."""
    if norm not in NORMS:
        raise CxrganError(f"unknown discriminator norm {norm!r}; expected one of {list(NORMS)}")
    layers: list[nn.Module] = [_maybe_sn(nn.Conv2d(in_channels, out_channels, 4, 2, 1, bias=norm != "batch" or first), norm)]
    if norm == "batch" and not first:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class DCGANGenerator(nn.Module):
    """z (and an optional label embedding) -> (B, channels, size, size) image in [-1, 1].

    Args:
        image_size: output side, one of 32, 64, 128, 256.
        z_dim: latent size (100 in the paper).
        ngf: width of the last hidden layer; layer i from the output has ``ngf * 2**i`` channels (capped at 16x).
        n_labels: K > 0 adds a label embedding concatenated to z (conditional generator); 0 for unconditional.
        embed_dim: size of that label embedding.
        channels: image channels (1 for radiographs).
    """

    def __init__(self, image_size: int, z_dim: int = 100, ngf: int = 64, n_labels: int = 0, embed_dim: int = 32, channels: int = 1):
        super().__init__()
        depth = n_doublings(image_size)
        widths = [ngf * min(2 ** i, 16) for i in range(depth)][::-1]  # e.g. 64 px: 8ngf, 4ngf, 2ngf, ngf
        self.z_dim, self.n_labels = z_dim, n_labels
        self.embed = nn.Linear(n_labels, embed_dim) if n_labels else None
        blocks = [up_block(z_dim + (embed_dim if n_labels else 0), widths[0], first=True)]
        blocks += [up_block(widths[i], widths[i + 1]) for i in range(depth - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.to_image = nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = z
        if self.embed is not None:
            if labels is None:
                raise CxrganError("this conditional generator needs labels")
            h = torch.cat([z, self.embed(labels.to(z.dtype))], dim=1)
        return torch.tanh(self.to_image(self.blocks(h[:, :, None, None])))


class DCGANDiscriminator(nn.Module):
    """(B, channels, size, size) image (and optional labels) -> (B,) real/fake logit, no sigmoid.

    Args:
        image_size: input side, one of 32, 64, 128, 256.
        ndf: width of the first layer; each stride-2 layer doubles it (capped at 16x).
        norm: "batch" (DCGAN), "spectral" (Miyato et al. 2018, no BatchNorm, so real and fake batches can share
            one forward pass without mixing statistics) or "none".
        n_labels: K > 0 adds a projection term (conditional discriminator); 0 for unconditional.
        channels: image channels.
    """

    def __init__(self, image_size: int, ndf: int = 64, norm: str = "batch", n_labels: int = 0, channels: int = 1):
        super().__init__()
        depth = n_doublings(image_size)
        widths = [ndf * min(2 ** i, 16) for i in range(depth)]
        self.norm = norm
        blocks = [down_block(channels, widths[0], norm, first=True)]
        blocks += [down_block(widths[i], widths[i + 1], norm) for i in range(depth - 1)]
        self.blocks = nn.Sequential(*blocks)
        self.to_logit = _maybe_sn(nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), norm)
        self.project = _maybe_sn(nn.Linear(n_labels, widths[-1], bias=False), norm) if n_labels else None

    @property
    def mixes_batch(self) -> bool:
        """True when BatchNorm couples samples, so real and fake must not share one forward pass."""
        return self.norm == "batch"

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        features = self.blocks(x)
        logit = self.to_logit(features).flatten(1).sum(1)
        if self.project is not None:
            if labels is None:
                raise CxrganError("this conditional discriminator needs labels")
            pooled = features.sum(dim=(2, 3))
            logit = logit + (self.project(labels.to(pooled.dtype)) * pooled).sum(1)
        return logit


@torch.no_grad()
def ema_update(ema: nn.Module, live: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * live`` for parameters; buffers (BatchNorm statistics) are copied."""
    for p_ema, p in zip(ema.parameters(), live.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    for b_ema, b in zip(ema.buffers(), live.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def recalibrate_batchnorm(generator_net: nn.Module, n_batches: int, batch_size: int, labels_fn, rng: torch.Generator) -> None:
    """Re-estimate BatchNorm running statistics of (EMA) generator weights from their own outputs.

    EMA weights never ran forward during training, so the copied running statistics belong to other weights;
    averaging batch statistics over fresh noise ("standing statistics", Brock et al. 2019, BigGAN) fixes that.
    ``labels_fn(n, rng)`` gives conditioning labels (or None).
    """
    bns = [m for m in generator_net.modules() if isinstance(m, nn.BatchNorm2d)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    device = next(generator_net.parameters()).device
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
    was_training = generator_net.training
    generator_net.train()
    for _ in range(n_batches):
        z = torch.randn(batch_size, generator_net.z_dim, generator=rng).to(device)
        labels = labels_fn(batch_size, rng)
        generator_net(z, None if labels is None else labels.to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    generator_net.train(was_training)
