"""Semi-supervised GAN classifier: a K+1-class discriminator trained on labelled, unlabelled and generated images.

Madani, Moradi, Karargyris & Syeda-Mahmood (ISBI 2018), "Semi-supervised learning with generative adversarial
networks for chest X-ray classification with ability of data domain adaptation", after Salimans et al. (2016),
"Improved Techniques for Training GANs". The discriminator outputs K + 1 logits (K real classes, the last one
"generated") and minimises ``L = L_labeled + L_unlabeled + L_generated``::

    L_labeled   = -E_{x,y ~ labelled}     log p(y | x, y < K+1)
    L_unlabeled = -E_{x ~ unlabelled real} log (1 - p(y = K+1 | x))
    L_generated = -E_{x ~ G}               log p(y = K+1 | x)

The generator is the shared DCGAN generator, trained either with feature matching (Salimans et al. 2016, sec.
3.1: match the mean of the discriminator's pooled last-layer features on real and generated batches; the
default, as in both papers) or with the plain non-saturating loss ``-log(1 - p(K+1 | G(z)))``.

It lives in ``classify/`` rather than ``generators/`` because its product is a classifier: the discriminator IS
the classifier (``predict_proba``), the generator only serves its training. It is therefore not registered as a
balancer's generator, although ``sample`` still draws images. ``MatchedCNN`` is the paper's baseline: the very same
network (same conv layers, same K+1-logit head, same parameter count) trained with ``L_labeled`` only.

Defaults: 32 x 32 images and virtual batch normalisation (Salimans et al. 2016, sec. 3.4) in the discriminator,
as the paper; a reference batch of real training images is drawn once at the start of ``fit`` and every example is
normalised with the statistics of that batch plus itself, so predictions do not depend on the batch. ``norm="batch"``
gives plain BatchNorm (real, unlabelled and generated batches then go through separate forward passes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrgan.data import CXRDataset
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.generators.blocks import DCGANGenerator, init_weights, n_doublings

SGAN_NORMS = ("virtual", "batch")
GENERATOR_LOSSES = ("feature-matching", "plain")


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


# ---- configuration and models ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SGANConfig:
    """Settings of the semi-supervised GAN and of its matched CNN baseline (which uses the D-side fields)."""

    image_size: int = 32  # the paper's 32 x 32; inputs are area-resized to it
    ndf: int = 32  # discriminator (= classifier) width of the first conv layer
    ngf: int = 32  # generator width of the last hidden layer
    z_dim: int = 100  # latent size
    norm: str = "virtual"  # "virtual" (paper) or "batch" normalisation in the discriminator
    reference_size: int = 64  # images in the fixed virtual-batch-norm reference batch
    generator_loss: str = "feature-matching"  # "feature-matching" (Salimans et al.) or "plain" non-saturating
    steps: int = 1500  # optimisation steps (one D and one G update each)
    batch_size: int = 32  # labelled, unlabelled and generated images per step (each)
    lr: float = 2e-4  # Adam learning rate of both networks
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (DCGAN)
    dropout: float = 0.3  # discriminator dropout before the logits
    unlabeled_weight: float = 1.0  # weight of L_unlabeled + L_generated (1 = the paper's plain sum)
    flip: bool = True  # random horizontal flips of real images
    device: str = "cpu"  # "auto", "cpu" or "cuda"


def strip_labels(dataset: CXRDataset) -> CXRDataset:
    """A copy of ``dataset`` whose labels are all NaN: the only form in which an unlabelled set enters ``fit``."""
    return CXRDataset(images=dataset.images, labels=np.full_like(dataset.labels, np.nan),
                      label_names=dataset.label_names,
                      meta=dataset.meta, class_names=dataset.class_names)


def _check_unlabeled(datasets: Sequence[CXRDataset]) -> None:
    """The guard that keeps labels of unlabelled data out of training: any known label is an error."""
    for i, ds in enumerate(datasets):
        known = int((~np.isnan(ds.labels)).sum())
        if known:
            source = ds.meta["source"].iloc[0] if len(ds) else ""
            raise CxrganError(f"unlabelled dataset {i} ({source or 'no source'}) carries {known} known labels; "
                              "pass strip_labels(dataset) so its labels cannot reach training")


def _to_tensor(images: np.ndarray, size: int) -> torch.Tensor:
    from cxrgan.data.images import resize_stack

    images = resize_stack(np.asarray(images), size)
    return torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0)[:, None]


class _DiscriminatorClassifier:
    """Shared by both models: the network, the reference batch and ``predict_proba``."""

    config: SGANConfig

    def _init(self, n_classes: int, generator: torch.Generator) -> None:
        c = self.config
        self.device_ = resolve_device(c.device)
        self.discriminator_ = SGANDiscriminator(c.image_size, n_classes, c.ndf, c.norm, c.dropout)
        init_weights(self.discriminator_, generator)
        self.discriminator_.to(self.device_)
        self.n_classes_ = n_classes

    def _draw(self, x_pool: torch.Tensor, n: int, rng: torch.Generator,
              y_pool: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` images drawn with replacement (randomly flipped when ``config.flip``) and their labels if given."""
        index = torch.randint(len(x_pool), (n,), generator=rng)
        x = x_pool[index]
        if self.config.flip:
            flip = torch.rand(n, generator=rng) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x.to(self.device_), None if y_pool is None else y_pool[index].to(self.device_)

    @torch.no_grad()
    def predict_proba(self, dataset: CXRDataset | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, K) class probabilities p(y | x, y < K+1); column 1 is the positive class of a binary task."""
        if not hasattr(self, "discriminator_"):
            raise CxrganError("the model is not fitted; call fit first")
        images = dataset.images if isinstance(dataset, CXRDataset) else dataset
        x = _to_tensor(images, self.config.image_size)
        net = self.discriminator_
        net.eval()
        net.set_reference(self.reference_.to(self.device_))
        out = [F.softmax(net(x[i:i + batch_size].to(self.device_))[:, :-1].float(), dim=1).cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.empty((0, self.n_classes_), np.float32)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.discriminator_.parameters())


def _labelled_tensors(labeled: CXRDataset, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if len(labeled) == 0:
        raise CxrganError("the labelled dataset is empty")
    y = torch.from_numpy(labeled.binary_targets())
    if len(torch.unique(y)) < 2:
        raise CxrganError(f"the labelled dataset holds a single class ({int(y[0])}); both classes are needed")
    return _to_tensor(labeled.images, size), y


class MatchedCNN(_DiscriminatorClassifier):
    """The paper's baseline: the SGAN discriminator network, trained on the labelled images with L_labeled only.

    Args:
        config: the same ``SGANConfig`` as the SGAN it is compared with (generator fields are ignored).
    """

    def __init__(self, config: SGANConfig = SGANConfig()):
        self.config = config

    def fit(self, labeled: CXRDataset, random_state: int = 0) -> MatchedCNN:
        """Train for ``config.steps`` steps of ``config.batch_size`` labelled images (drawn with replacement)."""
        c = self.config
        rng = torch.Generator().manual_seed(random_state)
        self._init(2, rng)
        x_lab, y_lab = _labelled_tensors(labeled, c.image_size)
        self.reference_ = x_lab[torch.randperm(len(x_lab), generator=rng)[:c.reference_size]]
        reference = self.reference_.to(self.device_)
        net = self.discriminator_
        optimizer = torch.optim.Adam(net.parameters(), lr=c.lr, betas=c.betas)
        net.train()
        self.history_ = []
        for step in range(c.steps):
            x, y = self._draw(x_lab, c.batch_size, rng, y_lab)
            net.set_reference(reference)
            loss = labeled_loss(net(x, rng), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step % 50 == 0 or step == c.steps - 1:
                self.history_.append({"step": step, "loss_labeled": float(loss.detach())})
        return self


class SemiSupervisedGAN(_DiscriminatorClassifier):
    """Madani et al.'s semi-supervised GAN: a K+1-class discriminator that is the classifier, plus a DCGAN generator.

    ``fit(labeled, unlabeled)`` trains from one labelled dataset and any number of unlabelled ones. The L_unlabeled
    batches are drawn from the unlabelled datasets only, so a second domain given without labels fills every such
    batch; with no unlabelled dataset the labelled images stand in (their labels unused there). Unlabelled
    datasets must carry no known label (see ``strip_labels``); that guard is what keeps a target domain's labels out
    of training.

    Args:
        config: network, loss and optimisation settings (``SGANConfig``; defaults documented there).
    """

    def __init__(self, config: SGANConfig = SGANConfig()):
        if config.generator_loss not in GENERATOR_LOSSES:
            raise CxrganError(f"unknown generator loss {config.generator_loss!r}; "
                              f"expected one of {list(GENERATOR_LOSSES)}")
        self.config = config

    def fit(self, labeled: CXRDataset, unlabeled: Sequence[CXRDataset] = (),
            random_state: int = 0) -> SemiSupervisedGAN:
        """Alternate one discriminator step on L = L_labeled + w (L_unlabeled + L_generated) and one generator step.

        Args:
            labeled: binary dataset with a known label on every row.
            unlabeled: datasets whose labels are all NaN (``strip_labels``); may be empty.
            random_state: seed of the weights, batches, flips and latent draws.
        """
        c = self.config
        unlabeled = tuple(unlabeled)
        _check_unlabeled(unlabeled)
        rng = torch.Generator().manual_seed(random_state)
        self._init(2, rng)
        x_lab, y_lab = _labelled_tensors(labeled, c.image_size)
        parts = [_to_tensor(u.images, c.image_size) for u in unlabeled if len(u)]
        x_unl = torch.cat(parts) if parts else x_lab  # without unlabelled data, the labelled images stand in
        self.n_unlabeled_ = sum(len(p) for p in parts)
        self.reference_ = x_unl[torch.randperm(len(x_unl), generator=rng)[:c.reference_size]]
        reference = self.reference_.to(self.device_)
        self.generator_ = DCGANGenerator(c.image_size, c.z_dim, c.ngf)
        init_weights(self.generator_, rng)
        self.generator_.to(self.device_)
        net, gen = self.discriminator_, self.generator_
        opt_d = torch.optim.Adam(net.parameters(), lr=c.lr, betas=c.betas)
        opt_g = torch.optim.Adam(gen.parameters(), lr=c.lr, betas=c.betas)
        net.train()
        gen.train()
        self.history_ = []
        for step in range(c.steps):
            x_l, y = self._draw(x_lab, c.batch_size, rng, y_lab)
            x_u, _ = self._draw(x_unl, c.batch_size, rng)
            with torch.no_grad():
                fake = gen(self._noise(c.batch_size, rng))
            net.set_reference(reference)
            if c.norm == "virtual":  # no coupling between examples: one pass over all three batches
                l_lab, l_unl, l_gen = net(torch.cat([x_l, x_u, fake]), rng).split(c.batch_size)
            else:
                l_lab, l_unl, l_gen = net(x_l, rng), net(x_u, rng), net(fake, rng)
            terms = {"loss_labeled": labeled_loss(l_lab, y), "loss_unlabeled": unlabeled_loss(l_unl),
                     "loss_generated": generated_loss(l_gen)}
            loss_d = terms["loss_labeled"] + c.unlabeled_weight * (terms["loss_unlabeled"] + terms["loss_generated"])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()

            fake = gen(self._noise(c.batch_size, rng))
            net.set_reference(reference)
            if c.generator_loss == "feature-matching":
                with torch.no_grad():
                    real_features = net.features(x_u).mean(0)
                loss_g = (real_features - net.features(fake).mean(0)).pow(2).mean()
            else:
                loss_g = unlabeled_loss(net(fake, rng))  # non-saturating: G wants its images called real
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            if step % 50 == 0 or step == c.steps - 1:
                self.history_.append({"step": step, **{k: float(v.detach()) for k, v in terms.items()},
                                      "loss_g": float(loss_g.detach())})
        gen.eval()
        return self

    def _noise(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.config.z_dim, generator=rng).to(self.device_)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> np.ndarray:
        """``n`` generated images as an (n, S, S) uint8 array (S = ``config.image_size``)."""
        if not hasattr(self, "generator_"):
            raise CxrganError("the model is not fitted; call fit first")
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.generator_.eval()
        x = self.generator_(self._noise(n, generator)).float().cpu()
        return ((x[:, 0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()

