"""The body shared by every model the one loop trains: construction, fit with exact resume, EMA copies, state, presets.

A model subclasses ``TrainableModel`` and fills in its part of the loop's seam (``training.Trainable``): the rows
it trains on (``_training_streams``), its networks (``_build_networks``), its optimisers (``start_training``) and
one ``train_step``; the rest here is the same for all of them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.images import resize_stack
from cxrgan.errors import CxrganError
from cxrgan.io import load_torch, usable_or_discarded
from cxrgan.generators.base import MIN_TRAIN_IMAGES, check_training_rows, image_fingerprint
from cxrgan.generators.trainer_config import TrainerConfig, config_from_record, config_record, for_device, training_record
from cxrgan.generators.training import (BEST_NAME, CHECKPOINT_FORMAT, CHECKPOINT_NAME, Batch, Statistic, StepContext,
                                        Stream, Trainer)

if TYPE_CHECKING:
    from cxrgan.generators.settings import GeneratorSettings

_RETRAIN = "delete the generator's folder and run again to retrain it"


def check_resumable(checkpoint: dict, method: str, config: TrainerConfig, fingerprint: str, path: Any) -> None:
    """Refuse to resume ``checkpoint`` in another format, as another method, with another config or other images."""
    if checkpoint.get("format_version") != CHECKPOINT_FORMAT:
        raise CxrganError(f"{path}: checkpoint format {checkpoint.get('format_version')!r} is not the supported "
                          f"{CHECKPOINT_FORMAT}; start a new run")
    if checkpoint.get("method") != method:
        raise CxrganError(f"{path}: checkpoint of method {checkpoint.get('method')!r}, cannot resume it as {method!r}")
    mine, theirs = training_record(config), checkpoint["config"]
    changed = sorted(k for k in mine if theirs.get(k) != mine[k])
    if changed:
        raise CxrganError(f"{path}: the run was started with another config (differs in {changed}); "
                          "resume with the same settings")
    if checkpoint["data_info"]["fingerprint"] != fingerprint:
        raise CxrganError(f"{path}: the run was trained on other images ({checkpoint['data_info']['n_train']} rows); "
                          "resume with the same data file and split")


class NetworkSide:
    """For models whose networks work at another side than the data's (``data_info_["network_size"]``, set when
    the training rows were resized to it): ``_generate`` draws at the networks' side; ``sample`` resizes back to the
    data's side and the fidelity score compares at the networks' side, where the training rows are."""

    data_info_: dict[str, Any]

    @property
    def _network_size(self) -> int:
        return int(self.data_info_.get("network_size", self.data_info_["image_size"]))

    def _generate(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """``n`` images at the networks' side and their (n, K) labels."""
        raise NotImplementedError

    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        images, out_labels = self._generate(n, labels, generator, batch_size)
        size = int(self.data_info_["image_size"])
        return (images if size == self._network_size else resize_stack(images, size)), out_labels

    def quality_samples(self, n: int, labels: np.ndarray | None, generator: torch.Generator) -> np.ndarray:
        return self._generate(n, labels, generator)[0]  # at the side of the training rows they are scored against


def dataset_facts(dataset: CXRDataset) -> dict[str, Any]:
    """What every model records about its training data: image size, label columns, class names."""
    return {"image_size": int(dataset.image_size), "label_names": list(dataset.label_names),
            "class_names": list(dataset.class_names) if dataset.class_names else None}


class TrainableModel(ABC):
    """Networks, EMA copies and data facts of a model trained by ``training.Trainer``, and the plumbing around them.

    Args:
        config: the model's frozen config (its class defaults when None); its bf16 holds where ``device`` runs bf16
            natively (``trainer_config.for_device``).
        device: torch device to train and sample on.
        run_dir: folder for checkpoints, best.pt, metrics and grids; None trains in memory only.
        step_hook: called with the number of finished steps after each step (progress reporting, tests).
    """

    name: ClassVar[str] = "model"
    config_class: ClassVar[type] = TrainerConfig
    ema_networks: ClassVar[tuple[str, ...]] = ()  # networks whose EMA copies are sampled (when ema_decay > 0)
    divergence_statistic: ClassVar[str | None] = "d_loss"  # step statistic the divergence stop watches
    divergence_advice: ClassVar[str] = "Try a lower learning rate or another seed."
    min_train_images: ClassVar[int] = MIN_TRAIN_IMAGES  # fewest training rows fit accepts
    cpu_preset: ClassVar[dict[str, Any]] = {}  # config values for a CPU run (GeneratorSettings(full=False))
    full_preset: ClassVar[dict[str, Any]] = {}  # config values of the paper-size run for GPUs
    width_fields: ClassVar[tuple[str, ...]] = ("ngf", "ndf")  # the fields GeneratorSettings.width sets
    channels_last: bool = False  # batches in channels-last memory format
    image_sizes: ClassVar[tuple[int, ...]] = ()  # the only image sides it trains on; () = any

    def __init__(self, config: Any = None, device: str | torch.device = "cpu", run_dir: str | Path | None = None,
                 step_hook: Callable[[int], None] | None = None):
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise CxrganError(f"{self.name} needs a {self.config_class.__name__}, got {type(self.config).__name__}")
        self.device = torch.device(device)
        self.config = for_device(self.config, self.device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step_hook = step_hook
        self.networks_: nn.ModuleDict | None = None
        self.ema_: nn.ModuleDict | None = None
        self.data_info_: dict[str, Any] | None = None
        self.history_: list[dict] = []

    @classmethod
    def resolve_config(cls, settings: GeneratorSettings, **fixed: Any) -> Any:
        """The config of a run with ``settings``: the CPU or full preset, then steps and width, then ``fixed``."""
        values = dict(cls.full_preset if settings.full else cls.cpu_preset)
        if settings.steps is not None:
            values["steps"] = settings.steps
        if settings.width is not None:
            values.update(dict.fromkeys(cls.width_fields, settings.width))
        values.update(fixed)
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls.config_class)})
        if unknown:
            raise CxrganError(f"{cls.name}: unknown setting(s) {unknown}")
        return cls.config_class(**values)

    # ---- what a model supplies -----------------------------------------------------------------------------------
    @abstractmethod
    def _training_streams(self, dataset: CXRDataset) -> tuple[list[Stream], dict[str, Any]]:
        """(the row streams to train on, model facts kept in ``data_info_``) for a checked training split."""

    @abstractmethod
    def _build_networks(self) -> nn.ModuleDict:
        """Fresh networks for ``config`` and ``data_info_``, initialised from the config's seed, on the device."""

    @abstractmethod
    def start_training(self) -> dict[str, torch.optim.Optimizer]:
        """Called once by the loop before its first step (fresh or resumed): the optimisers by name (and any
        training-only state reset, such as CycleGAN's image pools)."""

    @abstractmethod
    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]:
        """One optimisation step on ``batches`` (one per stream); returns scalar statistics."""

    def learning_rate_factor(self, step: int) -> float:
        """Multiplier of every optimiser's initial learning rate at ``step``."""
        return 1.0

    def ema_age(self, step: int) -> int:
        """Steps the EMA networks have trained for before ``step`` (0-based), which the EMA warm-up counts; negative
        while they do not train yet (no EMA update). A model trained in phases starts it at its sampled phase."""
        return step

    def phases(self) -> dict[str, int]:
        """Name -> first step of every phase of training whose steps differ in what they compute (the memory trace,
        ``cxrgan.generators.memory``, takes one step of each)."""
        return {"training": 0}

    def samples_at(self, step: int) -> bool:
        """Whether the model draws meaningful samples after ``step`` finished steps (else the fidelity score waits)."""
        return True

    def training_state(self) -> dict[str, Any]:
        """Training-only state a checkpoint must keep for an exact resume (beyond weights, optimisers and RNG)."""
        return {}

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore ``training_state()`` output."""

    def finalize_training(self) -> None:
        """Bring the sampled networks up to date (e.g. EMA BatchNorm statistics) before sampling mid-run or at the end."""

    def preview_images(self) -> tuple[np.ndarray, int] | None:
        """(images, columns) of a sample grid, the same noise every time; None for models that draw no images."""
        images, _ = self.sample(64, generator=torch.Generator().manual_seed(self.config.seed + 12345))
        return images, 8

    def quality_rows(self, streams: list[Stream]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(real images, labels to condition samples on or None) the fidelity score compares with; None = no score."""
        return streams[0].images, streams[0].labels

    def quality_samples(self, n: int, labels: np.ndarray | None, generator: torch.Generator) -> np.ndarray:
        """``n`` images to score against real rows carrying ``labels`` (None for an unconditional model)."""
        return self.sample(n, labels=labels, generator=generator)[0]

    def save_artifacts(self, run_dir: Path) -> None:
        """Model-specific files written once training has finished (e.g. CycleGAN's translation figure)."""

    def extra_state(self) -> dict[str, Any]:
        """Learned state beyond network weights that ``state_dict`` must carry (tensors and primitives)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore ``extra_state()`` output."""

    def _initialise(self, streams: list[Stream]) -> None:
        """Fresh learned state before the first step: networks by default."""
        self.build()

    # ---- fit ------------------------------------------------------------------------------------------------------
    def fit(self, train_dataset: CXRDataset, resume: bool = False):
        """Train on the training split; with ``resume`` continue ``run_dir``'s checkpoint when there is one.

        Returns self, holding the best-scoring model when the run tracked quality (``quality_every``), else the last.
        """
        check_training_rows(train_dataset, f"the {self.name} training set", self.min_train_images)
        streams, info = self._training_streams(train_dataset)
        return self._train(streams, {**dataset_facts(train_dataset), **info}, resume)

    def _train(self, streams: list[Stream], info: dict[str, Any], resume: bool):
        info["fingerprint"] = image_fingerprint(np.concatenate([s.images for s in streams]))
        info.setdefault("n_train", int(sum(len(s.images) for s in streams)))
        requested = self.config
        checkpoint = self._resumable_checkpoint(info["fingerprint"]) if resume else None
        if checkpoint is not None:
            self.load_state_dict(checkpoint)
            self.config = requested  # equal in every trained field (checked); run-only fields as asked now
        else:
            self.data_info_ = info
            self._initialise(streams)
        if checkpoint is not None and checkpoint.get("done"):
            best_path = self.run_dir / BEST_NAME
            best = load_torch(best_path, "generator checkpoint", _RETRAIN) if best_path.exists() else None
        else:
            trainer = Trainer(self, streams, self.run_dir, self.step_hook)
            self.history_ = trainer.run(resume_from=checkpoint)
            best = trainer.final_best_state()
        if best is not None:
            self.load_state_dict(best)
            self.config = requested
        return self

    def _resumable_checkpoint(self, fingerprint: str) -> dict | None:
        path = self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None
        if path is None or not usable_or_discarded(path, "generator checkpoint"):
            return None
        checkpoint = load_torch(path, "generator checkpoint")
        check_resumable(checkpoint, self.name, self.config, fingerprint, path)
        return checkpoint

    # ---- networks and state ---------------------------------------------------------------------------------------
    def build(self) -> None:
        """Fresh networks (and EMA copies of ``ema_networks`` when ``ema_decay`` > 0); on the ``meta`` device built
        there directly (a memory trace, ``cxrgan.generators.memory``: shapes only, no initialisation work)."""
        with torch.device("meta") if self.device.type == "meta" else contextlib.nullcontext():
            self.networks_ = self._build_networks()
        self.ema_ = None
        if self.config.ema_decay > 0 and self.ema_networks:
            self.ema_ = nn.ModuleDict({name: copy.deepcopy(self.networks_[name]).requires_grad_(False).eval()
                                       for name in self.ema_networks})

    def _fitted(self) -> nn.ModuleDict:
        if self.networks_ is None:
            raise CxrganError(f"this {self.name} model is not fitted; call fit() or load_state_dict() first")
        return self.networks_

    def sampled(self, name: str) -> nn.Module:
        """The network ``name`` as sampled: its EMA copy when there is one."""
        networks = self._fitted()
        return self.ema_[name] if self.ema_ is not None and name in self.ema_ else networks[name]

    def state_dict(self) -> dict[str, Any]:
        """Plain dict of tensors and primitives (loadable with ``torch.load(weights_only=True)``)."""
        networks = self._fitted()
        return {
            "format_version": CHECKPOINT_FORMAT, "method": self.name, "config": config_record(self.config),
            "data_info": copy.deepcopy(self.data_info_),
            "networks": {name: net.state_dict() for name, net in networks.items()},
            "ema": None if self.ema_ is None else {name: net.state_dict() for name, net in self.ema_.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]):
        """Restore config, data facts and weights from ``state_dict`` output, a checkpoint or best.pt; returns self."""
        if state.get("format_version") != CHECKPOINT_FORMAT:
            raise CxrganError(f"state format {state.get('format_version')!r} is not the supported {CHECKPOINT_FORMAT}")
        if state.get("method") != self.name:
            raise CxrganError(f"state of method {state.get('method')!r} cannot be loaded into a {self.name!r} model")
        self.config = for_device(config_from_record(self.config_class, state["config"]), self.device)
        self.data_info_ = copy.deepcopy(state["data_info"])
        self.build()
        for name, net in self.networks_.items():
            net.load_state_dict(state["networks"][name])
        if self.ema_ is not None:
            if not state.get("ema"):
                raise CxrganError("the state has no EMA networks but its config asks for them")
            for name, net in self.ema_.items():
                net.load_state_dict(state["ema"][name])
        self.load_extra_state(state.get("extra") or {})
        return self
