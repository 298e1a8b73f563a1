"""The shared body of adversarial generators: build G/D, fit through the one loop, sample, save and load state."""

from __future__ import annotations

import copy
from abc import abstractmethod
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.transforms import tensor_to_images
from cxrgan.errors import CxrganError
from cxrgan.generators.base import (CHECKPOINT_FORMAT, GenerativeModel, check_training_rows, resume_or_build,
                                    image_fingerprint)
from cxrgan.generators.blocks import DCGANDiscriminator, DCGANGenerator, init_weights, recalibrate_batchnorm
from cxrgan.generators.loop import GANConfig, GANTrainer, config_record


class AdversarialModel(GenerativeModel):
    """A GAN behind the GenerativeModel interface; subclasses choose training rows and sampled labels.

    Args:
        config: the method's frozen config (defaults when None).
        device: torch device to train and sample on.
        run_dir: folder for checkpoints, metrics and sample grids; None trains in memory only.
        step_hook: called with the global step after each training step (progress reporting, tests).
    """

    config_class = GANConfig

    def __init__(self, config: GANConfig | None = None, device: str | torch.device = "cpu",
                 run_dir: str | Path | None = None, step_hook: Callable[[int], None] | None = None):
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise CxrganError(f"{self.name} needs a {self.config_class.__name__}, got {type(self.config).__name__}")
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step_hook = step_hook
        self.generator_: DCGANGenerator | None = None
        self.discriminator_: DCGANDiscriminator | None = None
        self.generator_ema_: DCGANGenerator | None = None
        self.data_info_: dict[str, Any] | None = None
        self.history_: list[dict] = []

    # ---- what a method decides --------------------------------------------------------------------------
    @abstractmethod
    def _training_rows(self, dataset: CXRDataset) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
        """(images to train on, (N, K) conditioning labels or None, method facts kept in ``data_info_``)."""

    @abstractmethod
    def _sample_labels(self, n: int, labels: np.ndarray | None, generator: torch.Generator) -> tuple[torch.Tensor | None, np.ndarray]:
        """(conditioning tensor for G or None, (n, K) labels returned with the images)."""

    def _n_conditioning(self) -> int:
        """Number of label columns G and D are conditioned on (0 = unconditional)."""
        return 0

    def _recalibration_labels(self, n: int, generator: torch.Generator) -> torch.Tensor | None:
        return None

    # ---- networks ---------------------------------------------------------------------------------------
    def _build_networks(self) -> None:
        cfg, size = self.config, int(self.data_info_["image_size"])
        n_cond = self._n_conditioning()
        G = DCGANGenerator(size, cfg.z_dim, cfg.ngf, n_labels=n_cond, embed_dim=getattr(cfg, "embed_dim", 32))
        D = DCGANDiscriminator(size, cfg.ndf, cfg.d_norm, n_labels=n_cond)
        init_rng = torch.Generator().manual_seed(cfg.seed + 1)  # a stream apart from the training noise
        init_weights(G, init_rng)
        init_weights(D, init_rng)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.generator_ = G.to(self.device, memory_format=memory_format)
        self.discriminator_ = D.to(self.device, memory_format=memory_format)
        self.generator_ema_ = None
        if cfg.ema_decay > 0:
            self.generator_ema_ = copy.deepcopy(self.generator_).requires_grad_(False).eval()

    def _sampling_network(self) -> DCGANGenerator:
        if self.generator_ is None:
            raise CxrganError(f"this {self.name} model is not fitted; call fit() or load_state_dict() first")
        return self.generator_ema_ if self.generator_ema_ is not None else self.generator_

    def finalize_training(self) -> None:
        """Give the EMA generator BatchNorm statistics of its own weights (called after training and per grid)."""
        if self.generator_ema_ is not None:
            rng = torch.Generator().manual_seed(self.config.seed + 2)
            recalibrate_batchnorm(self.generator_ema_, 8, min(64, self.config.batch_size * 2), self._recalibration_labels, rng)
            self.generator_ema_.eval()

    # ---- interface --------------------------------------------------------------------------------------
    def fit(self, train_dataset: CXRDataset, resume: bool = False) -> AdversarialModel:
        """Train on the training split; with ``resume`` continue from ``run_dir``'s checkpoint when there is one."""
        check_training_rows(train_dataset, f"the {self.name} training set")
        images, cond_labels, info = self._training_rows(train_dataset)
        info.update(
            image_size=int(train_dataset.image_size),
            label_names=list(train_dataset.label_names),
            class_names=list(train_dataset.class_names) if train_dataset.class_names else None,
            n_train=int(len(images)),
            fingerprint=image_fingerprint(images),
        )
        checkpoint = resume_or_build(self, config_record(self.config), info, resume, self._build_networks)
        if checkpoint is not None and checkpoint.get("done"):
            return self
        trainer = GANTrainer(self, images, cond_labels, self.run_dir, self.step_hook)
        self.history_ = trainer.run(resume_from=checkpoint)
        return self


    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None,
               batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        net = self._sampling_network()
        if n < 0:
            raise CxrganError(f"cannot sample a negative number of images ({n})")
        generator = generator if generator is not None else torch.Generator().manual_seed(self.config.seed)
        cond, out_labels = self._sample_labels(n, labels, generator)
        size = int(self.data_info_["image_size"])
        chunks = [np.zeros((0, size, size), np.uint8)]
        was_training = net.training
        net.eval()
        try:
            with torch.no_grad():
                for start in range(0, n, batch_size):
                    stop = min(n, start + batch_size)
                    z = torch.randn(stop - start, net.z_dim, generator=generator).to(self.device)
                    y = None if cond is None else cond[start:stop].to(self.device)
                    chunks.append(tensor_to_images(net(z, y)))
        finally:
            net.train(was_training)
        return np.concatenate(chunks), out_labels.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        self._sampling_network()
        return {
            "format_version": CHECKPOINT_FORMAT,
            "method": self.name,
            "config": config_record(self.config),
            "data_info": copy.deepcopy(self.data_info_),
            "generator": self.generator_.state_dict(),
            "discriminator": self.discriminator_.state_dict(),
            "generator_ema": self.generator_ema_.state_dict() if self.generator_ema_ is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> AdversarialModel:
        """Restore networks, config and data facts saved by ``state_dict`` (or a training checkpoint)."""
        if state.get("format_version") != CHECKPOINT_FORMAT:
            raise CxrganError(f"state format {state.get('format_version')!r} is not the supported {CHECKPOINT_FORMAT}")
        if state.get("method") != self.name:
            raise CxrganError(f"state of method {state.get('method')!r} cannot be loaded into a {self.name!r} model")
        fields = self.config_class.__dataclass_fields__
        self.config = self.config_class(**{k: v for k, v in state["config"].items() if k in fields})
        self.data_info_ = copy.deepcopy(state["data_info"])
        self._build_networks()
        self.generator_.load_state_dict(state["generator"])
        self.discriminator_.load_state_dict(state["discriminator"])
        if self.generator_ema_ is not None:
            if state.get("generator_ema") is None:
                raise CxrganError("the state has no EMA generator but its config asks for one")
            self.generator_ema_.load_state_dict(state["generator_ema"])
        return self
