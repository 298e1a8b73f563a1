"""One plain classifier training loop: masked BCE, Adam, early stopping on validation AUC, atomic checkpoints, resume."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from cxrgan.balance.augment import flip_affine_tensor
from cxrgan.classify.networks import build_classifier
from cxrgan.data.dataset import CXRDataset
from cxrgan.device import autocast, resolve_device
from cxrgan.errors import CxrganError
from cxrgan.io import save_torch

CHECKPOINT_VERSION = 1


def _random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# Batch augmentations: (N,1,H,W) float batch and the run's generator -> augmented batch.
AUGMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "none": lambda x, generator: x,
    "flip": _random_flip,
    "flip-affine": flip_affine_tensor,
}


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


@dataclass
class TrainResult:
    """What a finished training run hands to evaluation."""

    model: nn.Module  # the best model by validation AUC, in eval mode
    history: list[dict]  # one record per epoch: loss, val AUC, seconds
    best_epoch: int  # epoch (1-based) whose weights were kept
    best_val_auc: float  # its validation AUC (macro over labels)
    images_per_second: float  # training throughput over all epochs


def masked_bce(logits: torch.Tensor, targets: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy over known labels; NaN targets (U-Ignore, unknown) contribute nothing.

    ``class_weights`` (K, 2) weights negative and positive targets per label column (the class-weights balancer).
    """
    known = ~torch.isnan(targets)
    safe_targets = torch.where(known, targets, torch.zeros_like(targets))
    loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), safe_targets, reduction="none")
    if class_weights is not None:
        loss = loss * (safe_targets * class_weights[:, 1] + (1 - safe_targets) * class_weights[:, 0])
    loss = loss * known
    return loss.sum() / known.sum().clamp(min=1)


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
            bf16: bool = False) -> np.ndarray:
    """Sigmoid probabilities (N, K) for every row, in order."""
    device = torch.device(device)
    model.eval()
    outputs = []
    for start in range(0, len(dataset), batch_size):
        x = _to_input(dataset.images[start:start + batch_size], device)
        with autocast(device, bf16):
            outputs.append(torch.sigmoid(model(x).float()).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, dataset.n_labels), np.float32)


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
    if config.weights_path is not None and not Path(config.weights_path).is_file():
        raise CxrganError(f"--weights {config.weights_path}: no such file")
    resolve_device(config.device)


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
    Under ``torchrun`` each process takes its share of every epoch's batches and gradients are averaged (DDP).

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
    device = resolve_device(config.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # inside fork_rng: seeds initial weights without touching the caller's RNG
        model = build_classifier(config.model, train.n_labels, config.weights_path)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    steps_per_epoch = math.ceil(math.ceil(len(train) / world) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch if config.lr_schedule == "cosine" else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)) if total_steps else 1.0)
    generator = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "best_val_auc": -math.inf, "best_epoch": 0, "best_model": None, "history": []}
    if resume and checkpoint_path is not None and Path(checkpoint_path).exists():
        state = _load_checkpoint(checkpoint_path, model, optimizer, scheduler, generator, config)

    step_model = nn.parallel.DistributedDataParallel(model) if distributed else model
    labels = torch.from_numpy(train.labels)
    class_weights = torch.from_numpy(train.class_weights).to(device) if train.class_weights is not None else None
    seconds_training, images_seen = 0.0, 0

    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if epoch - state["best_epoch"] > config.patience and state["best_epoch"] > 0:
            break
        step_model.train()
        order = torch.randperm(len(train), generator=generator)[rank::world]
        started, total_loss, n_batches = time.perf_counter(), 0.0, 0
        batches = range(0, len(order), config.batch_size)
        for start in tqdm(batches, desc=f"epoch {epoch}", disable=not config.progress or rank != 0, leave=False):
            index = np.sort(order[start:start + config.batch_size].numpy())  # sorted: sequential memmap reads
            if len(index) < 2:  # BatchNorm cannot train on a single image
                continue
            x = AUGMENTATIONS[config.augment](_to_input(train.images[index], device), generator)
            y = labels[index].to(device)
            with autocast(device, config.bf16):
                logits = step_model(x)
            loss = masked_bce(logits, y, class_weights)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
            n_batches += 1
            images_seen += len(index)
        seconds = time.perf_counter() - started
        seconds_training += seconds
        val_auc = macro_auc(val.labels, predict(model, val, device, config.eval_batch_size, config.bf16))
        record = {"epoch": epoch, "train_loss": total_loss / max(n_batches, 1), "val_auc": val_auc,
                  "seconds": round(seconds, 3)}
        state["history"].append(record)
        if val_auc > state["best_val_auc"]:
            state.update(best_val_auc=val_auc, best_epoch=epoch,
                         best_model={k: v.detach().clone() for k, v in model.state_dict().items()})
        state["epoch"] = epoch
        if checkpoint_path is not None and rank == 0:
            _save_checkpoint(checkpoint_path, model, optimizer, scheduler, generator, config, state)
        if on_epoch is not None and rank == 0:
            on_epoch(record)

    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    model.eval()
    return TrainResult(
        model=model,
        history=state["history"],
        best_epoch=state["best_epoch"],
        best_val_auc=float(state["best_val_auc"]),
        images_per_second=images_seen / seconds_training if seconds_training else float("nan"),
    )


def _to_input(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (N,H,W) -> float (N,1,H,W) in [-1, 1], channels_last (the faster conv layout on CPU)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).unsqueeze(1).float().div_(127.5).sub_(1.0)
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


def _save_checkpoint(path, model, optimizer, scheduler, generator, config: TrainConfig, state: dict) -> None:
    save_torch(path, {
        "format_version": CHECKPOINT_VERSION,
        "kind": "classifier",
        "config": dataclasses.asdict(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": generator.get_state(),
        **state,
    })


def _load_checkpoint(path, model, optimizer, scheduler, generator, config: TrainConfig) -> dict:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("kind") != "classifier" or checkpoint.get("format_version") != CHECKPOINT_VERSION:
        raise CxrganError(f"{path}: not a cxrgan classifier checkpoint (version {CHECKPOINT_VERSION})")
    if checkpoint["config"] != dataclasses.asdict(config):
        changed = sorted(k for k, v in dataclasses.asdict(config).items() if checkpoint["config"].get(k) != v)
        raise CxrganError(f"{path}: checkpoint was written with a different config (fields {changed}); "
                          "use a new output directory")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    generator.set_state(checkpoint["rng"])
    return {k: checkpoint[k] for k in ("epoch", "best_val_auc", "best_epoch", "best_model", "history")}
