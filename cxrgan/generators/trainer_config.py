"""The settings every generator's training shares (each generator's config extends them), and their records: what a
run stores, what resume compares and what cache keys hash."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import torch

from cxrgan.device import bf16_supported
from cxrgan.errors import CxrganError


@dataclass(frozen=True)
class TrainerConfig:
    """Settings of the training loop; every generator config extends it with its own fields."""

    steps: int = 1000  # optimisation steps: the length of a run
    batch_size: int = 64  # rows of every stream per step (capped at the largest stream)
    ema_decay: float = 0.0  # EMA decay of generator weights, which are then sampled; 0 = sample the live weights
    bf16: bool = False  # bf16 autocast of forward passes where the device runs bf16 natively (see for_device)
    seed: int = 0  # seeds weight init, noise, augmentation and the data order
    log_every: int = 50  # steps per metrics.jsonl record (each statistic averaged over them)
    checkpoint_every: int = 250  # steps between resumable checkpoints; 0 = only the final one
    grid_every: int = 0  # steps between sample-grid PNGs (and one at the end); 0 = none
    quality_every: int = 0  # steps between fidelity scores of (EMA) samples, which pick best.pt; 0 = none
    quality_images: int = 256  # real training rows (and as many samples) per fidelity score
    divergence_patience: int = 200  # stop when the watched D loss stays below divergence_d_loss this many steps
    divergence_d_loss: float = 1e-3  # D loss under which D has won (G gets no gradient)
    progress: bool = True  # show a tqdm progress bar
    sync_batchnorm: bool = True  # under torchrun, BatchNorm statistics of the global batch (the one-process answer)

    # Fields that change neither the trained weights nor which checkpoint is kept: they may differ when a run is
    # resumed and are left out of cache keys. How the work is spread over processes is one of them, like the device.
    RUN_ONLY_FIELDS: ClassVar[frozenset[str]] = frozenset({"progress", "log_every", "checkpoint_every", "grid_every",
                                                           "sync_batchnorm"})
    describes: ClassVar[str] = "training"  # names the settings in error messages
    # Fields that count repetitions of the same work (same shapes, same memory): a memory trace runs them once.
    REPEAT_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def checks(self) -> dict[str, bool]:
        """Field name -> whether its value is valid; subclasses add theirs."""
        return {"steps": self.steps >= 1, "batch_size": self.batch_size >= 1, "ema_decay": 0 <= self.ema_decay < 1,
                "log_every": self.log_every >= 1, "checkpoint_every": self.checkpoint_every >= 0,
                "grid_every": self.grid_every >= 0, "quality_every": self.quality_every >= 0,
                "quality_images": self.quality_images >= 2, "divergence_patience": self.divergence_patience >= 1}

    def __post_init__(self) -> None:
        bad = [name for name, ok in self.checks().items() if not ok]
        if bad:
            raise CxrganError(f"invalid {self.describes} setting(s): " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))


def for_device(config: TrainerConfig, device: torch.device | str) -> TrainerConfig:
    """``config`` as it trains on ``device``: bf16 autocast only where the device runs bf16 natively
    (:func:`cxrgan.device.bf16_supported`), fp32 elsewhere. The CPU presets ask for bf16, which AVX512-BF16 / AMX
    CPUs and CUDA GPUs of compute capability 8.0 or higher run at twice the fp32 speed; elsewhere it is emulated
    (slow) and cuDNN has no bf16 convolutions. Weights, optimiser state and losses stay fp32 either way."""
    if config.bf16 and not bf16_supported(device):
        return replace(config, bf16=False)
    return config


def config_record(config: TrainerConfig) -> dict:
    """The config as a JSON- and checkpoint-ready dict (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def training_record(config: TrainerConfig) -> dict:
    """The fields that decide what a run trains: compared on resume and hashed into cache keys."""
    return {k: v for k, v in config_record(config).items() if k not in type(config).RUN_ONLY_FIELDS}


def config_from_record(config_class: type, record: dict) -> Any:
    """Rebuild a config from ``config_record`` output, ignoring fields the class no longer has."""
    names = {f.name: f for f in fields(config_class)}
    return config_class(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in record.items() if k in names})
