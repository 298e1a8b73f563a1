"""Non-GAN domain adaptation controls for the SGAN's matched CNN: pseudo-labelling and normalisation re-estimation.

A reviewer of "unlabelled images of the target hospital help the SGAN" asks first whether a simpler use of the same
unlabelled images helps as much:

* **Pseudo-labelling** (Lee 2013, "Pseudo-Label: The Simple and Efficient Semi-Supervised Learning Method for Deep
  Neural Networks", ICML workshop): train on the labelled source, label the unlabelled target images whose
  predicted class probability reaches a threshold, retrain on both (one round of self-training).
* **Normalisation re-estimation** (Li et al. 2016, "Revisiting Batch Normalization for Practical Domain Adaptation",
  AdaBN): keep the weights, recompute the normalisation statistics on unlabelled target images. For the virtual
  batch norm of the SGAN network that means a reference batch of target images; for BatchNorm, running statistics
  re-accumulated over the target images.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cxrgan.classify.sgan import MatchedCNN, SGANConfig
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.transforms import images_to_tensor
from cxrgan.errors import CxrganError
from cxrgan.generators.sgan import check_unlabeled


def reestimate_normalisation(model: MatchedCNN, unlabeled: CXRDataset, random_state: int = 0) -> MatchedCNN:
    """Recompute ``model``'s normalisation statistics on the unlabelled target images, weights unchanged (AdaBN)."""
    check_unlabeled((unlabeled,))
    if len(unlabeled) == 0:
        raise CxrganError("normalisation re-estimation needs unlabelled target images; none were given")
    x = images_to_tensor(model._resized(unlabeled.images))
    rng = torch.Generator().manual_seed(random_state)
    net = model.discriminator_
    if model.config.norm == "virtual":
        model.reference_ = x[torch.randperm(len(x), generator=rng)[:model.config.reference_size]]
        return model
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over every target batch
    net.train()
    with torch.no_grad():
        for start in range(0, len(x), model.config.batch_size):
            net.features(x[start:start + model.config.batch_size].to(model.device))
    net.eval()
    return model


class PseudoLabelCNN(MatchedCNN):
    """The matched CNN with one round of pseudo-labelling on unlabelled images (Lee 2013).

    Args:
        config: the SGAN's config (the CNN uses its discriminator fields).
        threshold: predicted class probability a target image needs to receive a pseudo-label.
    """

    def __init__(self, config: SGANConfig = SGANConfig(), threshold: float = 0.9):
        if not 0.5 <= threshold < 1:
            raise CxrganError(f"pseudo-label threshold must lie in [0.5, 1), got {threshold}")
        super().__init__(config)
        self.threshold = threshold

    def fit(self, labeled: CXRDataset, unlabeled: CXRDataset | None = None, random_state: int = 0) -> PseudoLabelCNN:
        """Train on ``labeled``, pseudo-label the confident images of ``unlabeled``, retrain on both from scratch."""
        if unlabeled is None or len(unlabeled) == 0:
            raise CxrganError("pseudo-labelling needs unlabelled images; none were given")
        check_unlabeled((unlabeled,))
        teacher = MatchedCNN(self.config).fit(labeled, random_state=random_state)
        probabilities = teacher.predict_proba(unlabeled)
        confident = np.flatnonzero(probabilities.max(axis=1) >= self.threshold)
        pseudo = probabilities[confident].argmax(axis=1).astype(np.float32)
        self.n_pseudo_ = {"normal": int((pseudo == 0).sum()), "abnormal": int((pseudo == 1).sum())}
        combined = labeled
        if len(confident) and len(np.unique(pseudo)) == 2:  # one-class pseudo-labels would only skew the classes
            pseudo_rows = unlabeled.subset(confident)
            pseudo_rows = CXRDataset(pseudo_rows.images, pseudo[:, None], labeled.label_names,
                                     pseudo_rows.meta.assign(split="train"), class_names=labeled.class_names)
            combined = CXRDataset.concat([labeled, pseudo_rows])
        return super().fit(combined, random_state=random_state + 1)
