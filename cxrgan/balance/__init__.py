"""Balancers: ``fit_resample(train_split) -> train_split``, classic and generator-backed, behind one registry."""

from cxrgan.balance.base import (BALANCER_FAMILIES, BALANCERS, BalanceContext, Balancer, check_train_split,
                                 label_powerset, make_balancer, register_balancer, register_balancer_family)
from cxrgan.balance.classic import (
    ClassWeightBalancer,
    IdentityBalancer,
    RandomOverBalancer,
    RandomUnderBalancer,
    SmoteBalancer,
)
from cxrgan.balance.augment import AugmentBalancer, flip_affine_tensor, random_flip_affine
from cxrgan.balance.gan import GANOversampler
from cxrgan.balance.complement import CycleGANComplement
from cxrgan.balance.finding_plans import choose_rare_findings
from cxrgan.balance.multilabel import LabelVectorCGAN, RareFindingDCGAN
from cxrgan.balance.pretrain import SyntheticPretraining
from cxrgan.balance.synthetic import SyntheticFileRows, check_synthetic_files
from cxrgan.balance.multilabel_resample import MLROSBalancer, MLRUSBalancer, MLSMOTEBalancer, mlsmote_samples
from cxrgan.balance.longtail import (
    ClassifierRetrainingMethod,
    FocalMethod,
    LdamDrwMethod,
    LogitAdjustMethod,
    LossSideMethod,
)

__all__ = [
    "BALANCERS",
    "BALANCER_FAMILIES",
    "register_balancer_family",
    "SyntheticFileRows",
    "check_synthetic_files",
    "BalanceContext",
    "Balancer",
    "make_balancer",
    "register_balancer",
    "AugmentBalancer",
    "GANOversampler",
    "CycleGANComplement",
    "LabelVectorCGAN",
    "RareFindingDCGAN",
    "SyntheticPretraining",
    "choose_rare_findings",
    "MLROSBalancer",
    "MLRUSBalancer",
    "MLSMOTEBalancer",
    "mlsmote_samples",
    "LossSideMethod",
    "FocalMethod",
    "LdamDrwMethod",
    "LogitAdjustMethod",
    "ClassifierRetrainingMethod",
    "ClassWeightBalancer",
    "IdentityBalancer",
    "RandomOverBalancer",
    "RandomUnderBalancer",
    "SmoteBalancer",
    "check_train_split",
    "label_powerset",
    "flip_affine_tensor",
    "random_flip_affine",
]
