"""One plain classifier training loop: a masked per-label loss, Adam, early stopping on validation AUC, atomic
checkpoints, resume, data-parallel under torchrun; the typed training stages a method asks for (pretraining on
synthetic rows, a long-tail loss with deferred re-weighting, a decoupled head, post-hoc logit adjustment)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from cxrgan import distributed
from cxrgan.classify.augmentations import AUGMENTATIONS
from cxrgan.classify.checkpoint import CheckpointSchedule, load_checkpoint, save_checkpoint
from cxrgan.balance.stages import DecoupledHead, Main, PosthocLogitAdjust, Pretrain, Stage, check_stages
from cxrgan.classify.config import TrainConfig, TrainResult, check_world_size
from cxrgan.classify.decoupled import class_aware_rows, reset_head
from cxrgan.classify.losses import build_loss, drw_weights, logit_offsets, output_layer
from cxrgan.classify.networks import build_classifier
from cxrgan.classify.bf16_weights import Bf16WeightAdam, training_adam
from cxrgan.classify.scoring import macro_auc, predict, to_input
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.label_imbalance import label_counts
from cxrgan.data.loader import BatchFeed
from cxrgan.device import autocast, resolve_device, seeded
from cxrgan.errors import CxrganError
from cxrgan.io import usable_or_discarded

def train_classifier(
    train: CXRDataset,
    val: CXRDataset,
    config: TrainConfig,
    seed: int,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    stages: Sequence[Stage] = (Main(),),
) -> TrainResult:
    """Train ``config.model`` on ``train`` through ``stages`` and keep the weights with the best validation AUC.

    Randomness (initial weights, batch order, flips) comes only from ``seed``; the global RNG is left as found.
    Under ``torchrun`` (data parallel, DistributedDataParallel) every process draws the same batch order and
    augmentation parameters, takes every ``world``-th row of each global batch of ``config.batch_size`` rows, and
    weights its loss by its share of the batch's known labels, so the averaged gradient is the gradient of the
    global batch; with ``sync_batchnorm`` BatchNorm also sees the global batch, and the run matches one process up
    to floating-point summation order. Validation rows are scored in shares; rank 0 writes the checkpoints.

    The stages (``cxrgan.balance.stages``, what a balancing method returns), in the order they run:

    * ``Pretrain``: before the first epoch, epochs on other rows (:func:`_pretrain`), then ``train`` with a fresh
      optimiser. Not checkpointed: a run interrupted before its first real epoch repeats it, with the same result.
    * ``Main`` (always): its per-label loss (:mod:`cxrgan.classify.losses`) and, from ``drw_start_epoch``, deferred
      re-weighting by :func:`~cxrgan.classify.losses.drw_weights`; the kept model is the best of the re-weighted
      epochs, and early stopping waits for them (Cao et al. 2019 report the model after re-weighting, not before).
    * ``DecoupledHead``: the best model's head re-initialised and trained alone on class-aware rows
      (:mod:`cxrgan.classify.decoupled`); the backbone, BatchNorm statistics included, stays bit-identical, and the
      kept head is the best of these epochs. Not checkpointed: a resumed run repeats it, with the same result.
    * ``PosthocLogitAdjust``: the offsets subtracted from the output bias of the final model, so every score it
      gives is f - tau log prior odds.

    Args:
        train: training rows (possibly rebalanced; ``class_weights`` are used when set).
        val: validation rows, real images only; its AUC drives early stopping.
        config: training settings.
        seed: seed of this run.
        checkpoint_path: where to keep a resumable checkpoint (written atomically, as often as
            ``config.checkpoint_seconds`` / ``checkpoint_epochs`` say; the caller deletes it when the run is used).
        resume: continue from ``checkpoint_path`` if it exists.
        on_epoch: called with each epoch's record (e.g. to append it to a JSONL log).
        stages: the training stages; ``(Main(),)``, plain training, by default.
    """
    stages = check_stages(tuple(stages), config.epochs)
    _check_trainable(train, val)
    if config.augment not in AUGMENTATIONS:
        raise CxrganError(f"unknown augmentation {config.augment!r}; available: {', '.join(AUGMENTATIONS)}")
    if config.lr_schedule not in ("constant", "cosine"):
        raise CxrganError(f"unknown learning-rate schedule {config.lr_schedule!r}; use constant or cosine")
    run = _Run.start(train, val, config, seed, stages, on_epoch)
    steps = run.steps(run.model.parameters(), config.epochs, len(train))
    state = {"epoch": 0, "best_val_auc": -math.inf, "best_epoch": 0, "best_model": None, "history": []}
    record = stages_record(stages)
    if resume and checkpoint_path is not None and usable_or_discarded(checkpoint_path, "classifier checkpoint"):
        state = load_checkpoint(checkpoint_path, run.model, steps.optimizer, steps.scheduler, run.scaler,
                                run.generator, config)
        if state.pop("stages", record) != record:
            raise CxrganError(f"{checkpoint_path}: checkpoint was written with other training stages; use a new "
                              "output directory")
    pretrain = _stage(stages, Pretrain)
    if pretrain is not None and state["epoch"] == 0:  # a checkpoint holds weights trained past this stage
        state["history"] = _pretrain(run, pretrain)
    _train_main(run, steps, _stage(stages, Main), state, checkpoint_path, record)
    return _finish(run, stages, state)


def stages_record(stages: tuple[Stage, ...]) -> list[dict]:
    """The stages as plain values (kept in checkpoints, so a resume with other stages is refused)."""
    return [{"stage": type(stage).__name__, **dataclasses.asdict(stage)} for stage in stages]


def _stage(stages: tuple[Stage, ...], kind: type):
    """The stage of ``kind`` among ``stages``, or None."""
    return next((stage for stage in stages if isinstance(stage, kind)), None)


@dataclass
class _Run:
    """What every stage of one classifier run uses: the model (and its data-parallel wrapper), the data, the
    settings, the device, the run's one random generator, the gradient scaler, the loss and the label counts."""

    model: nn.Module
    step_model: nn.Module
    train: CXRDataset
    val: CXRDataset
    config: TrainConfig
    device: torch.device
    generator: torch.Generator
    scaler: torch.amp.GradScaler
    loss_fn: Callable[..., torch.Tensor]
    counts: np.ndarray
    timing: dict
    on_epoch: Callable[[dict], None] | None
    feeds: dict = field(default_factory=dict)  # the batch feeds of every stage's Steps (see Steps.feed)

    @classmethod
    def start(cls, train: CXRDataset, val: CXRDataset, config: TrainConfig, seed: int, stages: tuple[Stage, ...],
              on_epoch: Callable[[dict], None] | None) -> _Run:
        device = resolve_device(config.device)
        world = distributed.world_size()
        check_world_size(train, config.batch_size, world)
        with seeded(seed):  # seeds initial weights without touching the caller's RNG (CPU or CUDA)
            model = build_classifier(config.model, train.n_labels, config.weights_path)
        for kind, method in ((DecoupledHead, "crt"), (PosthocLogitAdjust, "logit-adjust")):
            if _stage(stages, kind) is not None:  # refuse before training, not after
                output_layer(model, method)
                break
        main = _stage(stages, Main)
        counts = _label_counts(train, main)
        loss_fn = build_loss(main.loss, counts)
        model = model.to(device, memory_format=torch.channels_last)
        if world > 1 and config.sync_batchnorm:
            model = distributed.convert_batchnorm(model, device)
        return cls(model, _data_parallel(model, device), train, val, config, device,
                   torch.Generator().manual_seed(seed), torch.amp.GradScaler(device.type, enabled=config.fp16),
                   loss_fn, counts, {"seconds": 0.0, "images": 0}, on_epoch)

    def steps(self, parameters, epochs: int, n_rows: int) -> Steps:
        """A fresh Adam over ``parameters`` with the run's schedule over ``epochs`` epochs of ``n_rows`` rows (and the
        run's batch feeds, so a stage reading rows an earlier stage read reuses its feed)."""
        config = self.config
        optimizer = training_adam(self.model, parameters, config.lr, config.weight_decay, self.device, config.bf16,
                                  config.fp16, distributed.world_size())
        scheduler = _lr_scheduler(optimizer, config, epochs * _steps_per_epoch(n_rows, config))
        return Steps(optimizer, scheduler, self.scaler, self.loss_fn, config, self.device, self.generator, self.feeds)

    def val_auc(self) -> float:
        """Macro validation AUC of the model now (every process scores its share)."""
        config = self.config
        return macro_auc(self.val.labels, predict(self.model, self.val, self.device, config.eval_batch_size,
                                                  config.bf16, shared=True, fp16=config.fp16))

    def log(self, record: dict) -> None:
        if self.on_epoch is not None and distributed.is_main():
            self.on_epoch(record)


def _train_main(run: _Run, steps: Steps, main: Main, state: dict, checkpoint_path: str | Path | None,
                record: list[dict]) -> None:
    """The main stage's epochs from ``state["epoch"] + 1``, early-stopped; ``state`` keeps the best model."""
    config, train, device = run.config, run.train, run.device
    class_weights = torch.from_numpy(train.class_weights).to(device) if train.class_weights is not None else None
    reweighted = torch.from_numpy(drw_weights(run.counts, main.drw_beta)).to(device)
    first_kept = max(1, main.drw_start_epoch)
    schedule = CheckpointSchedule(config.checkpoint_seconds, config.checkpoint_epochs, state["epoch"])
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        if _early_stop(epoch, state["best_epoch"], config.patience):
            break
        drw = 0 < main.drw_start_epoch <= epoch
        run.step_model.train()
        order = torch.randperm(len(train), generator=run.generator)
        stats = _train_epoch(run.step_model, steps, reweighted if drw else class_weights, train, order, run.timing,
                             f"epoch {epoch}")
        val_auc = run.val_auc()
        epoch_record = {"epoch": epoch, "train_loss": stats["train_loss"], "val_auc": val_auc,
                        "seconds": stats["seconds"]}
        if drw:
            epoch_record["stage"] = "drw"
        state["history"].append(epoch_record)
        if epoch >= first_kept and val_auc > state["best_val_auc"]:
            state.update(best_val_auc=val_auc, best_epoch=epoch,
                         best_model={k: v.detach().clone() for k, v in run.model.state_dict().items()})
        state["epoch"] = epoch
        last = epoch == config.epochs or _early_stop(epoch + 1, state["best_epoch"], config.patience)
        if checkpoint_path is not None and distributed.rank() == 0 and schedule.due(epoch, last):
            save_checkpoint(checkpoint_path, run.model, steps.optimizer, steps.scheduler, run.scaler, run.generator,
                            config, {**state, "stages": record})
            schedule.written(epoch)
        run.log(epoch_record)


def _finish(run: _Run, stages: tuple[Stage, ...], state: dict) -> TrainResult:
    """The best main-stage model, then the stages after the main one; the result in eval mode."""
    model = run.model
    if state["best_model"] is not None:
        model.load_state_dict(state["best_model"])
    best_epoch, best_val_auc, history = state["best_epoch"], float(state["best_val_auc"]), list(state["history"])
    head = _stage(stages, DecoupledHead)
    if head is not None:
        records, best_epoch, best_val_auc = _retrain_head(run, head, state["epoch"])
        history += records
    posthoc = _stage(stages, PosthocLogitAdjust)
    if posthoc is not None:
        with torch.no_grad():
            bias = output_layer(model, "logit-adjust").bias
            bias -= torch.from_numpy(logit_offsets(run.counts, posthoc.tau)).to(bias)
    model.eval()
    timing = run.timing
    return TrainResult(
        model=model,
        history=history,
        best_epoch=best_epoch,
        best_val_auc=best_val_auc,
        images_per_second=timing["images"] / timing["seconds"] if timing["seconds"] else float("nan"),
    )


@dataclass
class Steps:
    """What every optimisation step of a run uses (optimiser, schedule, gradient scaler, loss, RNG), and the batch
    feed of its rows, made on the first epoch and kept for the next (its reading processes too)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: Callable[..., torch.Tensor]
    config: TrainConfig
    device: torch.device
    generator: torch.Generator
    feeds: dict = field(default_factory=dict)  # id(dataset) -> (dataset, BatchFeed)

    def forward_weights(self) -> contextlib.AbstractContextManager:
        """The optimiser's bf16 weight copies in place for a training forward pass, where it keeps them."""
        return self.optimizer.bf16_weights() if isinstance(self.optimizer, Bf16WeightAdam) else contextlib.nullcontext()

    def feed(self, dataset: CXRDataset) -> BatchFeed:
        if id(dataset) not in self.feeds:  # the dataset is kept with its feed, so its id is never reused meanwhile
            self.feeds[id(dataset)] = (dataset, BatchFeed(dataset.images, dataset.labels, self.config.data_workers,
                                                          pin_memory=self.device.type == "cuda"))
        return self.feeds[id(dataset)][1]


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
    # summed on the device in float64 (as Python floats would be) and read once: no host sync per step
    started, total_loss = time.perf_counter(), torch.zeros((), dtype=torch.float64, device=device)
    loader = steps.feed(train).epoch([b[rank::world] for b in batches])
    for batch in tqdm(batches, desc=desc, disable=not config.progress or rank != 0, leave=False):
        images, labels = next(loader)
        params = augmentation.draw(len(batch), generator)  # for the global batch, in one draw
        x = augmentation.apply(to_input(images, device), None if params is None else params[rank::world])
        y = labels.to(device, non_blocking=True)
        with autocast(device, config.bf16, config.fp16), steps.forward_weights():
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
        total_loss += loss.detach().double() / world
        timing["images"] += len(batch)
    total_loss = distributed.all_sum([total_loss.item()])[0]
    seconds = time.perf_counter() - started
    timing["seconds"] += seconds
    return {"train_loss": total_loss / max(len(batches), 1), "seconds": round(seconds, 3)}


def _retrain_head(run: _Run, stage: DecoupledHead, last_epoch: int) -> tuple[list[dict], int, float]:
    """cRT's second stage (Kang et al. 2020): a fresh head on class-aware rows, backbone frozen; keeps the best head.

    Returns the epoch records (numbered on from ``last_epoch``, ``stage`` "crt"), the best epoch and its AUC.
    """
    model, train, config = run.model, run.train, run.config
    steps = run.steps(reset_head(model, run.generator), stage.epochs, len(train))
    step_model = _data_parallel(model, run.device)
    class_weights = torch.from_numpy(train.class_weights).to(run.device) if train.class_weights is not None else None
    history, best = [], {"epoch": 0, "val_auc": -math.inf, "head": None}
    for epoch in range(last_epoch + 1, last_epoch + stage.epochs + 1):
        if best["epoch"] > 0 and epoch - best["epoch"] > config.patience:
            break
        step_model.train()
        model.features.eval()  # frozen BatchNorm statistics: the backbone must not change at all
        order = torch.from_numpy(class_aware_rows(train.labels, len(train), run.generator))
        stats = _train_epoch(step_model, steps, class_weights, train, order, run.timing, f"crt epoch {epoch}")
        val_auc = run.val_auc()
        record = {"epoch": epoch, "train_loss": stats["train_loss"], "val_auc": val_auc, "seconds": stats["seconds"],
                  "stage": "crt"}
        history.append(record)
        if val_auc > best["val_auc"]:
            best.update(epoch=epoch, val_auc=val_auc,
                        head={k: v.detach().clone() for k, v in model.head.state_dict().items()})
        run.log(record)
    if best["head"] is not None:
        model.head.load_state_dict(best["head"])
    for parameter in model.features.parameters():  # trainable again for gradient-based CAM; values unchanged
        parameter.requires_grad_(True)
    return history, best["epoch"], float(best["val_auc"])


def _pretrain(run: _Run, stage: Pretrain) -> list[dict]:
    """Synthetic pretraining: ``stage.epochs`` epochs on the rows of ``stage.data`` with a fresh Adam and the run's
    learning-rate schedule, keeping the last weights for the real rows (pretrain, then fine-tune, as RoentGen-v2:
    arXiv 2508.16783, 2025). Returns the epoch records (numbered up to 0, ``stage`` "pretrain")."""
    from cxrgan.data.npz import load_npz

    train = run.train
    rows = load_npz(stage.data, target="labels" if train.is_binary else "findings", blank="ignore")
    if rows.label_names != train.label_names or rows.image_size != train.image_size:
        raise CxrganError(f"{stage.data}: labels {list(rows.label_names)} at {rows.image_size} px, but the "
                          f"training rows have {list(train.label_names)} at {train.image_size} px")
    steps = run.steps(run.model.parameters(), stage.epochs, len(rows))
    history = []
    for epoch in range(1, stage.epochs + 1):
        run.step_model.train()
        order = torch.randperm(len(rows), generator=run.generator)
        stats = _train_epoch(run.step_model, steps, None, rows, order, run.timing, f"pretrain epoch {epoch}")
        history.append({"epoch": epoch - stage.epochs, "train_loss": stats["train_loss"], "val_auc": run.val_auc(),
                        "seconds": stats["seconds"], "stage": "pretrain"})
        run.log(history[-1])
    return history


def _early_stop(epoch: int, best_epoch: int, patience: int) -> bool:
    """Whether ``epoch`` is not trained: more than ``patience`` epochs after the best one."""
    return best_epoch > 0 and epoch - best_epoch > patience


def _steps_per_epoch(n_rows: int, config: TrainConfig) -> int:
    return math.ceil(n_rows / config.batch_size)


def _lr_scheduler(optimizer, config: TrainConfig, total_steps: int):
    """Constant, or cosine decay to 0 over ``total_steps`` optimisation steps (per step)."""
    total = total_steps if config.lr_schedule == "cosine" else 0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)) if total else 1.0)


def _label_counts(train: CXRDataset, main: Main) -> np.ndarray:
    """The (K, 2) label counts the long-tail losses use: the main stage's, else counted on ``train``."""
    if main.label_counts is None:
        return label_counts(train.labels)
    counts = np.asarray(main.label_counts, dtype=np.int64)
    if counts.shape != (train.n_labels, 2) or (counts < 0).any():
        raise CxrganError(f"label_counts must be {train.n_labels} (negatives, positives) pair(s), "
                          f"got {main.label_counts}")
    return counts


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
