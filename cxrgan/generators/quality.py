"""A cheap fidelity score tracked while training: Fréchet distance of samples to real rows in a fixed random-conv space.

Why this space. The audit (``cxrgan.evaluate.audit``) embeds images with a classifier trained on the real data,
which costs minutes; a score taken every few hundred steps must cost a second. Randomly initialised convolutional
networks give embeddings in which distribution distances still separate good from bad generators (Naeem, Oh, Uh,
Choi & Yoo 2020, "Reliable Fidelity and Diversity Metrics for Generative Models", sec. 5, random embeddings for
data unlike ImageNet). ``RandomConvFeatures`` is four stride-2 4 x 4 convolutions (16, 32, 64, 128 channels,
LeakyReLU 0.2) with He-normal weights drawn from a fixed seed, the same for every run, so scores are comparable
across runs and checkpoints; an image is described by the channel means of every layer (240 values: grey-level,
edge and texture statistics at four scales). The score is the Fréchet distance (Heusel et al. 2017) between
``quality_images`` samples and a fixed subset of as many real training rows. It ranks checkpoints of one run; it
is not the audit's FD, whose feature space knows the classes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import linalg
from torch import nn

from cxrgan.data.transforms import images_to_tensor
from cxrgan.errors import CxrganError

EMBEDDING_SEED = 0  # one fixed random network for every run
WIDTHS = (16, 32, 64, 128)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017, "GANs Trained by a
    Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", the FID formula):
    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise CxrganError(f"Fréchet distance: expected two (N, D) arrays with the same D, got {a.shape} and {b.shape}")
    if len(a) < 2 or len(b) < 2:
        raise CxrganError(f"Fréchet distance: needs at least 2 rows per set, got {len(a)} and {len(b)}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    sigma_a, sigma_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    # Tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD matrix: stable even
    # when fewer rows than feature dimensions make both covariances singular (where scipy's sqrtm is not).
    values, vectors = linalg.eigh(sigma_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    trace_covmean = np.sqrt(np.clip(linalg.eigvalsh(root_a @ sigma_b @ root_a), 0, None)).sum()
    distance = float(np.sum((mu_a - mu_b) ** 2) + np.trace(sigma_a) + np.trace(sigma_b) - 2 * trace_covmean)
    return max(distance, 0.0)


class RandomConvFeatures(nn.Module):
    """(N, 1, H, W) images in [-1, 1] -> (N, 240) channel means of four random stride-2 conv layers (H, W >= 16)."""

    def __init__(self, seed: int = EMBEDDING_SEED):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.layers = nn.ModuleList()
        in_channels = 1
        for width in WIDTHS:
            conv = nn.Conv2d(in_channels, width, 4, 2, 1)
            with torch.no_grad():  # He init for LeakyReLU, from the fixed generator only
                conv.weight.normal_(0.0, float(np.sqrt(2.0 / (in_channels * 16))), generator=generator)
                conv.bias.zero_()
            self.layers.append(conv)
            in_channels = width
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = []
        for conv in self.layers:
            x = nn.functional.leaky_relu(conv(x), 0.2)
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)

    @torch.no_grad()
    def embed(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, H, W) uint8 images -> (N, 240) float64 features (on the CPU, float32 arithmetic)."""
        chunks = [self(images_to_tensor(images[i:i + batch_size])).double().numpy() for i in range(0, len(images), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, sum(WIDTHS)))


class FidelityScore:
    """Scores a model by the Fréchet distance of its samples to a fixed subset of real training rows.

    Args:
        images: (N, H, W) uint8 real rows the model imitates.
        labels: their (N, K) labels to condition samples on (the same label mix as the real subset), or None.
        n: rows in the fixed subset (all when fewer).
        seed: picks the subset and seeds the sampling noise, so every score of a run sees the same draws.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray | None, n: int, seed: int):
        pick = np.sort(torch.randperm(len(images), generator=torch.Generator().manual_seed(seed + 4))[:n].numpy())
        self.labels = None if labels is None else np.asarray(labels)[pick]
        self.seed = seed + 5
        self.embedding = RandomConvFeatures()
        self.real = self.embedding.embed(np.ascontiguousarray(images[pick]))

    def __call__(self, model) -> float:
        """FD between ``model.quality_samples`` (as many as the real subset) and the real subset; lower is better."""
        fake = model.quality_samples(len(self.real), self.labels, torch.Generator().manual_seed(self.seed))
        return frechet_distance(self.embedding.embed(fake), self.real)
