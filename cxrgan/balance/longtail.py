"""Loss-side long-tail methods: the rows stay as they are, the classifier's loss or schedule changes.

Holste et al. (2022), "Long-Tailed Classification of Thorax Diseases on Chest X-Ray: A New Benchmark Study"
(DALI, MICCAI workshop; code VITA-Group/LongTailCXR), balanced accuracy on NIH-CXR-LT: softmax 0.115, focal
0.122, LDAM 0.178, re-weighted LDAM-DRW 0.289, decoupled classifier re-training (cRT) 0.294. These methods are
the cheap fixes a generative method has to beat.

Each is a balancer (one registry with the row methods): ``fit_resample`` checks the training split like every
balancer, learns the per-label counts (``label_counts_``, (K, 2) negatives and positives; ``priors_``, the
positive share) and returns the rows unchanged; ``stages(epochs)`` returns the training stages the method needs
(``cxrgan.balance.stages``; the loss math lives in ``cxrgan.classify.losses``). Binary and multi-label
targets work alike: every label column is its own two-class problem with its own margins, priors and weights.

=========================  ===========================================================================================
method                     training change
=========================  ===========================================================================================
``focal``                  focal loss, gamma = 2 (Lin et al. 2017)
``ldam-drw``               LDAM margins C / n^(1/4) from the first epoch, plus effective-number re-weighting over
                           the last 20 % of the epochs (Cao et al. 2019: epoch 160 of 200)
``logit-adjust``           BCE on f + tau log(pi / (1 - pi)), tau = 1 (Menon et al. 2021, loss form)
``logit-adjust-posthoc``   plain training, then scores from f - tau log(pi / (1 - pi)) (Menon et al., post-hoc form;
                           changes only decisions at a fixed threshold: ROC / PR AUC and validation-tuned
                           thresholds are invariant to a per-label constant logit shift)
``crt``                    plain training, then the head re-initialised and re-trained alone on class-aware rows for
                           as many epochs again, backbone frozen (Kang et al. 2020)
=========================  ===========================================================================================
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import replace

import numpy as np

from cxrgan.balance.base import Balancer, Powerset, register_balancer
from cxrgan.balance.stages import DecoupledHead, Loss, Main, PosthocLogitAdjust, Stage
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.label_imbalance import label_counts
from cxrgan.errors import CxrganError


class LossSideMethod(Balancer):
    """Rows unchanged after the usual checks; per-label counts learnt for :meth:`stages`.

    Args:
        random_state: unused (the training seed drives any randomness); accepted so every method is built alike.
    """

    name = ""

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        self.label_counts_ = label_counts(dataset.labels)
        with np.errstate(invalid="ignore"):
            self.priors_ = self.label_counts_[:, 1] / self.label_counts_.sum(axis=1)
        self.sample_indices_ = np.arange(len(dataset))
        return replace(dataset)

    def stages(self, epochs: int) -> tuple[Stage, ...]:
        if not hasattr(self, "label_counts_"):
            raise CxrganError(f"{self.name}: call fit_resample before stages")
        counts = tuple((int(negatives), int(positives)) for negatives, positives in self.label_counts_)
        return self.method_stages(epochs, counts)

    def planned_images(self, train: CXRDataset, epochs: int) -> int:
        self.fit_resample(train)
        stages = self.stages(epochs)
        return len(train) * (epochs + sum(s.epochs for s in stages if isinstance(s, DecoupledHead)))

    @abstractmethod
    def method_stages(self, epochs: int, counts: tuple[tuple[int, int], ...]) -> tuple[Stage, ...]:
        """The stages of this method for a main stage of ``epochs`` epochs, given the training rows' label
        ``counts`` (per column: negatives, positives)."""


class FocalMethod(LossSideMethod):
    """``focal``: the focal loss FL(p_t) = -(1 - p_t)^gamma log p_t per label (Lin, Goyal, Girshick, He and Dollar
    2017, "Focal Loss for Dense Object Detection", ICCV, eq. 4; gamma = 2 is their and LongTailCXR's default).

    Args:
        random_state: unused.
        gamma: focusing parameter, >= 0 (0 is BCE).
    """

    name = "focal"

    def __init__(self, random_state: int, gamma: float = 2.0) -> None:
        if not gamma >= 0:
            raise CxrganError(f"focal: gamma must be >= 0, got {gamma}")
        super().__init__(random_state)
        self.gamma = float(gamma)

    def method_stages(self, epochs: int, counts: tuple[tuple[int, int], ...]) -> tuple[Stage, ...]:
        return (Main(Loss("focal", focal_gamma=self.gamma), label_counts=counts),)


class LdamDrwMethod(LossSideMethod):
    """``ldam-drw``: LDAM loss with deferred re-weighting (Cao, Wei, Gaidon, Arechiga and Ma 2019, "Learning
    Imbalanced Datasets with Label-Distribution-Aware Margin Loss", NeurIPS).

    Margins m_jc = C_j / n_jc^(1/4) per label column j and class c, the rarer class getting ``max_margin``
    (their LDAM loss), logits scaled by ``scale``; from epoch floor(``deferred_fraction`` * epochs) + 1 the loss is
    weighted per class by 1 / effective number, (1 - beta) / (1 - beta^n) (their Algorithm 1 with Cui et al.
    2019's weights; 0.8 is their epoch 160 of 200, beta 0.9999 as theirs and LongTailCXR's). The kept model is the
    best re-weighted one by validation AUC. The learning-rate schedule stays the run's: with the CPU recipes' cosine
    schedule the rate at 80 % of training is 0.1 of its peak, the x0.1 LongTailCXR applies at its DRW epoch.

    Args:
        random_state: unused.
        max_margin: largest margin (Cao et al.'s max_m), > 0.
        scale: logit scale s, > 0.
        deferred_fraction: share of the epochs trained before re-weighting, in [0, 1).
        beta: effective-number beta, in (0, 1).
    """

    name = "ldam-drw"

    def __init__(self, random_state: int, max_margin: float = 0.5, scale: float = 30.0,
                 deferred_fraction: float = 0.8, beta: float = 0.9999) -> None:
        for what, value, ok, rule in [("max margin", max_margin, max_margin > 0, "> 0"),
                                      ("scale", scale, scale > 0, "> 0"),
                                      ("deferred fraction", deferred_fraction, 0 <= deferred_fraction < 1, "in [0, 1)"),
                                      ("beta", beta, 0 < beta < 1, "in (0, 1)")]:
            if not ok:
                raise CxrganError(f"ldam-drw: {what} must be {rule}, got {value}")
        super().__init__(random_state)
        self.max_margin, self.scale = float(max_margin), float(scale)
        self.deferred_fraction, self.beta = float(deferred_fraction), float(beta)

    def method_stages(self, epochs: int, counts: tuple[tuple[int, int], ...]) -> tuple[Stage, ...]:
        start = math.floor(self.deferred_fraction * epochs) + 1
        loss = Loss("ldam", ldam_max_margin=self.max_margin, ldam_scale=self.scale)
        return (Main(loss, drw_start_epoch=start, drw_beta=self.beta, label_counts=counts),)


class LogitAdjustMethod(LossSideMethod):
    """``logit-adjust`` / ``logit-adjust-posthoc``: logit adjustment by the label priors (Menon, Jayasumana, Rawat,
    Jain, Veit and Kumar 2021, "Long-tail learning via logit adjustment", ICLR).

    Per label column j with prior pi_j = positives / known: the loss form trains BCE on f_j + tau log(pi_j /
    (1 - pi_j)) (their logit-adjusted loss), the post-hoc form trains plainly and scores with
    f_j - tau log(pi_j / (1 - pi_j)) (their post-hoc logit adjustment). A constant shift per column does not change
    ROC or PR AUC, nor metrics at a threshold tuned on the same model's validation scores (the Youden threshold of
    the tables); the post-hoc form changes only decisions at a fixed threshold, the ``@0.5`` metrics.

    Args:
        random_state: unused.
        tau: temperature, >= 0 (1 in Menon et al.).
        form: "loss" or "posthoc".
    """

    def __init__(self, random_state: int, tau: float = 1.0, form: str = "loss") -> None:
        if form not in ("loss", "posthoc"):
            raise CxrganError(f"logit-adjust: form must be 'loss' or 'posthoc', got {form!r}")
        self.name = "logit-adjust" if form == "loss" else "logit-adjust-posthoc"
        if not tau >= 0:
            raise CxrganError(f"{self.name}: tau must be >= 0, got {tau}")
        super().__init__(random_state)
        self.tau, self.form = float(tau), form

    def method_stages(self, epochs: int, counts: tuple[tuple[int, int], ...]) -> tuple[Stage, ...]:
        if self.form == "loss":
            return (Main(Loss(logit_adjust_tau=self.tau), label_counts=counts),)
        return (Main(label_counts=counts), PosthocLogitAdjust(self.tau))


class ClassifierRetrainingMethod(LossSideMethod):
    """``crt``: classifier re-training (Kang, Xie, Rohrbach, Yan, Gordo, Feng and Kalantidis 2020, "Decoupling
    Representation and Classifier for Long-Tailed Recognition", ICLR: cRT).

    Stage 1 trains the whole network on the rows as they are (instance-balanced). Stage 2 re-initialises the head's
    linear layer and trains it alone, backbone and its BatchNorm statistics frozen, on class-aware rows (a label,
    findings plus "no finding", uniformly, then a row carrying it: see :mod:`cxrgan.classify.decoupled`). A model
    without a separable head (``features`` + ``head``) is refused before training.

    Args:
        random_state: unused.
        head_epochs: stage-2 epochs (early-stopped with the run's patience); None = the run's ``epochs``, as
            LongTailCXR re-runs its whole early-stopped schedule for the head.
    """

    name = "crt"

    def __init__(self, random_state: int, head_epochs: int | None = None) -> None:
        if head_epochs is not None and head_epochs < 1:
            raise CxrganError(f"crt: head epochs must be >= 1, got {head_epochs}")
        super().__init__(random_state)
        self.head_epochs = head_epochs

    def method_stages(self, epochs: int, counts: tuple[tuple[int, int], ...]) -> tuple[Stage, ...]:
        return (Main(label_counts=counts), DecoupledHead(self.head_epochs or epochs))


# ---- registry -------------------------------------------------------------------------------------------------
LOSS_SIDE_METHODS = {
    "focal": FocalMethod,
    "ldam-drw": LdamDrwMethod,
    "logit-adjust": LogitAdjustMethod,
    "logit-adjust-posthoc": lambda random_state: LogitAdjustMethod(random_state, form="posthoc"),
    "crt": ClassifierRetrainingMethod,
}
for _name, _make in LOSS_SIDE_METHODS.items():
    register_balancer(_name)(lambda context, make=_make: make(random_state=context.random_state))
