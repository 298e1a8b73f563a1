"""Per-label training losses (BCE, focal, LDAM), prior-based logit adjustment and deferred re-weighting.

Every task trains one sigmoid logit f_j per label column j (one column for a binary task, K for findings); each
column is a two-class problem whose classes are the column's negatives and positives, counted among known
entries as ``counts[j] = (n_j0, n_j1)``. The long-tail methods below are defined for softmax over classes; on a
sigmoid column they are the two-class softmax with logits (0, f_j), which gives the formulas in each docstring.
Unknown (NaN) targets contribute nothing, as in :func:`masked_bce`.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np
import torch
from torch import nn

from cxrgan.balance.stages import Loss
from cxrgan.errors import CxrganError

# Per-element loss: (logits (N, K) float, targets (N, K) in {0, 1} with unknown entries zeroed) -> (N, K) loss.
ElementLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Builds a per-element loss from a main stage's Loss (cxrgan.balance.stages) and the (K, 2) label counts.
LossFactory = Callable[[Loss, np.ndarray], ElementLoss]
LOSSES: dict[str, LossFactory] = {}


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Decorator adding ``factory(loss, counts) -> per-element loss`` to :data:`LOSSES` under ``name``."""

    def decorate(factory: LossFactory) -> LossFactory:
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is registered twice")
        LOSSES[name] = factory
        return factory

    return decorate


def bce_terms(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy per element, from logits."""
    return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")


def focal_terms(logits: torch.Tensor, targets: torch.Tensor, gamma: float) -> torch.Tensor:
    """Focal loss per element, FL(p_t) = -(1 - p_t)^gamma log(p_t) (Lin, Goyal, Girshick, He and Dollar 2017,
    "Focal Loss for Dense Object Detection", ICCV, eq. 4), p_t the predicted probability of the true class.

    Without the alpha weight of their eq. 5: per-class weights are ``class-weights``' job. Computed as
    (1 - exp(-BCE))^gamma * BCE, since BCE = -log p_t.
    """
    bce = bce_terms(logits, targets)
    return (1 - torch.exp(-bce)).pow(gamma) * bce


def ldam_margins(counts: np.ndarray, max_margin: float) -> np.ndarray:
    """LDAM margins per column and class: m_jc = C_j / n_jc^(1/4), C_j set so the column's rarer class gets
    ``max_margin`` (Cao, Wei, Gaidon, Arechiga and Ma 2019, "Learning Imbalanced Datasets with Label-Distribution-
    Aware Margin Loss", NeurIPS, the LDAM margins, and their code's max_m). A class without rows gets margin 0.

    Args:
        counts: (K, 2) negatives and positives per column.
        max_margin: the largest margin of each column.

    Returns a (K, 2) float array (negative-class margin, positive-class margin).
    """
    counts = np.asarray(counts, dtype=np.float64)
    margins = np.zeros_like(counts)
    for j, column in enumerate(counts):
        present = column > 0
        if present.any():
            margins[j, present] = max_margin * (column[present].min() / column[present]) ** 0.25
    return margins


def ldam_terms(logits: torch.Tensor, targets: torch.Tensor, margins: torch.Tensor, scale: float) -> torch.Tensor:
    """LDAM per element: the true class's logit lowered by its margin, logits scaled by s (Cao et al. 2019's LDAM loss).

    With logits (0, f) the positive class's margin gives BCE(s (f - m_j1), 1) and the negative class's gives
    BCE(s (f + m_j0), 0): f is pushed above m_j1 for positives and below -m_j0 for negatives.

    Args:
        margins: (K, 2) tensor from :func:`ldam_margins`.
        scale: s (30 in Cao et al.'s code and in Holste et al.'s LongTailCXR).
    """
    shift = margins[:, 0] * (1 - targets) - margins[:, 1] * targets
    return bce_terms(scale * (logits + shift), targets)


def log_prior_odds(counts: np.ndarray) -> np.ndarray:
    """log(pi_j / (1 - pi_j)) = log(n_j1 / n_j0) per column; 0 for a column lacking one class (nothing to adjust)."""
    counts = np.asarray(counts, dtype=np.float64)
    both = (counts > 0).all(axis=1)
    odds = np.zeros(len(counts))
    odds[both] = np.log(counts[both, 1] / counts[both, 0])
    return odds


def logit_offsets(counts: np.ndarray, tau: float) -> np.ndarray:
    """Logit adjustment offsets tau * log(pi_j / (1 - pi_j)) (Menon, Jayasumana, Rawat, Jain, Veit and Kumar 2021,
    "Long-tail learning via logit adjustment", ICLR, on the two-class softmax (0, f_j)).

    Loss form (their logit-adjusted loss): train on f_j + offset_j. Post-hoc form: predict with f_j - offset_j.
    A per-column constant shift of the logit leaves the ranking of scores, hence ROC and PR AUC, unchanged, and
    leaves the threshold metrics at a threshold tuned on validation scores of the same model unchanged too; the post-hoc
    form changes only decisions at a fixed threshold (e.g. the ``@0.5`` metrics). The loss form trains a different
    model, so it can change every metric.
    """
    return tau * log_prior_odds(counts)


def drw_weights(counts: np.ndarray, beta: float) -> np.ndarray:
    """Deferred re-weighting weights: w_jc proportional to 1 / E(n_jc), E(n) = (1 - beta^n) / (1 - beta) the
    effective number of samples (Cui, Jia, Lin, Song and Belongie 2019, "Class-Balanced Loss Based on Effective
    Number of Samples", CVPR), scaled so each column's two weights sum to 2 (Cao et al. 2019, Algorithm 1;
    LongTailCXR's get_CB_weights). A column lacking a class keeps weights (1, 1).

    Returns a (K, 2) float32 array (negative weight, positive weight), the layout of ``class_weights``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.ones_like(counts)
    for j, column in enumerate(counts):
        if (column > 0).all():
            inverse = (1 - beta) / (1 - beta ** column)
            weights[j] = 2 * inverse / inverse.sum()
    return weights.astype(np.float32)


def masked_mean(terms: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-element losses over known targets; ``class_weights`` (K, 2) weight negatives and positives."""
    known = ~torch.isnan(targets)
    safe_targets = torch.where(known, targets, torch.zeros_like(targets))
    if class_weights is not None:
        terms = terms * (safe_targets * class_weights[:, 1] + (1 - safe_targets) * class_weights[:, 0])
    return (terms * known).sum() / known.sum().clamp(min=1)


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over known labels; NaN targets (U-Ignore, unknown) contribute nothing.

    ``class_weights`` (K, 2) weights negative and positive targets per label column (the class-weights balancer).
    """
    safe_targets = torch.nan_to_num(targets, nan=0.0)
    return masked_mean(bce_terms(logits.float(), safe_targets), targets, class_weights)


@register_loss("bce")
def _bce(loss: Loss, counts: np.ndarray) -> ElementLoss:
    return bce_terms


@register_loss("focal")
def _focal(loss: Loss, counts: np.ndarray) -> ElementLoss:
    return partial(focal_terms, gamma=loss.focal_gamma)


@register_loss("ldam")
def _ldam(loss: Loss, counts: np.ndarray) -> ElementLoss:
    margins = torch.from_numpy(ldam_margins(counts, loss.ldam_max_margin)).float()
    return lambda logits, targets: ldam_terms(logits, targets, margins.to(logits.device), loss.ldam_scale)


def build_loss(loss: Loss, counts: np.ndarray) -> Callable[..., torch.Tensor]:
    """``loss(logits, targets, class_weights=None) -> scalar`` for a main stage's ``Loss``.

    The per-element loss is ``LOSSES[loss.name]``; with ``loss.logit_adjust_tau`` set it sees the logits plus
    :func:`logit_offsets`. Unknown targets are masked, ``class_weights`` applied as in :func:`masked_mean`.
    """
    loss.check()
    if loss.name not in LOSSES:
        raise CxrganError(f"unknown loss {loss.name!r}; available: {', '.join(sorted(LOSSES))}")
    terms = LOSSES[loss.name](loss, counts)
    adjust = loss.logit_adjust_tau is not None
    offsets = torch.from_numpy(logit_offsets(counts, loss.logit_adjust_tau if adjust else 1.0)).float()

    def per_label(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        if adjust:
            logits = logits + offsets.to(logits.device)
        return masked_mean(terms(logits, torch.nan_to_num(targets, nan=0.0)), targets, class_weights)

    return per_label


def output_layer(model: nn.Module, method: str) -> nn.Linear:
    """The final linear layer of a model split into ``features`` and ``head`` (``cxrgan.classify.Classifier``).

    Raises:
        CxrganError: the model has no such separable head (``method`` names what needed it).
    """
    head = getattr(model, "head", None)
    last = head[-1] if isinstance(head, nn.Sequential) and len(head) else head
    if not isinstance(getattr(model, "features", None), nn.Module) or not isinstance(last, nn.Linear):
        raise CxrganError(f"{method}: model {type(model).__name__} has no separable classifier head "
                          "(a 'features' module and a 'head' ending in nn.Linear)")
    return last
