"""The semi-supervised GAN's networks and loss terms: a K+1-class discriminator with virtual batch normalisation.

Madani, Moradi, Karargyris & Syeda-Mahmood (ISBI 2018), "Semi-supervised learning with generative adversarial
networks for chest X-ray classification with ability of data domain adaptation", after Salimans et al. (2016),
"Improved Techniques for Training GANs". The discriminator outputs K + 1 logits (K real classes, the last one
"generated"); the three terms of its loss ``L = L_labeled + L_unlabeled + L_generated`` are::

    L_labeled   = -E_{x,y ~ labelled}     log p(y | x, y < K+1)
    L_unlabeled = -E_{x ~ unlabelled real} log (1 - p(y = K+1 | x))
    L_generated = -E_{x ~ G}               log p(y = K+1 | x)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrgan.errors import CxrganError
from cxrgan.generators.blocks import n_doublings

SGAN_NORMS = ("virtual", "batch")


# ---- the three loss terms --------------------------------------------------------------------------------------
def labeled_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-mean log p(y | x, y < K+1)``: cross-entropy over the K real-class logits only."""
    return F.cross_entropy(logits[:, :-1], targets)


def unlabeled_loss(logits: torch.Tensor) -> torch.Tensor:
    """``-mean log(1 - p(K+1 | x))`` = ``-mean [logsumexp(l_1..l_K) - logsumexp(l_1..l_K+1)]``."""
    return -(torch.logsumexp(logits[:, :-1], dim=1) - torch.logsumexp(logits, dim=1)).mean()


def generated_loss(logits: torch.Tensor) -> torch.Tensor:
    """``-mean log p(K+1 | x)`` = ``-mean [l_K+1 - logsumexp(l_1..l_K+1)]``."""
    return -(logits[:, -1] - torch.logsumexp(logits, dim=1)).mean()


# ---- networks --------------------------------------------------------------------------------------------------
class VirtualBatchNorm2d(nn.Module):
    """Virtual batch normalisation (Salimans et al. 2016, sec. 3.4; the OpenAI improved-GAN formulation).

    ``forward(x, reference=True)`` normalises the reference batch with its own statistics and keeps them (with
    gradient) for the calls that follow; ``forward(x)`` then normalises each example with the mean and variance of
    the reference batch plus that example alone, weighted 1/(R+1), so examples never influence each other.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self._ref: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def forward(self, x: torch.Tensor, reference: bool = False) -> torch.Tensor:
        if reference:
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            meansq = (x * x).mean(dim=(0, 2, 3), keepdim=True)
            self._ref = (mean, meansq, len(x))
        elif self._ref is None:
            raise CxrganError("virtual batch norm needs a reference pass first (the model was not fitted)")
        else:
            ref_mean, ref_meansq, r = self._ref
            w = 1.0 / (r + 1)  # the reference batch plus this one example
            mean = w * x.mean(dim=(2, 3), keepdim=True) + (1 - w) * ref_mean
            meansq = w * (x * x).mean(dim=(2, 3), keepdim=True) + (1 - w) * ref_meansq
        var = (meansq - mean * mean).clamp_min(0.0)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class SGANDiscriminator(nn.Module):
    """(B, 1, S, S) image in [-1, 1] -> (B, K+1) logits; ``features`` returns the pooled last-layer features.

    DCGAN's strided 4 x 4 convolutions with LeakyReLU(0.2) (Radford et al. 2015), no normalisation on the first
    layer, then global average pooling, dropout and one linear layer to K + 1 logits.

    Args:
        image_size: input side (32 default as the paper; 64, 128, 256 also work).
        n_classes: K real classes (2: normal, abnormal).
        ndf: width of the first layer; each stride-2 layer doubles it (capped at 8x).
        norm: "virtual" (reference batch normalisation) or "batch".
        dropout: dropout before the linear layer (Salimans et al. used dropout in the discriminator).
    """

    def __init__(self, image_size: int = 32, n_classes: int = 2, ndf: int = 32, norm: str = "virtual",
                 dropout: float = 0.3):
        super().__init__()
        if norm not in SGAN_NORMS:
            raise CxrganError(f"unknown SGAN norm {norm!r}; expected one of {list(SGAN_NORMS)}")
        depth = n_doublings(image_size)
        widths = [ndf * min(2 ** i, 8) for i in range(depth)]
        self.norm, self.n_classes = norm, n_classes
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_channels = 1
        for i, width in enumerate(widths):
            self.convs.append(nn.Conv2d(in_channels, width, 4, 2, 1, bias=i == 0))
            self.norms.append(nn.Identity() if i == 0 else
                              VirtualBatchNorm2d(width) if norm == "virtual" else nn.BatchNorm2d(width))
            in_channels = width
        self.dropout = dropout
        self.to_logits = nn.Linear(in_channels, n_classes + 1)

    def _features(self, x: torch.Tensor, reference: bool) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = conv(x)
            x = norm(x, reference=reference) if isinstance(norm, VirtualBatchNorm2d) else norm(x)
            x = F.leaky_relu(x, 0.2)
        return x.mean(dim=(2, 3))

    def set_reference(self, reference: torch.Tensor) -> None:
        """Run the reference batch (virtual batch norm only): call once per optimisation step and before predicting."""
        if self.norm == "virtual":
            self._features(reference, reference=True)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self._features(x, reference=False)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits; in training mode dropout masks come from ``generator`` (never the global RNG)."""
        h = self.features(x)
        if self.training and self.dropout > 0:
            if generator is None:
                raise CxrganError("training-mode forward needs a torch.Generator for its dropout masks")
            keep = torch.rand(h.shape, generator=generator) >= self.dropout
            h = h * keep.to(h.device, h.dtype) / (1.0 - self.dropout)
        return self.to_logits(h)
