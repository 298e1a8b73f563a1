"""Resumable checkpoints of the classifier training loop: plain dicts with a format version, written atomically, and
the schedule that decides when the loop writes one."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from cxrgan.errors import CxrganError
from cxrgan.io import save_torch

CHECKPOINT_VERSION = 2  # 2: the best weights are left out (best_is_current) when they are the checkpoint's weights
READABLE_VERSIONS = (1, 2)  # version 1 always holds the best weights separately


def save_checkpoint(path, model, optimizer, scheduler, scaler, generator, config, state: dict) -> None:
    """Everything an exact resume needs: weights, optimiser, schedule, gradient scaler, RNG and the loop's state.

    When the best weights are the current ones (the epoch just written improved validation AUC), they are stored
    once: about a quarter of a ResNet-18 checkpoint with Adam."""
    best_is_current = state.get("best_model") is not None and state["best_epoch"] == state["epoch"]
    save_torch(path, {
        "format_version": CHECKPOINT_VERSION,
        "kind": "classifier",
        "config": dataclasses.asdict(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": generator.get_state(),
        **state,
        "best_model": None if best_is_current else state.get("best_model"),
        "best_is_current": best_is_current,
    })


# Settings that change how a run computes, shows progress or how often it saves, not what it learns: a checkpoint
# resumes across them.
RESUMABLE_ACROSS = frozenset({"progress", "device", "eval_batch_size", "data_workers", "sync_batchnorm",
                              "checkpoint_seconds", "checkpoint_epochs"})


def load_checkpoint(path, model, optimizer, scheduler, scaler, generator, config) -> dict:
    """Restore a ``save_checkpoint`` file into the given objects and return the loop's state; refuse one written with
    other settings (``RESUMABLE_ACROSS`` may differ; a setting added since counts as its default)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("kind") != "classifier" or checkpoint.get("format_version") not in READABLE_VERSIONS:
        raise CxrganError(f"{path}: not a cxrgan classifier checkpoint (version {CHECKPOINT_VERSION})")
    defaults = dataclasses.asdict(type(config)())  # a field added since the checkpoint was written had its default
    saved = {**defaults, **checkpoint["config"]}
    changed = sorted(k for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE_ACROSS and saved.get(k) != v)
    if changed:
        raise CxrganError(f"{path}: checkpoint was written with a different config (fields {changed}); "
                          "use a new output directory")
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    if "scaler" in checkpoint:
        scaler.load_state_dict(checkpoint["scaler"])
    generator.set_state(checkpoint["rng"])
    # "stages": the training stages it was written with (absent in checkpoints of older versions)
    state = {k: checkpoint[k] for k in ("epoch", "best_val_auc", "best_epoch", "best_model", "history", "stages")
             if k in checkpoint}
    if checkpoint.get("best_is_current"):
        state["best_model"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state


class CheckpointSchedule:
    """When the training loop writes its resumable checkpoint: after an epoch that ends at least
    ``checkpoint_seconds`` after the last write (or the loop's start), or ``checkpoint_epochs`` epochs after it, and
    never after the last epoch (the cell ends next; a kill before its results are stored repeats the epochs since
    the last write, with the same result). A kill -9 thus loses at most about ``checkpoint_seconds`` plus one epoch.

    Writing is rare by design: a ResNet-18 checkpoint with Adam state and best weights is about 180 MB, and writing
    it every epoch of every cell made the README command write 24.8 GB."""

    def __init__(self, seconds: float, epochs: int, first_epoch: int, clock: Callable[[], float] = time.monotonic):
        self.seconds, self.epochs, self.clock = seconds, epochs, clock
        self.last_epoch, self.last_time = first_epoch, clock()

    def due(self, epoch: int, last: bool) -> bool:
        """Whether to write after ``epoch``; ``last``: no epoch of this stage follows it."""
        if last:
            return False
        by_epochs = self.epochs > 0 and epoch - self.last_epoch >= self.epochs
        by_time = self.seconds > 0 and self.clock() - self.last_time >= self.seconds
        return by_epochs or by_time

    def written(self, epoch: int) -> None:
        self.last_epoch, self.last_time = epoch, self.clock()
