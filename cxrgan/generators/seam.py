"""The seam between a generative model and the one training loop (``cxrgan.generators.training``): the row streams a
model hands over, the batches and statistics of a step, what the loop needs from a model (``Trainable``) and what a
step may use from the loop (``StepContext``). Plugins import these names from ``training`` as well."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cxrgan.device import autocast
from cxrgan.generators.trainer_config import TrainerConfig


@dataclass(frozen=True)
class Stream:
    """Rows the loop draws batches from."""

    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray | None = None  # (N, K) float32 labels handed to the step with the images, or None


Batch = tuple[torch.Tensor, "torch.Tensor | None"]  # (images (B, 1, H, W) in [-1, 1], labels (B, K) or None)
Statistic = float | torch.Tensor  # a step statistic: a number, or a device scalar the loop reads later


class Trainable(Protocol):
    """What the loop needs from a model (``TrainableModel`` implements the plumbing, a model the step)."""

    name: str
    config: TrainerConfig
    device: torch.device
    networks_: torch.nn.ModuleDict
    ema_: torch.nn.ModuleDict | None
    data_info_: dict  # facts about the training rows (n_train, fingerprint, ...)
    channels_last: bool  # hand batches over in channels-last memory format
    divergence_statistic: str | None  # the step statistic watched by the divergence stop (None: no stop)
    divergence_advice: str  # appended to the divergence message

    def start_training(self) -> dict[str, torch.optim.Optimizer]: ...
    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]: ...
    def learning_rate_factor(self, step: int) -> float: ...
    def ema_age(self, step: int) -> int: ...
    def samples_at(self, step: int) -> bool: ...
    def training_state(self) -> dict: ...
    def load_training_state(self, state: dict) -> None: ...
    def finalize_training(self) -> None: ...
    def preview_images(self) -> tuple[np.ndarray, int] | None: ...
    def quality_rows(self, streams: list[Stream]) -> tuple[np.ndarray, np.ndarray | None] | None: ...
    def quality_samples(self, n: int, labels: np.ndarray | None, generator: torch.Generator) -> np.ndarray: ...
    def save_artifacts(self, run_dir: Path) -> None: ...
    def state_dict(self) -> dict: ...


class StepContext:
    """What a model's ``train_step`` may use from the loop: the step, the RNG, the optimisers, autocast, checks."""

    def __init__(self, rng: torch.Generator, optimizers: dict[str, torch.optim.Optimizer], device: torch.device,
                 bf16: bool):
        self.rng = rng  # the only source of randomness of a step (saved in checkpoints)
        self.optimizers = optimizers
        self.step = 0  # the step being taken (0-based)
        self.checks: list[tuple[str, torch.Tensor]] = []  # the step's losses to check, read by the loop's flush
        self._device, self._bf16 = device, bf16

    def autocast(self):
        """bf16 autocast around forward passes when the config asks for it; a no-op context otherwise."""
        return autocast(self._device, self._bf16)

    def check_finite(self, which: str, loss: torch.Tensor) -> None:
        """Stop the run with a clear error if ``loss`` (of the ``which`` network) is not finite.

        Read without waiting for the device: the loop checks every loss of a window of steps when it next writes
        or scores anything (``Trainer.flush``), in step order, and names the first non-finite one; a checkpoint
        is only written after its steps have passed, so the last checkpoint never holds the weights it reached."""
        self.checks.append((which, loss.detach()))
