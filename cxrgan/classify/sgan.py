"""The semi-supervised GAN as a classifier, and its matched CNN baseline, both trained by the generators' one loop.

Madani, Moradi, Karargyris & Syeda-Mahmood (ISBI 2018), "Semi-supervised learning with generative adversarial
networks for chest X-ray classification with ability of data domain adaptation". The model itself lives in
``cxrgan.generators.sgan`` (it is a GAN, registered as generator ``sgan``; its discriminator is the classifier,
``predict_proba``); this module adds ``MatchedCNN``, the paper's baseline: the very same network (same conv layers,
same K+1-logit head, same parameter count) trained with ``L_labeled`` only, and ``strip_labels``, the only form in
which an unlabelled set enters ``SemiSupervisedGAN.fit``.
"""

from __future__ import annotations

import numpy as np

from cxrgan.data import CXRDataset
from cxrgan.generators.sgan import GENERATOR_LOSSES, DiscriminatorClassifier, SemiSupervisedGAN, SGANConfig
from cxrgan.generators.sgan_networks import (SGAN_NORMS, SGANDiscriminator, VirtualBatchNorm2d, generated_loss,
                                             labeled_loss, unlabeled_loss)
from cxrgan.generators.seam import Batch, Statistic, StepContext

__all__ = ["GENERATOR_LOSSES", "SGAN_NORMS", "MatchedCNN", "SemiSupervisedGAN", "SGANConfig", "SGANDiscriminator",
           "VirtualBatchNorm2d", "generated_loss", "labeled_loss", "strip_labels", "unlabeled_loss"]


def strip_labels(dataset: CXRDataset) -> CXRDataset:
    """A copy of ``dataset`` whose labels are all NaN: the only form in which an unlabelled set enters ``fit``."""
    return CXRDataset(images=dataset.images, labels=np.full_like(dataset.labels, np.nan),
                      label_names=dataset.label_names,
                      meta=dataset.meta, class_names=dataset.class_names)


class MatchedCNN(DiscriminatorClassifier):
    """The paper's baseline: the SGAN discriminator network, trained on the labelled images with L_labeled only.

    Args:
        config: the same ``SGANConfig`` as the SGAN it is compared with (generator fields are ignored).
        device: torch device; None uses ``config.device``.
        run_dir: folder for checkpoints and metrics; None trains in memory only.
        step_hook: called with the number of finished steps after each step.
    """

    name = "matched-cnn"

    def fit(self, labeled: CXRDataset, random_state: int | None = None, resume: bool = False) -> MatchedCNN:
        """Train for ``config.steps`` steps of ``config.batch_size`` labelled images (``random_state``: the seed)."""
        self._seed(random_state)
        return super().fit(labeled, resume)

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]:
        (x, y), = batches
        net = self.discriminator_
        with ctx.autocast():
            net.set_reference(self._reference)
            logits = net(self._flip(x, ctx.rng), ctx.rng).float()
        loss = labeled_loss(logits, y[:, 0].long())
        ctx.check_finite("classifier", loss)
        optimizer = ctx.optimizers["discriminator"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {"loss_labeled": loss.detach()}
