"""Resumable checkpoints of the classifier training loop: plain dicts with a format version, written atomically."""

from __future__ import annotations

import dataclasses

import torch

from cxrgan.errors import CxrganError
from cxrgan.io import save_torch

CHECKPOINT_VERSION = 1


def save_checkpoint(path, model, optimizer, scheduler, scaler, generator, config, state: dict) -> None:
    """Everything an exact resume needs: weights, optimiser, schedule, gradient scaler, RNG and the loop's state."""
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
    })


# Settings that change how a run computes or shows progress, not what it learns: a checkpoint resumes across them.
RESUMABLE_ACROSS = frozenset({"progress", "device", "eval_batch_size", "data_workers", "sync_batchnorm"})


def load_checkpoint(path, model, optimizer, scheduler, scaler, generator, config) -> dict:
    """Restore a ``save_checkpoint`` file into the given objects and return the loop's state; refuse one written with
    other settings (``RESUMABLE_ACROSS`` may differ; a setting added since counts as its default)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("kind") != "classifier" or checkpoint.get("format_version") != CHECKPOINT_VERSION:
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
    return {k: checkpoint[k] for k in ("epoch", "best_val_auc", "best_epoch", "best_model", "history", "stages")
            if k in checkpoint}
