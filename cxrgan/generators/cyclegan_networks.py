"""CycleGAN networks: the ResNet-block translator, the PatchGAN discriminator sized to the image, the history pool.

Zhu, Park, Isola & Efros (2017), "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial
Networks", appendix 7.2: the generator is c7s1-w, d2w, d4w, R4w x n_blocks, u2w, uw, c7s1-1 (reflection padding,
instance norm, ReLU, tanh output; Johnson et al. 2016); the discriminator is a 70 x 70 PatchGAN (C64-C128-C256-C512,
LeakyReLU 0.2, instance norm but on the first layer) that scores overlapping patches. Sec. 4 "training details":
discriminators see a history of 50 generated images (Shrivastava et al. 2017) instead of only the newest ones.
"""

from __future__ import annotations

import torch
from torch import nn

from cxrgan.errors import CxrganError


class ResnetBlock(nn.Module):
    """x + [reflect-pad, 3x3 conv, instance norm, ReLU, reflect-pad, 3x3 conv, instance norm](x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3), nn.InstanceNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """(B, channels, H, W) image in [-1, 1] -> translated image of the same size in [-1, 1].

    Args:
        width: channels of the first layer (paper: 64); the two down-samplings give 2x and 4x that.
        n_blocks: residual blocks at 1/4 resolution (paper: 6 for 128 px, 9 for 256 px).
        channels: image channels (1 for radiographs).
    """

    def __init__(self, width: int = 64, n_blocks: int = 6, channels: int = 1):
        super().__init__()
        if width < 1 or n_blocks < 0:
            raise CxrganError(f"CycleGAN generator needs width >= 1 and n_blocks >= 0, got {width}, {n_blocks}")
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(channels, width, 7), nn.InstanceNorm2d(width),
                                   nn.ReLU(inplace=True)]
        for mult in (1, 2):  # d2w, d4w: stride-2 3x3 convolutions
            layers += [nn.Conv2d(width * mult, width * mult * 2, 3, 2, 1), nn.InstanceNorm2d(width * mult * 2),
                       nn.ReLU(inplace=True)]
        layers += [ResnetBlock(width * 4) for _ in range(n_blocks)]
        for mult in (4, 2):  # u2w, uw: fractionally strided convolutions
            layers += [nn.ConvTranspose2d(width * mult, width * mult // 2, 3, 2, 1, output_padding=1),
                       nn.InstanceNorm2d(width * mult // 2), nn.ReLU(inplace=True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(width, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def patch_layers(image_size: int) -> int:
    """Stride-2 layers of the PatchGAN for ``image_size``: receptive field about a quarter to a half of the image.

    n layers give a receptive field of 16 (n=1), 34 (2), 70 (3, the paper's at 256 px) pixels; 64 px images get 34
    px patches, 32 px images 16 px ones, 128 px and larger the paper's 70 px.
    """
    if image_size < 16 or image_size % 4:
        raise CxrganError(f"CycleGAN needs an image size >= 16 divisible by 4, got {image_size}")
    return 1 if image_size < 64 else 2 if image_size < 128 else 3


class PatchDiscriminator(nn.Module):
    """(B, channels, H, W) image -> (B, 1, h, w) map of real/fake scores, one per overlapping patch (no sigmoid).

    Args:
        image_size: input side; picks the number of stride-2 layers (``patch_layers``).
        width: channels of the first layer (paper: 64), doubled per layer up to 8x.
        channels: image channels.
    """

    def __init__(self, image_size: int, width: int = 64, channels: int = 1):
        super().__init__()
        n_layers = patch_layers(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        mult = 1
        for i in range(1, n_layers + 1):
            previous, mult = mult, min(2 ** i, 8)
            stride = 2 if i < n_layers else 1  # the paper's last C512 has stride 1
            layers += [nn.Conv2d(width * previous, width * mult, 4, stride, 1), nn.InstanceNorm2d(width * mult),
                       nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(width * mult, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def init_normal(module: nn.Module, generator: torch.Generator) -> None:
    """Zhu et al.'s init: conv weights ~ N(0, 0.02), biases 0, drawn from ``generator`` only."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                nn.init.normal_(layer.weight, 0.0, 0.02, generator=generator)
                if layer.bias is not None:
                    layer.bias.zero_()


class ImagePool:
    """History of up to ``size`` generated images (Shrivastava et al. 2017; Zhu et al. 2017, sec. 4).

    ``query`` returns a batch for the discriminator: while the pool fills, the new images themselves; then each new
    image, with probability 1/2, replaces a random stored one and the stored one is returned instead. All draws come
    from the ``generator`` passed in, and ``state_dict`` keeps the pool so a resumed run continues identically.
    """

    def __init__(self, size: int = 50):
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.size == 0:
            return batch
        out = []
        for image in batch.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(1, generator=generator).item() < 0.5:
                slot = int(torch.randint(self.size, (1,), generator=generator).item())
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> torch.Tensor | None:
        return torch.stack(self.images).cpu() if self.images else None

    def load_state_dict(self, images: torch.Tensor | None, device: torch.device) -> None:
        self.images = [] if images is None else [image.to(device) for image in images]
