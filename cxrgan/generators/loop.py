"""The one GAN training loop: alternating D/G steps, DiffAugment, EMA, bf16, checkpoints, resume, divergence stop.

Every adversarial model in ``cxrgan.generators`` trains here; a model only supplies its networks and the
conditioning labels of the training rows. The step is the standard alternating update of Goodfellow et al. (2014)
written to avoid wasted work (measured in ``benchmarks/gan_step.py``):

* the fakes are generated once per step; the D step uses ``fake.detach()`` so no generator graph is walked back,
  and the G step reuses the same fakes through the *updated* D (so the G step needs its own D forward);
* during the G step D's parameters are frozen (``requires_grad_(False)``): backward computes only the gradient
  with respect to the images, not D's weight gradients;
* with a BatchNorm-free discriminator (spectral norm) real and fake go through D in one forward pass; with
  BatchNorm they stay separate batches as in DCGAN, since a joint batch would mix their statistics;
* ``zero_grad(set_to_none=True)``, fused Adam, channels-last tensors and optional bf16 autocast (weights stay fp32).

Randomness: one ``torch.Generator`` (seeded from ``config.seed``, saved in checkpoints) draws noise and augmentation;
the data order of epoch e is a function of (seed, e) only, like ``DistributedSampler.set_epoch``, so a resumed run
retraces an uninterrupted one exactly and the loop needs no global state. Under torchrun/DDP a rank would take
``epoch_order(e)[rank::world_size]`` and the networks would be wrapped in DistributedDataParallel; nothing else
in the loop depends on being the only process (the device is passed in, checkpoints are written by whoever calls).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from cxrgan.data.transforms import images_to_tensor
from cxrgan.device import autocast
from cxrgan.errors import CxrganError
from cxrgan.generators.artifacts import save_grid, save_loss_curves
from cxrgan.generators.augment import diff_augment, parse_policy
from cxrgan.generators.base import CHECKPOINT_FORMAT, CHECKPOINT_NAME
from cxrgan.generators.blocks import NORMS, ema_update
from cxrgan.generators.losses import get_loss
from cxrgan.io import append_jsonl, save_torch

if TYPE_CHECKING:
    from cxrgan.generators.adversarial import AdversarialModel



@dataclass(frozen=True)
class GANConfig:
    """Settings shared by every adversarial model; method configs add their own fields."""

    z_dim: int = 100  # latent size (Radford et al. 2015: 100)
    ngf: int = 64  # generator width: channels of its last hidden layer
    ndf: int = 64  # discriminator width: channels of its first layer
    d_norm: str = "batch"  # discriminator normalisation: "batch" (DCGAN), "spectral" or "none"
    loss: str = "bce"  # adversarial loss: "bce" (non-saturating, from logits) or "hinge"
    epochs: int = 25  # passes over the training images
    batch_size: int = 64  # real images per step (as many fakes)
    lr_g: float = 2e-4  # generator Adam learning rate (Radford et al.)
    lr_d: float = 2e-4  # discriminator Adam learning rate
    beta1: float = 0.5  # Adam beta1 (Radford et al.: 0.5)
    beta2: float = 0.999  # Adam beta2
    diffaugment: str = ""  # DiffAugment ops, e.g. "translation,cutout,brightness,contrast"; "" = none
    ema_decay: float = 0.0  # EMA decay of generator weights used for sampling; 0 samples the live generator
    bf16: bool = False  # bf16 autocast for forward passes; weights, optimiser and losses stay fp32
    channels_last: bool = True  # channels-last memory format (faster oneDNN convolutions on CPU)
    seed: int = 0  # seeds weight init, noise, augmentation and data order
    checkpoint_every: int = 0  # steps between checkpoints; 0 = at the end of every epoch
    grid_every: int = 1  # epochs between sample-grid PNGs in the run directory; 0 = none
    divergence_patience: int = 200  # stop when D loss stays below divergence_d_loss this many steps in a row
    divergence_d_loss: float = 1e-3  # D loss under which D is considered to have won (G gets no signal)
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        checks = {
            "d_norm": self.d_norm in NORMS, "z_dim": self.z_dim >= 1, "ngf": self.ngf >= 1, "ndf": self.ndf >= 1, "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 2, "lr_g": self.lr_g > 0, "lr_d": self.lr_d > 0,
            "beta1": 0 <= self.beta1 < 1, "beta2": 0 <= self.beta2 < 1, "ema_decay": 0 <= self.ema_decay < 1,
            "checkpoint_every": self.checkpoint_every >= 0, "grid_every": self.grid_every >= 0,
            "divergence_patience": self.divergence_patience >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise CxrganError("invalid GAN setting(s): " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
        parse_policy(self.diffaugment)
        get_loss(self.loss)


class GANTrainer:
    """Trains ``model``'s networks on uint8 images and optional (N, K) conditioning labels.

    Args:
        model: an AdversarialModel whose ``generator_``, ``discriminator_`` (and ``generator_ema_``) exist.
        images: (N, H, W) uint8 training images.
        cond_labels: (N, K) float conditioning labels for a conditional model, else None.
        run_dir: where checkpoints, metrics.jsonl, loss curves and sample grids go; None keeps nothing on disk.
        step_hook: called with the global step after every step (progress reporting, tests).
    """

    def __init__(self, model: AdversarialModel, images: np.ndarray, cond_labels: np.ndarray | None,
                 run_dir: Path | None = None, step_hook: Callable[[int], None] | None = None):
        self.model, self.config, self.device = model, model.config, model.device
        self.images, self.cond_labels = images, cond_labels
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step_hook = step_hook
        self.batch_size = min(self.config.batch_size, len(images))
        self.steps_per_epoch = len(images) // self.batch_size
        self.total_steps = self.steps_per_epoch * self.config.epochs
        self.loss = get_loss(self.config.loss)
        self.policy = parse_policy(self.config.diffaugment)
        G, D = model.generator_, model.discriminator_
        betas = (self.config.beta1, self.config.beta2)
        # fused Adam: one kernel per parameter group instead of ~8 elementwise passes per tensor
        self.opt_g = torch.optim.Adam(G.parameters(), lr=self.config.lr_g, betas=betas, fused=True)
        self.opt_d = torch.optim.Adam(D.parameters(), lr=self.config.lr_d, betas=betas, fused=True)
        self.rng = torch.Generator().manual_seed(self.config.seed)
        self.step = 0
        self.low_d_steps = 0  # consecutive steps with D loss below divergence_d_loss

    # ---- checkpoints ------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None

    def save_checkpoint(self, done: bool = False) -> None:
        if self.checkpoint_path is None:
            return
        state = self.model.state_dict()
        state.update(
            format_version=CHECKPOINT_FORMAT,
            opt_g=self.opt_g.state_dict(),
            opt_d=self.opt_d.state_dict(),
            rng=self.rng.get_state(),
            step=self.step,
            epoch=self.step // self.steps_per_epoch,
            low_d_steps=self.low_d_steps,
            done=done,
        )
        save_torch(self.checkpoint_path, state)

    def restore(self, checkpoint: dict) -> None:
        """Continue from a checkpoint written by ``save_checkpoint`` (weights were loaded by the model)."""
        self.opt_g.load_state_dict(checkpoint["opt_g"])
        self.opt_d.load_state_dict(checkpoint["opt_d"])
        self.rng.set_state(checkpoint["rng"])
        self.step = int(checkpoint["step"])
        self.low_d_steps = int(checkpoint["low_d_steps"])

    # ---- training ---------------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> np.ndarray:
        """Row order of ``epoch``: a function of (seed, epoch) only, so any process can compute it."""
        order_rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.images), generator=order_rng).numpy()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.config.channels_last else x

    def train_step(self, index: np.ndarray) -> dict[str, float]:
        """One alternating D then G update on the real rows ``index``."""
        G, D, cfg = self.model.generator_, self.model.discriminator_, self.config
        real = self._to_device(images_to_tensor(self.images[np.sort(index)]))
        labels = None
        if self.cond_labels is not None:
            labels = torch.from_numpy(self.cond_labels[np.sort(index)]).to(self.device)
        z = torch.randn(len(index), G.z_dim, generator=self.rng).to(self.device)
        augment = (lambda x: diff_augment(x, self.policy, self.rng)) if self.policy else (lambda x: x)

        with autocast(self.device, cfg.bf16):
            fake = G(z, labels)
            real_in, fake_in = augment(real), augment(fake.detach())
            if D.mixes_batch:
                real_logits, fake_logits = D(real_in, labels), D(fake_in, labels)
            else:
                both_labels = None if labels is None else torch.cat([labels, labels])
                real_logits, fake_logits = D(torch.cat([real_in, fake_in]), both_labels).split(len(index))
        d_loss = self.loss.d_loss(real_logits, fake_logits)
        self._check_finite("discriminator", d_loss)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        D.requires_grad_(False)  # G step: gradients w.r.t. the images only, none for D's weights
        try:
            with autocast(self.device, cfg.bf16):
                g_logits = D(augment(fake), labels)
            g_loss = self.loss.g_loss(g_logits)
            self._check_finite("generator", g_loss)
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
        finally:
            D.requires_grad_(True)
        if self.model.generator_ema_ is not None:
            # EMA warm-up: short runs average over their own length instead of the untrained start
            decay = min(cfg.ema_decay, (1 + self.step) / (10 + self.step))
            ema_update(self.model.generator_ema_, G, decay)
        with torch.no_grad():
            return {
                "d_loss": d_loss.item(),
                "g_loss": g_loss.item(),
                "d_real": torch.sigmoid(real_logits.float()).mean().item(),
                "d_fake": torch.sigmoid(fake_logits.float()).mean().item(),
            }

    def _check_finite(self, which: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            self._diverged(f"the {which} loss is {loss.item()}")

    def _diverged(self, reason: str) -> None:
        where = (f"; the last good checkpoint is {self.checkpoint_path}" if self.checkpoint_path and self.checkpoint_path.exists()
                 else "; no checkpoint was written yet")
        raise CxrganError(
            f"GAN training diverged at step {self.step + 1} ({reason}){where}. "
            "Try a lower learning rate, DiffAugment, spectral norm (d_norm='spectral') or another seed."
        )

    def run(self, resume_from: dict | None = None) -> list[dict]:
        """Train to ``config.epochs`` (continuing ``resume_from`` if given); returns the per-epoch records."""
        cfg = self.config
        if resume_from is not None:
            self.restore(resume_from)
        history: list[dict] = []
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"{self.model.name}", disable=not cfg.progress, leave=False)
        G, D = self.model.generator_, self.model.discriminator_
        G.train()
        D.train()
        sums: dict[str, float] = {}
        started = time.perf_counter()
        while self.step < self.total_steps:
            epoch, within = divmod(self.step, self.steps_per_epoch)
            order = self.epoch_order(epoch)
            start = within * self.batch_size
            stats = self.train_step(order[start: start + self.batch_size])
            self.low_d_steps = self.low_d_steps + 1 if stats["d_loss"] < cfg.divergence_d_loss else 0
            if self.low_d_steps >= cfg.divergence_patience:
                self._diverged(f"discriminator loss below {cfg.divergence_d_loss:g} for {self.low_d_steps} steps: "
                               "D separates real from fake perfectly and G gets no gradient")
            self.step += 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["n"] = sums.get("n", 0) + 1
            bar.update(1)
            bar.set_postfix(d=f"{stats['d_loss']:.3f}", g=f"{stats['g_loss']:.3f}")
            epoch_done = self.step % self.steps_per_epoch == 0
            if epoch_done:
                record = {k: v / sums["n"] for k, v in sums.items() if k != "n"}
                record.update(epoch=self.step // self.steps_per_epoch, step=self.step,
                              seconds=round(time.perf_counter() - started, 3))
                history.append(record)
                sums = {}
                self._write_epoch_artifacts(record)
            if self.run_dir is not None and self.step < self.total_steps and (
                (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or (not cfg.checkpoint_every and epoch_done)
            ):
                self.save_checkpoint()
            if self.step_hook is not None:
                self.step_hook(self.step)
        bar.close()
        self.model.finalize_training()
        self.save_checkpoint(done=True)
        return history

    def _write_epoch_artifacts(self, record: dict) -> None:
        if self.run_dir is None:
            return
        append_jsonl(self.run_dir / "metrics.jsonl", record)
        save_loss_curves(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curves.png")
        epoch = record["epoch"]
        if self.config.grid_every and (epoch % self.config.grid_every == 0 or epoch == self.config.epochs):
            grid_rng = torch.Generator().manual_seed(self.config.seed + 12345)  # same noise every epoch
            self.model.finalize_training()  # EMA BatchNorm statistics; overwritten by the next EMA update
            images, _ = self.model.sample(64, generator=grid_rng)
            save_grid(images, self.run_dir / "samples" / f"epoch{epoch:04d}.png", columns=8)


def config_record(config: GANConfig) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()}


def steps_for(n_images: int, config: GANConfig) -> int:
    """Total optimisation steps a run over ``n_images`` takes (drop-last batches)."""
    batch = min(config.batch_size, n_images)
    return (n_images // batch) * config.epochs if batch else 0


