"""What a method asks of the classifier's training, as typed stages that ``cxrgan.classify.train_classifier`` runs in
order: pretraining on synthetic rows, the main training (its loss and deferred re-weighting), a decoupled head, and
a post-hoc logit adjustment.

A balancer returns its stages (``Balancer.stages``) after ``fit_resample``; nothing rewrites the classifier's settings
by field name. The stages sit beside the balancers, one floor below ``classify``, which imports them: a method
declares what it needs, the training loop does it. The loss math lives in ``cxrgan.classify.losses``.
"""

from __future__ import annotations

from dataclasses import dataclass

from cxrgan.errors import CxrganError

@dataclass(frozen=True)
class Loss:
    """The per-label loss the optimiser sees in the main stage."""

    name: str = "bce"  # a key of cxrgan.classify.losses.LOSSES: "bce", "focal" (Lin 2017), "ldam" (Cao 2019)
    focal_gamma: float = 2.0  # focal loss focusing parameter gamma; 0 is BCE
    ldam_max_margin: float = 0.5  # LDAM margin of each column's rarer class (Cao et al. 2019's max_m)
    ldam_scale: float = 30.0  # LDAM logit scale s (Cao et al.'s code and LongTailCXR use 30)
    logit_adjust_tau: float | None = None  # train on f + tau log prior odds (Menon et al. 2021, loss form); None off

    def check(self) -> None:
        """Refuse settings no run can use, with one line naming the value (the name: where the losses live)."""
        checks = [("focal: gamma", self.focal_gamma, self.focal_gamma >= 0, ">= 0"),
                  ("ldam: max margin", self.ldam_max_margin, self.ldam_max_margin > 0, "> 0"),
                  ("ldam: scale", self.ldam_scale, self.ldam_scale > 0, "> 0"),
                  ("logit adjustment: tau", self.logit_adjust_tau,
                   self.logit_adjust_tau is None or self.logit_adjust_tau >= 0, ">= 0")]
        for what, value, ok, rule in checks:
            if not ok:
                raise CxrganError(f"{what} must be {rule}, got {value}")


@dataclass(frozen=True)
class Pretrain:
    """Before the main stage: epochs on other rows (a synthetic set) with a fresh optimiser, the last weights kept
    for the main stage (pretrain, then fine-tune: RoentGen-v2, arXiv 2508.16783, 2025)."""

    data: str  # compact .npz of the rows to pretrain on (same labels and image size as the training rows)
    epochs: int  # epochs on them, >= 1


@dataclass(frozen=True)
class Main:
    """The training on the (balanced) training rows, early-stopped on validation AUC."""

    loss: Loss = Loss()  # the per-label loss
    drw_start_epoch: int = 0  # deferred re-weighting from this epoch on, 1-based; 0 = never (Cao et al. 2019)
    drw_beta: float = 0.9999  # beta of the effective-number weights used by DRW (Cui et al. 2019)
    label_counts: tuple[tuple[int, int], ...] | None = None  # per column (negatives, positives) for LDAM margins,
    #   DRW weights and priors; None = counted on the training rows


@dataclass(frozen=True)
class DecoupledHead:
    """After the main stage: a fresh head trained alone on class-aware rows, backbone frozen (cRT, Kang et al. 2020)."""

    epochs: int  # head epochs (early-stopped with the run's patience), >= 1


@dataclass(frozen=True)
class PosthocLogitAdjust:
    """Last: the final model's output bias shifted by -tau log prior odds (Menon et al. 2021, post-hoc form)."""

    tau: float = 1.0  # temperature, >= 0


Stage = Pretrain | Main | DecoupledHead | PosthocLogitAdjust
ORDER = (Pretrain, Main, DecoupledHead, PosthocLogitAdjust)  # the order stages run in; Main is always there


def check_stages(stages: tuple[Stage, ...], epochs: int) -> tuple[Stage, ...]:
    """Stages in the order they run, each kind at most once and ``Main`` present; settings refused with one line.

    Args:
        stages: what a method asks for.
        epochs: the run's maximum epochs of the main stage (deferred re-weighting must start within them).
    """
    kinds = [type(stage) for stage in stages]
    if any(kind not in ORDER for kind in kinds) or len(set(kinds)) != len(kinds) or Main not in kinds:
        raise CxrganError(f"training stages {[k.__name__ for k in kinds]}: each kind at most once, Main always "
                          f"(kinds: {', '.join(k.__name__ for k in ORDER)})")
    ordered = tuple(sorted(stages, key=lambda stage: ORDER.index(type(stage))))
    for stage in ordered:
        if isinstance(stage, Main):
            stage.loss.check()
            if stage.drw_start_epoch < 0:
                raise CxrganError(f"drw: start epoch must be >= 0, got {stage.drw_start_epoch}")
            if stage.drw_start_epoch > epochs:
                raise CxrganError(f"drw: start epoch {stage.drw_start_epoch} is after the last epoch {epochs}")
            if not 0 < stage.drw_beta < 1:
                raise CxrganError(f"drw: beta must be in (0, 1), got {stage.drw_beta}")
        elif isinstance(stage, (Pretrain, DecoupledHead)) and stage.epochs < 1:
            what = "crt: head epochs" if isinstance(stage, DecoupledHead) else "pretraining: epochs"
            raise CxrganError(f"{what} must be >= 1, got {stage.epochs}")
        elif isinstance(stage, PosthocLogitAdjust) and not stage.tau >= 0:
            raise CxrganError(f"logit adjustment: tau must be >= 0, got {stage.tau}")
    return ordered
