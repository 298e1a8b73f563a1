"""FastGAN's networks at 64 px: a generator with skip-layer excitation and a discriminator that also reconstructs.

Liu, Zhang, Song & Elgammal (2021), "Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image
Synthesis" (ICLR), scaled to 64 px and one channel:

* generator: z -> 4 x 4 -> 8 -> 16 -> 32 -> 64, each step a nearest-neighbour up-sampling, a 3 x 3 convolution,
  BatchNorm and a GLU (two convolutions at 8 and 32 px); skip-layer excitation (SLE, sec. 3.1) gates the 32 px
  channels by the 4 px features and the 64 px channels by the 8 px ones: ``f_high * sigmoid(conv1x1(swish(conv4x4(
  pool_4x4(f_low)))))``. The paper's noise injection is left out (its ablation gives it a small effect and it would
  draw noise inside the network);
* discriminator: spectral-normalised strided convolutions (64 -> 32 -> 16 -> 8), residual down-sampling blocks,
  one SLE, and 5 x 5 patch logits; it is regularised by self-supervised reconstruction (sec. 3.2): two small
  decoders rebuild, from the 8 x 8 features of a *real* image, the whole image at 32 px and, from one quadrant of
  its 16 x 16 features, that quadrant at 32 px (the paper's LPIPS + MSE is L1 here: no pretrained network offline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cxrgan.errors import CxrganError

SIZE = 64  # the only image side these networks are laid out for


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Module:
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=False))


class GLU(nn.Module):
    """Gated linear unit over channels: first half * sigmoid(second half)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * torch.sigmoid(b)


def up_block(in_channels: int, out_channels: int, double: bool = False) -> nn.Sequential:
    """2x nearest up-sampling, then one (or, ``double``, two) 3 x 3 conv + BatchNorm + GLU."""
    layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest"),
                               nn.Conv2d(in_channels, out_channels * 2, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(out_channels * 2), GLU()]
    if double:
        layers += [nn.Conv2d(out_channels, out_channels * 2, 3, 1, 1, bias=False), nn.BatchNorm2d(out_channels * 2),
                   GLU()]
    return nn.Sequential(*layers)


class SkipExcitation(nn.Module):
    """SLE: channel gates of a high-resolution map computed from a low-resolution one (Liu et al. 2021, eq. 1)."""

    def __init__(self, low_channels: int, high_channels: int, spectral: bool = False):
        super().__init__()
        conv = _conv if spectral else (lambda i, o, k: nn.Conv2d(i, o, k, 1, 0, bias=False))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(4), conv(low_channels, high_channels, 4), nn.SiLU(),
                                  conv(high_channels, high_channels, 1), nn.Sigmoid())

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        return high * self.gate(low)


class FastGANGenerator(nn.Module):
    """z -> (B, 1, 64, 64) image in [-1, 1]; ``ngf`` is the width at 32 px (4 px: 8 ngf, 64 px: ngf / 2)."""

    def __init__(self, z_dim: int = 100, ngf: int = 32):
        super().__init__()
        if ngf < 2:
            raise CxrganError(f"FastGAN needs ngf >= 2, got {ngf}")
        widths = {4: 8 * ngf, 8: 4 * ngf, 16: 2 * ngf, 32: ngf, 64: max(ngf // 2, 1)}
        self.z_dim = z_dim
        self.init = nn.Sequential(nn.ConvTranspose2d(z_dim, widths[4] * 2, 4, 1, 0, bias=False),
                                  nn.BatchNorm2d(widths[4] * 2), GLU())
        self.up8 = up_block(widths[4], widths[8], double=True)
        self.up16 = up_block(widths[8], widths[16])
        self.up32 = up_block(widths[16], widths[32], double=True)
        self.up64 = up_block(widths[32], widths[64])
        self.sle32 = SkipExcitation(widths[4], widths[32])
        self.sle64 = SkipExcitation(widths[8], widths[64])
        self.to_image = nn.Conv2d(widths[64], 1, 3, 1, 1, bias=False)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        feat4 = self.init(z[:, :, None, None])
        feat8 = self.up8(feat4)
        feat32 = self.sle32(feat4, self.up32(self.up16(feat8)))
        feat64 = self.sle64(feat8, self.up64(feat32))
        return torch.tanh(self.to_image(feat64))


class DownBlock(nn.Module):
    """Residual 2x down-sampling: (strided 4 x 4 conv, 3 x 3 conv) averaged with (avg-pool, 1 x 1 conv)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.main = nn.Sequential(_conv(in_channels, out_channels, 4, 2, 1), nn.BatchNorm2d(out_channels),
                                  nn.LeakyReLU(0.2), _conv(out_channels, out_channels, 3, 1, 1),
                                  nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2))
        self.direct = nn.Sequential(nn.AvgPool2d(2), _conv(in_channels, out_channels, 1),
                                    nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.main(x) + self.direct(x)) / 2


def decoder(in_channels: int, width: int) -> nn.Sequential:
    """8 x 8 features -> a 32 x 32 one-channel image in [-1, 1] (two up-sampling blocks)."""
    return nn.Sequential(up_block(in_channels, width), up_block(width, max(width // 2, 1)),
                         nn.Conv2d(max(width // 2, 1), 1, 3, 1, 1, bias=False), nn.Tanh())


class FastGANDiscriminator(nn.Module):
    """(B, 1, 64, 64) image -> (B, 1, 5, 5) patch logits; with ``quadrant`` also the two reconstructions.

    ``ndf`` is the width at 32 px (16 px: 2 ndf, 8 px: 4 ndf).
    """

    mixes_batch = True  # BatchNorm: real and fake go through separately

    def __init__(self, ndf: int = 32):
        super().__init__()
        self.from_image = nn.Sequential(_conv(1, ndf, 4, 2, 1), nn.LeakyReLU(0.2))
        self.down16 = DownBlock(ndf, 2 * ndf)
        self.down8 = DownBlock(2 * ndf, 4 * ndf)
        self.sle8 = SkipExcitation(ndf, 4 * ndf, spectral=True)
        self.to_logits = nn.Sequential(_conv(4 * ndf, 8 * ndf, 1), nn.BatchNorm2d(8 * ndf), nn.LeakyReLU(0.2),
                                       _conv(8 * ndf, 1, 4))
        self.decode_whole = decoder(4 * ndf, 2 * ndf)
        self.decode_part = decoder(2 * ndf, 2 * ndf)

    def forward(self, x: torch.Tensor, quadrant: int | None = None):
        feat32 = self.from_image(x)
        feat16 = self.down16(feat32)
        feat8 = self.sle8(feat32, self.down8(feat16))
        logits = self.to_logits(feat8)
        if quadrant is None:
            return logits
        row, column = divmod(quadrant, 2)
        part = feat16[:, :, row * 8:(row + 1) * 8, column * 8:(column + 1) * 8]
        return logits, self.decode_whole(feat8), self.decode_part(part)


def reconstruction_targets(x: torch.Tensor, quadrant: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What the decoders rebuild from a 64 px image: the image at 32 px and its ``quadrant`` (32 px, full detail)."""
    row, column = divmod(quadrant, 2)
    return F.avg_pool2d(x, 2), x[:, :, row * 32:(row + 1) * 32, column * 32:(column + 1) * 32]
