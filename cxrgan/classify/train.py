"""One plain classifier training loop: a masked per-label loss, Adam, early stopping on validation AUC, atomic
checkpoints, resume, data-parallel under torchrun; optional long-tail settings (focal / LDAM loss, deferred
re-weighting, logit adjustment, classifier re-training)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from cxrgan import distributed
from cxrgan.classify.augmentations import AUGMENTATIONS
from cxrgan.classify.checkpoint import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint  # noqa: F401
from cxrgan.classify.decoupled import class_aware_rows, reset_head
from cxrgan.classify.losses import (  # noqa: F401 (masked_bce: importable from here, as before it moved)
    build_loss,
    check_loss_settings,
    drw_weights,
    logit_offsets,
    masked_bce,
    output_layer,
)
from cxrgan.classify.networks import build_classifier, check_weights
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.label_imbalance import label_counts
from cxrgan.data.loader import batch_loader
from cxrgan.data.transforms import uint8_tensor
from cxrgan.device import autocast, resolve_device, seeded
from cxrgan.errors import CxrganError, RankAgreedError
from cxrgan.io import usable_or_discarded

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
    # Long-tail settings (cxrgan.classify.losses); loss-side methods set them through Balancer.adapt_training.
    loss: str = "bce"  # per-label loss from cxrgan.classify.losses.LOSSES: "bce", "focal" or "ldam"
    focal_gamma: float = 2.0  # focal loss focusing parameter gamma (Lin et al. 2017); 0 is BCE
    ldam_max_margin: float = 0.5  # LDAM margin of each column's rarer class (Cao et al. 2019's max_m)
    ldam_scale: float = 30.0  # LDAM logit scale s (Cao et al.'s code and LongTailCXR use 30)
    drw_start_epoch: int = 0  # deferred re-weighting from this epoch on, 1-based; 0 = never (Cao et al. 2019)
    drw_beta: float = 0.9999  # beta of the effective-number weights used by DRW (Cui et al. 2019)
    logit_adjust: str = "none"  # "none", "loss" (train on f + tau log prior odds) or "posthoc" (subtract after)
    logit_adjust_tau: float = 1.0  # tau of the logit-adjustment offsets (Menon et al. 2021)
    label_counts: tuple[tuple[int, int], ...] | None = None  # per column (negatives, positives) for LDAM margins,
    #   DRW weights and priors; None = counted on the training rows
    crt_epochs: int = 0  # cRT: epochs retraining a fresh head, backbone frozen, on class-aware rows; 0 = off
    fp16: bool = False  # fp16 autocast with a gradient scaler (CUDA devices without bf16); weights stay fp32
    data_workers: int = 0  # processes reading training batches from the (memory-mapped) data; 0 = this process
    sync_batchnorm: bool = True  # under torchrun, BatchNorm statistics of the global batch (the one-process answer)
    # Synthetic pretraining (the synth-pretrain methods set it through Balancer.adapt_training).
    pretrain_data: str | None = None  # compact .npz of (synthetic) rows to pretrain on before the training rows
    pretrain_epochs: int = 0  # epochs on pretrain_data before the epochs above; 0 = no pretraining


@dataclass
class TrainResult:
    """What a finished training run hands to evaluation."""

    model: nn.Module  # the best model by validation AUC, in eval mode
    history: list[dict]  # one record per epoch: loss, val AUC, seconds
    best_epoch: int  # epoch (1-based) whose weights were kept
    best_val_auc: float  # its validation AUC (macro over labels)
    images_per_second: float  # training throughput over all epochs (all processes together)


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean ROC AUC over label columns that have both classes among known rows (NaN if none has)."""
    aucs = []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if len(np.unique(y)) == 2:
            aucs.append(roc_auc_score(y, scores[known, j]))
    return float(np.mean(aucs)) if aucs else float("nan")


@torch.no_grad()
def predict(model: nn.Module, dataset: CXRDataset, device: torch.device | str = "cpu", batch_size: int = 256,
            bf16: bool = False, shared: bool = False, fp16: bool = False) -> np.ndarray:
    """Sigmoid probabilities (N, K) for every row, in order.

    ``shared``: under torchrun, every process scores its own block of rows and all receive every score (every
    process must call it together); otherwise one process scores all rows."""
    device = torch.device(device)
    model.eval()
    rows = range(len(dataset))
    if shared and distributed.active():
        block = -(-len(dataset) // distributed.world_size())
        rows = range(min(len(dataset), distributed.rank() * block), min(len(dataset), (distributed.rank() + 1) * block))
    outputs = []
    for start in range(rows.start, rows.stop, batch_size):
        x = _to_input(dataset.images[start:min(start + batch_size, rows.stop)], device)
        with autocast(device, bf16, fp16):
            outputs.append(torch.sigmoid(model(x).float()).cpu())
    scores = torch.cat(outputs).numpy() if outputs else np.zeros((0, dataset.n_labels), np.float32)
    if shared and distributed.active():
        scores = np.concatenate(distributed.gather_objects(scores))
    return scores


def check_train_config(config: TrainConfig) -> None:
    """Refuse classifier settings that cannot train, before any data is loaded (one line naming the flag)."""
    from cxrgan.classify.networks import CLASSIFIERS

    if config.model not in CLASSIFIERS:
        raise CxrganError(f"--model {config.model!r}: unknown classifier; available: {', '.join(CLASSIFIERS)}")
    checks = {"--epochs": (config.epochs, config.epochs >= 1), "--batch-size": (config.batch_size, config.batch_size >= 2),
              "--lr": (config.lr, config.lr > 0), "--patience": (config.patience, config.patience >= 0),
              "--weight-decay": (config.weight_decay, config.weight_decay >= 0)}
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
    _check_pretraining(config)
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


def _check_pretraining(config: TrainConfig) -> None:
    if config.pretrain_epochs < 0 or (config.pretrain_epochs > 0) != (config.pretrain_data is not None):
        raise CxrganError(f"pretrain_epochs {config.pretrain_epochs} with pretrain_data {config.pretrain_data!r}: "
                          "pretraining needs both a data file and a positive number of epochs")


def train_classifier(
    train: CXRDataset,
    val: CXRDataset,
    config: TrainConfig,
    seed: int,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train ``config.model`` on ``train`` and keep the weights with the best validation AUC.

    Randomness (initial weights, batch order, flips) comes only from ``seed``; the global RNG is left as found.
    Under ``torchrun`` (data parallel, DistributedDataParallel) every process draws the same batch order and
    augmentation parameters, takes every ``world``-th row of each global batch of ``config.batch_size`` rows, and
    weights its loss by its share of the batch's known labels, so the averaged gradient is the gradient of the
    global batch; with ``sync_batchnorm`` BatchNorm also sees the global batch, and the run matches one process up
    to floating-point summation order. Validation rows are scored in shares; rank 0 writes the checkpoints.

    Long-tail settings (see :class:`TrainConfig` and :mod:`cxrgan.classify.losses`):

    * ``loss`` / ``logit_adjust="loss"``: the per-label loss the optimiser sees.
    * ``drw_start_epoch``: from that epoch the loss is weighted by :func:`~cxrgan.classify.losses.drw_weights`;
      the kept model is the best of the re-weighted epochs, and early stopping waits for them (Cao et al. 2019
      report the model after re-weighting, not before).
    * ``crt_epochs``: after the epochs above, the best model's head is re-initialised and trained alone on
      class-aware rows (:mod:`cxrgan.classify.decoupled`); the backbone, BatchNorm statistics included, stays
      bit-identical, and the kept head is the best of these epochs. They are not checkpointed: a resumed run
      repeats them from the stage-1 checkpoint, with the same result.
    * ``logit_adjust="posthoc"``: the offsets are subtracted from the output bias of the final model, so every
      score it gives is f - tau log prior odds.
    * ``pretrain_epochs``: before the first epoch, the model trains that many epochs on the rows of
      ``pretrain_data`` (:func:`_pretrain`), then goes on to ``train`` with a fresh optimiser.

    Args:
        train: training rows (possibly rebalanced; ``class_weights`` are used when set).
        val: validation rows, real images only; its AUC drives early stopping.
        config: training settings.
        seed: seed of this run.
        checkpoint_path: where to keep a resumable checkpoint after every epoch (written atomically).
        resume: continue from ``checkpoint_path`` if it exists.
        on_epoch: called with each epoch's record (e.g. to append it to a JSONL log).
    """
    _check_trainable(train, val)
    if config.augment not in AUGMENTATIONS:
        raise CxrganError(f"unknown augmentation {config.augment!r}; available: {', '.join(AUGMENTATIONS)}")
    if config.lr_schedule not in ("constant", "cosine"):
        raise CxrganError(f"unknown learning-rate schedule {config.lr_schedule!r}; use constant or cosine")
    check_loss_settings(config)
    _check_pretraining(config)
    if config.drw_start_epoch > config.epochs:
        raise CxrganError(f"drw: start epoch {config.drw_start_epoch} is after the last epoch {config.epochs}")
    device = resolve_device(config.device)
    rank, world = distributed.rank(), distributed.world_size()
    check_world_size(train, config.batch_size, world)
    with seeded(seed):  # seeds initial weights without touching the caller's RNG (CPU or CUDA)
        model = build_classifier(config.model, train.n_labels, config.weights_path)
    if config.crt_epochs or config.logit_adjust == "posthoc":  # refuse before training, not after
        output_layer(model, "crt" if config.crt_epochs else "logit-adjust")
    counts = _label_counts(train, config)
    loss_fn = build_loss(config, counts)
    model = model.to(device, memory_format=torch.channels_last)
    if world > 1 and config.sync_batchnorm:
        model = distributed.convert_batchnorm(model, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _lr_scheduler(optimizer, config, config.epochs * _steps_per_epoch(len(train), config))
    scaler = torch.amp.GradScaler(device.type, enabled=config.fp16)
    generator = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "best_val_auc": -math.inf, "best_epoch": 0, "best_model": None, "history": []}
    if resume and checkpoint_path is not None and usable_or_discarded(checkpoint_path, "classifier checkpoint"):
        state = load_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, generator, config)

    step_model = _data_parallel(model, device)
    class_weights = torch.from_numpy(train.class_weights).to(device) if train.class_weights is not None else None
    reweighted = torch.from_numpy(drw_weights(counts, config.drw_beta)).to(device)
    first_kept = max(1, config.drw_start_epoch)
    timing = {"seconds": 0.0, "images": 0}
    steps = Steps(optimizer, scheduler, scaler, loss_fn, config, device, generator)
    if config.pretrain_epochs and state["epoch"] == 0:  # a checkpoint holds weights trained past this stage
        state["history"] = _pretrain(model, step_model, train, val, config, loss_fn, generator, device, scaler,
                                     timing, on_epoch)

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if epoch - state["best_epoch"] > config.patience and state["best_epoch"] > 0:
            break
        drw = 0 < config.drw_start_epoch <= epoch
        step_model.train()
        order = torch.randperm(len(train), generator=generator)
        stats = _train_epoch(step_model, steps, reweighted if drw else class_weights, train, order, timing,
                             f"epoch {epoch}")
        val_auc = macro_auc(val.labels, predict(model, val, device, config.eval_batch_size, config.bf16, shared=True,
                                                fp16=config.fp16))
        record = {"epoch": epoch, "train_loss": stats["train_loss"], "val_auc": val_auc, "seconds": stats["seconds"]}
        if drw:
            record["stage"] = "drw"
        state["history"].append(record)
        if epoch >= first_kept and val_auc > state["best_val_auc"]:
            state.update(best_val_auc=val_auc, best_epoch=epoch,
                         best_model={k: v.detach().clone() for k, v in model.state_dict().items()})
        state["epoch"] = epoch
        if checkpoint_path is not None and rank == 0:
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, scaler, generator, config, state)
        if on_epoch is not None and rank == 0:
            on_epoch(record)

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    best_epoch, best_val_auc, history = state["best_epoch"], float(state["best_val_auc"]), list(state["history"])
    if config.crt_epochs:
        records, best_epoch, best_val_auc = _retrain_head(model, train, val, config, loss_fn, class_weights,
                                                          generator, device, scaler, timing, state["epoch"], on_epoch)
        history += records
    if config.logit_adjust == "posthoc":
        with torch.no_grad():
            bias = output_layer(model, "logit-adjust").bias
            bias -= torch.from_numpy(logit_offsets(counts, config.logit_adjust_tau)).to(bias)
    model.eval()
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_val_auc=best_val_auc,
        images_per_second=timing["images"] / timing["seconds"] if timing["seconds"] else float("nan"),
    )


@dataclass
class Steps:
    """What every optimisation step of a run uses (optimiser, schedule, gradient scaler, loss, RNG)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: Callable[..., torch.Tensor]
    config: TrainConfig
    device: torch.device
    generator: torch.Generator


def _data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel under torchrun (gradients averaged over processes)."""
    if not distributed.active():
        return model
    ids = [torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def _train_epoch(step_model: nn.Module, steps: Steps, class_weights: torch.Tensor | None, train: CXRDataset,
                 order: torch.Tensor, timing: dict, desc: str) -> dict:
    """One pass over the rows in ``order`` in global batches (the model already in train mode): this process
    trains on every ``world``-th row of each; returns the global mean loss and the seconds."""
    config, device, generator = steps.config, steps.device, steps.generator
    rank, world = distributed.rank(), distributed.world_size()
    batches = [np.sort(order[start:start + config.batch_size].numpy())  # sorted: sequential reads of the file
               for start in range(0, len(order), config.batch_size)]
    batches = [b for b in batches if len(b) >= 2 * world]  # BatchNorm cannot train on one image per process
    augmentation = AUGMENTATIONS[config.augment]
    started, total_loss = time.perf_counter(), 0.0
    loader = batch_loader(train.images, train.labels, [b[rank::world] for b in batches], config.data_workers,
                          pin_memory=device.type == "cuda")
    for batch in tqdm(batches, desc=desc, disable=not config.progress or rank != 0, leave=False):
        images, labels = next(loader)
        params = augmentation.draw(len(batch), generator)  # for the global batch, in one draw
        x = augmentation.apply(_to_input(images, device), None if params is None else params[rank::world])
        y = labels.to(device, non_blocking=True)
        with autocast(device, config.bf16, config.fp16):
            logits = step_model(x)
        loss = steps.loss_fn(logits, y, class_weights)
        if world > 1:  # this process's share of the batch's known labels: the averaged gradient is the global one
            known = ~np.isnan(train.labels[batch])
            loss = loss * (float(known[rank::world].sum()) * world / max(float(known.sum()), 1.0))
        steps.optimizer.zero_grad(set_to_none=True)
        steps.scaler.scale(loss).backward()
        steps.scaler.step(steps.optimizer)
        steps.scaler.update()
        steps.scheduler.step()
        total_loss += loss.item() / world
        timing["images"] += len(batch)
    seconds = time.perf_counter() - started
    timing["seconds"] += seconds
    total_loss = distributed.all_sum([total_loss])[0]
    return {"train_loss": total_loss / max(len(batches), 1), "seconds": round(seconds, 3)}


def _retrain_head(model: nn.Module, train: CXRDataset, val: CXRDataset, config: TrainConfig, loss_fn,
                  class_weights: torch.Tensor | None, generator: torch.Generator, device: torch.device,
                  scaler: torch.amp.GradScaler, timing: dict, last_epoch: int,
                  on_epoch: Callable[[dict], None] | None) -> tuple[list[dict], int, float]:
    """cRT's second stage (Kang et al. 2020): a fresh head on class-aware rows, backbone frozen; keeps the best head.

    Returns the epoch records (numbered on from ``last_epoch``, ``stage`` "crt"), the best epoch and its AUC.
    """
    head_parameters = reset_head(model, generator)
    optimizer = torch.optim.Adam(head_parameters, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _lr_scheduler(optimizer, config, config.crt_epochs * _steps_per_epoch(len(train), config))
    step_model = _data_parallel(model, device)
    steps = Steps(optimizer, scheduler, scaler, loss_fn, config, device, generator)
    history, best = [], {"epoch": 0, "val_auc": -math.inf, "head": None}
    for epoch in range(last_epoch + 1, last_epoch + config.crt_epochs + 1):
        if best["epoch"] > 0 and epoch - best["epoch"] > config.patience:
            break
        step_model.train()
        model.features.eval()  # frozen BatchNorm statistics: the backbone must not change at all
        order = torch.from_numpy(class_aware_rows(train.labels, len(train), generator))
        stats = _train_epoch(step_model, steps, class_weights, train, order, timing, f"crt epoch {epoch}")
        val_auc = macro_auc(val.labels, predict(model, val, device, config.eval_batch_size, config.bf16, shared=True,
                                                fp16=config.fp16))
        record = {"epoch": epoch, "train_loss": stats["train_loss"], "val_auc": val_auc, "seconds": stats["seconds"],
                  "stage": "crt"}
        history.append(record)
        if val_auc > best["val_auc"]:
            best.update(epoch=epoch, val_auc=val_auc,
                        head={k: v.detach().clone() for k, v in model.head.state_dict().items()})
        if on_epoch is not None and distributed.is_main():
            on_epoch(record)
    if best["head"] is not None:
        model.head.load_state_dict(best["head"])
    for parameter in model.features.parameters():  # trainable again for gradient-based CAM; values unchanged
        parameter.requires_grad_(True)
    return history, best["epoch"], float(best["val_auc"])


def _pretrain(model: nn.Module, step_model: nn.Module, train: CXRDataset, val: CXRDataset, config: TrainConfig,
              loss_fn, generator: torch.Generator, device: torch.device, scaler: torch.amp.GradScaler, timing: dict,
              on_epoch: Callable[[dict], None] | None) -> list[dict]:
    """Synthetic pretraining: ``config.pretrain_epochs`` epochs on the rows of ``config.pretrain_data`` with a fresh
    Adam and the run's learning-rate schedule, keeping the last weights for the real rows (pretrain, then fine-tune,
    as RoentGen-v2: arXiv 2508.16783, 2025). Returns the epoch records (numbered up to 0, ``stage`` "pretrain"); not
    checkpointed: a run interrupted before its first real epoch repeats it, with the same result."""
    from cxrgan.data.npz import load_npz

    rows = load_npz(config.pretrain_data, target="labels" if train.is_binary else "findings", blank="ignore")
    if rows.label_names != train.label_names or rows.image_size != train.image_size:
        raise CxrganError(f"{config.pretrain_data}: labels {list(rows.label_names)} at {rows.image_size} px, but the "
                          f"training rows have {list(train.label_names)} at {train.image_size} px")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = _lr_scheduler(optimizer, config, config.pretrain_epochs * _steps_per_epoch(len(rows), config))
    steps = Steps(optimizer, scheduler, scaler, loss_fn, config, device, generator)
    history = []
    for epoch in range(1, config.pretrain_epochs + 1):
        step_model.train()
        order = torch.randperm(len(rows), generator=generator)
        stats = _train_epoch(step_model, steps, None, rows, order, timing, f"pretrain epoch {epoch}")
        val_auc = macro_auc(val.labels, predict(model, val, device, config.eval_batch_size, config.bf16, shared=True,
                                                fp16=config.fp16))
        history.append({"epoch": epoch - config.pretrain_epochs, "train_loss": stats["train_loss"],
                        "val_auc": val_auc, "seconds": stats["seconds"], "stage": "pretrain"})
        if on_epoch is not None and distributed.is_main():
            on_epoch(history[-1])
    return history


def _steps_per_epoch(n_rows: int, config: TrainConfig) -> int:
    return math.ceil(n_rows / config.batch_size)


def _lr_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """Constant, or cosine decay to 0 over ``total_steps`` optimisation steps (per step)."""
    total = total_steps if config.lr_schedule == "cosine" else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)) if total else 1.0)


def _label_counts(train: CXRDataset, config: TrainConfig) -> np.ndarray:
    """The (K, 2) label counts the long-tail settings use: the config's, else counted on ``train``."""
    if config.label_counts is None:
        return label_counts(train.labels)
    counts = np.asarray(config.label_counts, dtype=np.int64)
    if counts.shape != (train.n_labels, 2) or (counts < 0).any():
        raise CxrganError(f"label_counts must be {train.n_labels} (negatives, positives) pair(s), "
                          f"got {config.label_counts}")
    return counts


def _to_input(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N,H,W) -> float (N,1,H,W) in [-1, 1], channels_last (the faster conv layout on CPU and GPU)."""
    if isinstance(images, np.ndarray):
        images = uint8_tensor(images)
    x = images.to(device, non_blocking=True).unsqueeze(1).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)


def _check_trainable(train: CXRDataset, val: CXRDataset) -> None:
    if train.label_names != val.label_names:
        raise CxrganError(f"train labels {list(train.label_names)} differ from val labels {list(val.label_names)}")
    if val.synthetic.any():
        raise CxrganError("the validation split holds synthetic rows; validation and test must be real images")
    for j, name in enumerate(train.label_names):
        values = set(np.unique(train.labels[~np.isnan(train.labels[:, j]), j]).tolist())
        if train.is_binary and values != {0.0, 1.0}:
            raise CxrganError(f"the training split has only class value(s) {sorted(values)} of {name!r}")
    if len(train) < 2:
        raise CxrganError(f"the training split has {len(train)} row(s); at least 2 are needed")
