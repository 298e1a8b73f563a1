"""A classifier run's settings and result, and the checks that refuse settings before any data is loaded."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cxrgan import distributed
from cxrgan.classify.augmentations import AUGMENTATIONS
from cxrgan.classify.networks import CLASSIFIERS, check_weights
from cxrgan.data.dataset import CXRDataset
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError, RankAgreedError


@dataclass(frozen=True)
class TrainConfig:
    """Classifier training settings; every run writes the resolved config beside its results."""

    model: str = "resnet18"  # backbone name from cxrgan.classify.networks.CLASSIFIERS
    epochs: int = 12  # maximum epochs
    batch_size: int = 64  # images per optimisation step
    lr: float = 1e-4  # Adam learning rate (CheXpert baseline: 1e-4)
    weight_decay: float = 0.0  # Adam L2 penalty
    patience: int = 3  # stop after this many epochs without a better validation AUC
    bf16: bool = False  # bf16 autocast (CPU and CUDA); weights and optimiser stay fp32
    device: str = "auto"  # "auto" = CUDA when present, else CPU
    augment: str = "none"  # on-the-fly augmentation: "none", "flip" (p = 0.5) or "flip-affine" (+ small affine)
    lr_schedule: str = "constant"  # "constant" or "cosine" (decay to 0 over `epochs`, per step)
    weights_path: str | None = None  # optional local pretrained weights; default trains from scratch
    eval_batch_size: int = 256  # batch size for prediction
    progress: bool = True  # show a tqdm bar per epoch
    fp16: bool = False  # fp16 autocast with a gradient scaler (CUDA devices without bf16); weights stay fp32
    data_workers: int = 0  # processes reading training batches from the (memory-mapped) data; 0 = this process
    sync_batchnorm: bool = True  # under torchrun, BatchNorm statistics of the global batch (the one-process answer)
    # Resumable checkpoints (cxrgan.classify.checkpoint.CheckpointSchedule): a kill loses at most the epochs since
    # the last write; never written after the last epoch. Both 0 = never written (a killed cell starts again).
    checkpoint_seconds: float = 60.0  # write after the first epoch ending this long after the last write; 0 = off
    checkpoint_epochs: int = 0  # also write every this many epochs after the last write; 0 = off (1 = every epoch)

    @classmethod
    def upgrade_stored(cls, values: dict) -> dict:
        """A config written when a method's loss, schedule and pretraining were settings of this config (they are
        training stages now, returned by the method; the stored values were always the defaults)."""
        return {k: v for k, v in values.items() if k not in STAGE_FIELDS}


# The settings of TrainConfig that became training stages (cxrgan.balance.stages), read from older configs only.
STAGE_FIELDS = frozenset({"loss", "focal_gamma", "ldam_max_margin", "ldam_scale", "drw_start_epoch", "drw_beta",
                          "logit_adjust", "logit_adjust_tau", "label_counts", "crt_epochs", "pretrain_data",
                          "pretrain_epochs"})


@dataclass
class TrainResult:
    """What a finished training run hands to evaluation."""

    model: nn.Module  # the best model by validation AUC, in eval mode
    history: list[dict]  # one record per epoch: loss, val AUC, seconds
    best_epoch: int  # epoch (1-based) whose weights were kept
    best_val_auc: float  # its validation AUC (macro over labels)
    images_per_second: float  # training throughput over all epochs (all processes together)


def check_train_config(config: TrainConfig) -> None:
    """Refuse classifier settings that cannot train, before any data is loaded (one line naming the flag)."""
    if config.model not in CLASSIFIERS:
        raise CxrganError(f"--model {config.model!r}: unknown classifier; available: {', '.join(CLASSIFIERS)}")
    checks = {"--epochs": (config.epochs, config.epochs >= 1), "--batch-size": (config.batch_size, config.batch_size >= 2),
              "--lr": (config.lr, config.lr > 0), "--patience": (config.patience, config.patience >= 0),
              "--weight-decay": (config.weight_decay, config.weight_decay >= 0),
              "--checkpoint-seconds": (config.checkpoint_seconds, config.checkpoint_seconds >= 0),
              "--checkpoint-epochs": (config.checkpoint_epochs, config.checkpoint_epochs >= 0)}
    for flag, (value, ok) in checks.items():
        if not ok:
            raise CxrganError(f"{flag} {value}: out of range")
    if config.augment not in AUGMENTATIONS:
        raise CxrganError(f"--augment {config.augment!r}: unknown; available: {', '.join(AUGMENTATIONS)}")
    if config.lr_schedule not in ("constant", "cosine"):
        raise CxrganError(f"--lr-schedule {config.lr_schedule!r}: unknown; use constant or cosine")
    check_weights(config.weights_path, config.model)
    if config.data_workers < 0:
        raise CxrganError(f"--data-workers {config.data_workers}: out of range")
    if config.bf16 and config.fp16:
        raise CxrganError("bf16 and fp16 autocast exclude each other; choose one --precision")
    if config.fp16 and resolve_device(config.device).type != "cuda":
        raise CxrganError(f"--precision fp16 needs a CUDA device, not --device {config.device}")
    resolve_device(config.device)
    check_world_size(None, config.batch_size, distributed.world_size())


def check_world_size(train: CXRDataset | None, batch_size: int, world: int) -> None:
    """Refuse more processes than rows of a global batch allow (each needs two, for BatchNorm), or than training
    rows of a class (not every process could see a row of every class)."""
    if world < 2:
        return
    if batch_size < 2 * world:
        raise RankAgreedError(f"--batch-size {batch_size}: each of the {world} processes needs at least 2 rows of "
                              f"every batch (BatchNorm); use a batch of at least {2 * world} or fewer processes")
    if train is None:
        return
    if train.is_binary:
        y = train.labels[:, 0]
        counts = {name: int((y == value).sum()) for value, name in enumerate(train.display_names())}
    else:
        counts = {"rows": len(train)}
    short = {name: n for name, n in counts.items() if n < world}
    if short:
        name, n = next(iter(short.items()))
        raise RankAgreedError(f"{world} processes (--nproc_per_node x nodes) but the training split has only {n} "
                              f"{name!r} row(s); use at most {n} processes, or more training data")
