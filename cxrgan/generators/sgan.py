"""Semi-supervised GAN: a K+1-class discriminator trained on labelled, unlabelled and generated images, by the one loop.

Madani, Moradi, Karargyris & Syeda-Mahmood (ISBI 2018), "Semi-supervised learning with generative adversarial
networks for chest X-ray classification with ability of data domain adaptation", after Salimans et al. (2016),
"Improved Techniques for Training GANs". The discriminator minimises ``L = L_labeled + w (L_unlabeled +
L_generated)`` (``sgan_networks``); the generator is the shared DCGAN generator, trained either with feature
matching (Salimans et al. 2016, sec. 3.1: match the mean of the discriminator's pooled last-layer features on real
and generated batches; the default, as in both papers) or with the plain non-saturating loss
``-log(1 - p(K+1 | G(z)))``.

The discriminator IS the classifier (``predict_proba``); the generator serves its training and draws images through
the generator interface (``sample``, unconditional: its images carry no label). ``cxrgan.classify.sgan.MatchedCNN``
is the paper's baseline: the same network trained with ``L_labeled`` only, through the same loop.

Batches come from the loop's streams: a labelled stream and an unlabelled one (the unlabelled datasets passed to
``fit``, plus training rows whose label is unknown; the labelled images stand in when there are none), each
randomly flipped when ``flip``. Defaults: 32 x 32 images and virtual batch normalisation (Salimans et al. 2016, sec.
3.4) in the discriminator, as the paper; its reference batch of real training images is drawn once at the start of
``fit``, so predictions do not depend on the batch. ``norm="batch"`` gives plain BatchNorm (real, unlabelled and
generated batches then go through separate forward passes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.images import resize_stack
from cxrgan.data.transforms import images_to_tensor, tensor_to_images
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.generators.base import GenerativeModel, check_training_rows, register_generator
from cxrgan.generators.blocks import DCGANGenerator, init_weights
from cxrgan.generators.sgan_networks import (SGAN_NORMS, SGANDiscriminator, generated_loss, labeled_loss,
                                             unlabeled_loss)
from cxrgan.generators.seam import Batch, Statistic, StepContext, Stream
from cxrgan.generators.trainable import TrainableModel, dataset_facts
from cxrgan.generators.trainer_config import TrainerConfig

GENERATOR_LOSSES = ("feature-matching", "plain")


@dataclass(frozen=True)
class SGANConfig(TrainerConfig):
    """Settings of the semi-supervised GAN and of its matched CNN baseline (which uses the D-side fields)."""

    steps: int = 1500  # optimisation steps (one D and one G update each)
    batch_size: int = 32  # labelled, unlabelled and generated images per step (each)
    image_size: int = 32  # the paper's 32 x 32; inputs are area-resized to it
    ndf: int = 32  # discriminator (= classifier) width of the first conv layer
    ngf: int = 32  # generator width of the last hidden layer
    z_dim: int = 100  # latent size
    norm: str = "virtual"  # "virtual" (paper) or "batch" normalisation in the discriminator
    reference_size: int = 64  # images in the fixed virtual-batch-norm reference batch
    generator_loss: str = "feature-matching"  # "feature-matching" (Salimans et al.) or "plain" non-saturating
    lr: float = 2e-4  # Adam learning rate of both networks
    betas: tuple[float, float] = (0.5, 0.999)  # Adam betas (DCGAN)
    dropout: float = 0.3  # discriminator dropout before the logits
    unlabeled_weight: float = 1.0  # weight of L_unlabeled + L_generated (1 = the paper's plain sum)
    flip: bool = True  # random horizontal flips of real images
    device: str = "cpu"  # "auto", "cpu" or "cuda"

    RUN_ONLY_FIELDS: ClassVar[frozenset[str]] = TrainerConfig.RUN_ONLY_FIELDS | {"device"}
    describes: ClassVar[str] = "SGAN"

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "image_size": self.image_size >= 16, "ndf": self.ndf >= 1, "ngf": self.ngf >= 1,
                "z_dim": self.z_dim >= 1, "reference_size": self.reference_size >= 1, "lr": self.lr > 0,
                "dropout": 0 <= self.dropout < 1}

    def __post_init__(self) -> None:
        if self.generator_loss not in GENERATOR_LOSSES:
            raise CxrganError(f"unknown generator loss {self.generator_loss!r}; expected one of {list(GENERATOR_LOSSES)}")
        if self.norm not in SGAN_NORMS:
            raise CxrganError(f"unknown SGAN norm {self.norm!r}; expected one of {list(SGAN_NORMS)}")
        super().__post_init__()


def check_unlabeled(datasets: Sequence[CXRDataset]) -> None:
    """The guard that keeps labels of unlabelled data out of training: any known label is an error."""
    for i, ds in enumerate(datasets):
        known = int((~np.isnan(ds.labels)).sum())
        if known:
            source = ds.meta["source"].iloc[0] if len(ds) else ""
            raise CxrganError(f"unlabelled dataset {i} ({source or 'no source'}) carries {known} known labels; "
                              "pass strip_labels(dataset) so its labels cannot reach training")


class DiscriminatorClassifier(TrainableModel):
    """The SGAN discriminator as a binary classifier: network, labelled stream, reference batch, ``predict_proba``.

    Args:
        config: ``SGANConfig`` (defaults when None).
        device: torch device; None uses ``config.device``.
        run_dir: folder for checkpoints and metrics; None trains in memory only.
        step_hook: called with the number of finished steps after each step.
    """

    config_class = SGANConfig
    divergence_statistic = None  # D wins nothing outright here: it is a classifier first
    min_train_images = 2  # the scarcity experiments start at one labelled image per class

    def __init__(self, config: SGANConfig | None = None, device: str | torch.device | None = None,
                 run_dir=None, step_hook=None):
        config = config if config is not None else SGANConfig()
        super().__init__(config, resolve_device(config.device) if device is None else device, run_dir, step_hook)
        self.reference_: torch.Tensor | None = None  # the fixed VBN reference batch, (R, 1, S, S) in [-1, 1]

    @property
    def discriminator_(self) -> SGANDiscriminator | None:
        return None if self.networks_ is None else self.networks_["discriminator"]

    def _seed(self, random_state: int | None) -> None:
        if random_state is not None:
            self.config = dataclasses.replace(self.config, seed=int(random_state))

    def _resized(self, images: np.ndarray) -> np.ndarray:
        return resize_stack(np.asarray(images), self.config.image_size)

    def _training_streams(self, dataset: CXRDataset) -> tuple[list[Stream], dict[str, Any]]:
        """The labelled stream: rows with a known label, targets in the label column."""
        if not dataset.is_binary:
            raise CxrganError(f"{self.name} classifies a binary task; got labels {list(dataset.label_names)}")
        known = ~np.isnan(dataset.labels[:, 0])
        if not known.any():
            raise CxrganError("the labelled dataset is empty")
        y = dataset.labels[known, 0]
        if len(np.unique(y)) < 2:
            raise CxrganError(f"the labelled dataset holds a single class ({int(y[0])}); both classes are needed")
        stream = Stream(self._resized(dataset.images[known]), y[:, None].astype(np.float32))
        return [stream], {"image_size": self.config.image_size, "n_labeled": int(known.sum()), "n_unlabeled": 0,
                          "n_train": int(known.sum())}

    def _initialise(self, streams: list[Stream]) -> None:
        self.build()
        pool = streams[-1].images  # the unlabelled stream of an SGAN, the labelled one of the CNN
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(self.config.seed + 3))
        self.reference_ = images_to_tensor(pool[pick[: self.config.reference_size].numpy()])

    def _discriminator(self) -> SGANDiscriminator:
        c = self.config
        D = SGANDiscriminator(c.image_size, 2, c.ndf, c.norm, c.dropout)
        init_weights(D, torch.Generator().manual_seed(c.seed + 1))
        return D.to(self.device)

    def _build_networks(self) -> nn.ModuleDict:
        return nn.ModuleDict({"discriminator": self._discriminator()})

    def start_training(self) -> dict[str, torch.optim.Optimizer]:
        self._reference = self.reference_.to(self.device)
        return {"discriminator": torch.optim.Adam(self.discriminator_.parameters(), lr=self.config.lr, betas=self.config.betas)}

    def _flip(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Random horizontal flips (``config.flip``) with per-image draws from ``rng``."""
        if not self.config.flip:
            return x
        flip = (torch.rand(len(x), generator=rng) < 0.5).to(x.device, non_blocking=True)
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    def preview_images(self) -> None:
        return None  # a classifier draws no images

    def quality_rows(self, streams: list[Stream]) -> None:
        return None

    def extra_state(self) -> dict[str, Any]:
        return {"reference": self.reference_}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.reference_ = state["reference"]

    @torch.no_grad()
    def predict_proba(self, dataset: CXRDataset | np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, K) class probabilities p(y | x, y < K+1); column 1 is the positive class of a binary task."""
        if self.networks_ is None:
            raise CxrganError("the model is not fitted; call fit first")
        images = dataset.images if isinstance(dataset, CXRDataset) else dataset
        x = images_to_tensor(self._resized(images))
        net = self.discriminator_
        net.eval()
        net.set_reference(self.reference_.to(self.device))
        out = [F.softmax(net(x[i:i + batch_size].to(self.device))[:, :-1].float(), dim=1).cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out).numpy() if out else np.empty((0, 2), np.float32)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.discriminator_.parameters())


@register_generator("sgan")
class SemiSupervisedGAN(DiscriminatorClassifier, GenerativeModel):
    """Madani et al.'s semi-supervised GAN: a K+1-class discriminator that is the classifier, plus a DCGAN generator.

    ``fit(labeled, unlabeled)`` trains from one labelled dataset and any number of unlabelled ones. The L_unlabeled
    batches come from the unlabelled rows only, so a second domain given without labels fills every such batch;
    with no unlabelled row the labelled images stand in (their labels unused there). Unlabelled datasets must carry
    no known label (see ``strip_labels``); that guard is what keeps a target domain's labels out of training.
    """

    summary = "semi-supervised GAN: a K+1-class discriminator classifier and a DCGAN generator (Madani et al. 2018)"
    ema_networks = ("generator",)
    # CPU preset: 1500 steps of 32 + 32 + 32 images at 32 px take about 2.5 minutes here (0.09-0.11 s a step).
    cpu_preset = dict(steps=1500, progress=False, log_every=50, checkpoint_every=250, grid_every=500, quality_every=250)
    full_preset = dict(steps=6000, ndf=64, ngf=64, batch_size=64, device="auto", progress=True, log_every=100,
                       checkpoint_every=1000, grid_every=1000, quality_every=500)

    @property
    def generator_(self) -> DCGANGenerator | None:
        return None if self.networks_ is None else self.networks_["generator"]

    @property
    def n_unlabeled_(self) -> int:
        return int(self.data_info_["n_unlabeled"])

    def fit(self, labeled: CXRDataset, unlabeled: Sequence[CXRDataset] = (), random_state: int | None = None,
            resume: bool = False) -> SemiSupervisedGAN:
        """Alternate one discriminator step on L = L_labeled + w (L_unlabeled + L_generated) and one generator step.

        Args:
            labeled: binary training rows; rows whose label is unknown (NaN) join the unlabelled ones.
            unlabeled: datasets whose labels are all NaN (``strip_labels``); may be empty.
            random_state: seed of the weights, batches, flips and latent draws (None: ``config.seed``).
            resume: continue ``run_dir``'s checkpoint when there is one.
        """
        unlabeled = tuple(unlabeled)
        check_unlabeled(unlabeled)
        self._seed(random_state)
        check_training_rows(labeled, "the sgan training set", self.min_train_images)
        for part in unlabeled:
            check_training_rows(part, "an unlabelled sgan dataset", 0)
        streams, info = self._training_streams(labeled)
        parts = [streams[1].images] if info["n_unlabeled"] else []
        parts += [self._resized(u.images) for u in unlabeled if len(u)]
        if parts:
            streams[1] = Stream(np.concatenate(parts))
            info["n_unlabeled"] = int(len(streams[1].images))
        info["n_train"] = info["n_labeled"] + info["n_unlabeled"]  # distinct rows (the stand-in stream repeats)
        return self._train(streams, {**dataset_facts(labeled), **info}, resume)

    def _training_streams(self, dataset: CXRDataset) -> tuple[list[Stream], dict[str, Any]]:
        streams, info = super()._training_streams(dataset)
        unknown = np.isnan(dataset.labels[:, 0])
        info["n_unlabeled"] = int(unknown.sum())
        info["n_train"] = info["n_labeled"] + info["n_unlabeled"]
        streams.append(Stream(self._resized(dataset.images[unknown])) if unknown.any() else Stream(streams[0].images))
        return streams, info

    def _build_networks(self) -> nn.ModuleDict:
        c = self.config
        G = DCGANGenerator(c.image_size, c.z_dim, c.ngf)
        init_weights(G, torch.Generator().manual_seed(c.seed + 2))
        return nn.ModuleDict({"discriminator": self._discriminator(), "generator": G.to(self.device)})

    def start_training(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = super().start_training()
        optimizers["generator"] = torch.optim.Adam(self.generator_.parameters(), lr=self.config.lr, betas=self.config.betas)
        return optimizers

    def _noise(self, n: int, rng: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.config.z_dim, generator=rng).to(self.device, non_blocking=True)

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]:
        c, net, gen = self.config, self.discriminator_, self.generator_
        (x_l, y), (x_u, _) = batches
        x_l, x_u, y = self._flip(x_l, ctx.rng), self._flip(x_u, ctx.rng), y[:, 0].long()
        n = len(x_l)
        with torch.no_grad(), ctx.autocast():
            fake = gen(self._noise(n, ctx.rng))
        with ctx.autocast():
            net.set_reference(self._reference)
            if c.norm == "virtual":  # no coupling between examples: one pass over all three batches
                l_lab, l_unl, l_gen = net(torch.cat([x_l, x_u, fake.to(x_l.dtype)]), ctx.rng).float().split(n)
            else:
                l_lab, l_unl, l_gen = (net(x, ctx.rng).float() for x in (x_l, x_u, fake))
        terms = {"loss_labeled": labeled_loss(l_lab, y), "loss_unlabeled": unlabeled_loss(l_unl),
                 "loss_generated": generated_loss(l_gen)}
        loss_d = terms["loss_labeled"] + c.unlabeled_weight * (terms["loss_unlabeled"] + terms["loss_generated"])
        ctx.check_finite("discriminator", loss_d)
        opt_d, opt_g = ctx.optimizers["discriminator"], ctx.optimizers["generator"]
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        net.requires_grad_(False)  # G step: no D weight gradients
        try:
            with ctx.autocast():
                fake = gen(self._noise(n, ctx.rng))
                net.set_reference(self._reference)
                if c.generator_loss == "feature-matching":
                    with torch.no_grad():
                        real_features = net.features(x_u).float().mean(0)
                    loss_g = (real_features - net.features(fake).float().mean(0)).pow(2).mean()
                else:
                    loss_g = unlabeled_loss(net(fake, ctx.rng).float())  # non-saturating: G wants its images called real
            ctx.check_finite("generator", loss_g)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        finally:
            net.requires_grad_(True)
        return {**{k: v.detach() for k, v in terms.items()}, "loss_d": loss_d.detach(), "loss_g": loss_g.detach()}

    def preview_images(self) -> tuple[np.ndarray, int]:
        return TrainableModel.preview_images(self)

    def quality_rows(self, streams: list[Stream]) -> tuple[np.ndarray, None]:
        return streams[1].images, None  # the real images the generator imitates: the unlabelled stream

    @torch.no_grad()
    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` generated (n, S, S) uint8 images (S = ``config.image_size``) and all-NaN labels: the generator is
        unconditional and the model does not label its images."""
        net = self.sampled("generator")
        if n < 0:
            raise CxrganError(f"cannot sample a negative number of images ({n})")
        if labels is not None:
            raise CxrganError("the sgan generator is unconditional; it cannot draw images of requested labels")
        generator = generator if generator is not None else torch.Generator().manual_seed(self.config.seed)
        was_training = net.training
        net.eval()
        try:
            images = tensor_to_images(net(self._noise(n, generator))) if n else \
                np.zeros((0, self.config.image_size, self.config.image_size), np.uint8)
        finally:
            net.train(was_training)
        return images, np.full((n, len(self.data_info_["label_names"])), np.nan, np.float32)
