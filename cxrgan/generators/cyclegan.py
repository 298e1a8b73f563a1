"""CycleGAN between the two classes of a binary task (G0->1, G1->0), its training step and the Figure-1 panel.

Zhu, Park, Isola & Efros (2017), "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks":
two translators G_ab: A -> B, G_ba: B -> A and two PatchGAN discriminators, trained with the least-squares GAN loss
(Mao et al. 2017; eq. 1 with MSE), the cycle-consistency loss lambda * (|G_ba(G_ab(a)) - a|_1 + |G_ab(G_ba(b)) - b|_1)
with lambda = 10 (eq. 2-3), the identity loss 0.5 * lambda * (|G_ab(b) - b|_1 + |G_ba(a) - a|_1) (sec. 5.2), a
50-image history pool for the discriminators, Adam(2e-4, beta1 0.5) kept constant for ``epochs`` and decayed
linearly to zero over ``decay_epochs``. Domain A is class 0 of the training split, domain B class 1; Malygina et
al. (2019), "GANs 'N Lungs", use G_ab and G_ba to give every image a complement of the other class.

The two-generator / two-discriminator update does not fit ``GANTrainer``'s z -> image step, so ``CycleGANTrainer``
holds it; it keeps the shared loop's conventions: plain-dict checkpoints written atomically every epoch (or every
``checkpoint_every`` steps) with optimiser, RNG and pool state, a data order that is a function of (seed, epoch),
so a resumed run retraces an uninterrupted one, metrics.jsonl, loss curves, grids and the divergence stop.
``sample`` translates training images the model keeps (``bank_size`` per class) so the generic interface works
without inputs; ``translate`` is the method's real entry point.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.transforms import images_to_tensor, tensor_to_images
from cxrgan.device import autocast
from cxrgan.errors import CxrganError
from cxrgan.generators.artifacts import save_grid, save_loss_curves
from cxrgan.generators.base import (CHECKPOINT_FORMAT, GenerativeModel, check_training_rows, resume_or_build,
                                    image_fingerprint, register_generator)
from cxrgan.generators.cyclegan_figure import save_translation_figure
from cxrgan.generators.cyclegan_networks import ImagePool, PatchDiscriminator, ResnetGenerator, init_normal
from cxrgan.generators.dcgan import _as_label_rows
from cxrgan.generators.loop import CHECKPOINT_NAME, config_record
from cxrgan.io import append_jsonl, save_torch


@dataclass(frozen=True)
class CycleGANConfig:
    """CycleGAN settings (paper values in comments); CPU defaults live with the balancer."""

    ngf: int = 64  # generator width: channels of its first layer (paper 64)
    ndf: int = 64  # PatchGAN width: channels of its first layer (paper 64)
    n_blocks: int = 6  # residual blocks of each generator (paper: 6 at 128 px, 9 at 256 px)
    epochs: int = 100  # epochs at the constant learning rate (paper 100)
    decay_epochs: int = 100  # further epochs with the rate decaying linearly to zero (paper 100)
    batch_size: int = 1  # images per domain per step (paper 1)
    lr: float = 2e-4  # Adam learning rate of generators and discriminators (paper 2e-4)
    beta1: float = 0.5  # Adam beta1 (paper 0.5)
    beta2: float = 0.999  # Adam beta2
    lambda_cycle: float = 10.0  # weight of the cycle-consistency loss (paper 10)
    lambda_identity: float = 0.5  # identity-loss weight as a fraction of lambda_cycle (paper 0.5)
    pool_size: int = 50  # generated images the discriminators' history pool holds (paper 50; 0 = none)
    bank_size: int = 64  # training images per class kept in the model for ``sample`` without inputs
    bf16: bool = False  # bf16 autocast of forward passes; weights, optimiser and losses stay fp32
    seed: int = 0  # seeds weights, data order and the pool
    checkpoint_every: int = 0  # steps between checkpoints; 0 = at the end of every epoch
    grid_every: int = 1  # epochs between translation grids in the run directory; 0 = none
    divergence_patience: int = 200  # stop when a D loss stays below divergence_d_loss this many steps in a row
    divergence_d_loss: float = 1e-4  # LSGAN D loss under which D has won (its outputs are exactly 1 and 0)
    progress: bool = True  # show a tqdm progress bar

    def __post_init__(self) -> None:
        checks = {"ngf": self.ngf >= 1, "ndf": self.ndf >= 1, "n_blocks": self.n_blocks >= 0, "epochs": self.epochs >= 1,
                  "decay_epochs": self.decay_epochs >= 0, "batch_size": self.batch_size >= 1, "lr": self.lr > 0,
                  "beta1": 0 <= self.beta1 < 1, "beta2": 0 <= self.beta2 < 1, "lambda_cycle": self.lambda_cycle >= 0,
                  "lambda_identity": self.lambda_identity >= 0, "pool_size": self.pool_size >= 0,
                  "bank_size": self.bank_size >= 1, "checkpoint_every": self.checkpoint_every >= 0,
                  "grid_every": self.grid_every >= 0, "divergence_patience": self.divergence_patience >= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise CxrganError("invalid CycleGAN setting(s): " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))


@register_generator("cyclegan")
class CycleGAN(GenerativeModel):
    """Unpaired translation between class 0 (domain A) and class 1 (domain B) of a binary training split.

    Args:
        config: CycleGAN settings (defaults when None).
        device: torch device to train and translate on.
        run_dir: folder for checkpoint.pt, metrics.jsonl, loss_curves.png, samples/ and translations.png.
        step_hook: called with the global step after each training step (progress reporting, tests).
    """

    config_class = CycleGANConfig

    def __init__(self, config: CycleGANConfig | None = None, device: str | torch.device = "cpu",
                 run_dir: str | Path | None = None, step_hook: Callable[[int], None] | None = None):
        self.config = config if config is not None else CycleGANConfig()
        if not isinstance(self.config, CycleGANConfig):
            raise CxrganError(f"cyclegan needs a CycleGANConfig, got {type(self.config).__name__}")
        self.device = torch.device(device)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.step_hook = step_hook
        self.nets_: torch.nn.ModuleDict | None = None  # g_ab (0 -> 1), g_ba (1 -> 0), d_a, d_b
        self.bank_: list[np.ndarray] | None = None  # kept training images of class 0 and class 1
        self.data_info_: dict[str, Any] | None = None
        self.history_: list[dict] = []

    # ---- networks ---------------------------------------------------------------------------------------
    def _build_networks(self) -> None:
        cfg, size = self.config, int(self.data_info_["image_size"])
        nets = torch.nn.ModuleDict({
            "g_ab": ResnetGenerator(cfg.ngf, cfg.n_blocks), "g_ba": ResnetGenerator(cfg.ngf, cfg.n_blocks),
            "d_a": PatchDiscriminator(size, cfg.ndf), "d_b": PatchDiscriminator(size, cfg.ndf),
        })
        init_normal(nets, torch.Generator().manual_seed(cfg.seed + 1))
        self.nets_ = nets.to(self.device)

    def _fitted(self) -> torch.nn.ModuleDict:
        if self.nets_ is None:
            raise CxrganError("this cyclegan model is not fitted; call fit() or load_state_dict() first")
        return self.nets_

    # ---- interface --------------------------------------------------------------------------------------
    def fit(self, train_dataset: CXRDataset, resume: bool = False) -> CycleGAN:
        """Train on the two classes of a binary training split; with ``resume`` continue ``run_dir``'s checkpoint."""
        check_training_rows(train_dataset, "the cyclegan training set")
        if not train_dataset.is_binary:
            raise CxrganError(f"cyclegan translates between the two classes of a binary task; got labels {list(train_dataset.label_names)}")
        y = train_dataset.labels[:, 0]
        domains = [train_dataset.images[y == value] for value in (0.0, 1.0)]
        names = train_dataset.class_names or ("0", "1")
        for name, images in zip(names, domains):
            if len(images) < 2:
                raise CxrganError(f"cyclegan needs at least 2 training images of class {name!r}, the training set has {len(images)}")
        info = dict(image_size=int(train_dataset.image_size), label_names=list(train_dataset.label_names),
                    class_names=list(names), n_train=[int(len(d)) for d in domains],
                    fingerprint=image_fingerprint(np.concatenate(domains)))
        checkpoint = resume_or_build(self, config_record(self.config), info, resume, self._build_networks)
        if checkpoint is None:
            bank_rng = torch.Generator().manual_seed(self.config.seed + 3)
            self.bank_ = [d[np.sort(torch.randperm(len(d), generator=bank_rng)[: self.config.bank_size].numpy())] for d in domains]
        elif checkpoint.get("done"):
            return self
        self.history_ = CycleGANTrainer(self, domains, self.run_dir, self.step_hook).run(resume_from=checkpoint)
        return self


    @torch.no_grad()
    def translate(self, images: np.ndarray, source_class: int, batch_size: int = 64) -> np.ndarray:
        """(N, H, W) uint8 images of ``source_class`` (0 or 1) -> their translations into the other class."""
        return self.cycle(images, source_class, batch_size)[0]

    @torch.no_grad()
    def cycle(self, images: np.ndarray, source_class: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(translations, cycle reconstructions G_back(G_forth(x))) of ``images`` of ``source_class``, uint8."""
        nets = self._fitted()
        if source_class not in (0, 1):
            raise CxrganError(f"source_class must be 0 or 1, got {source_class!r}")
        size = int(self.data_info_["image_size"])
        if images.ndim != 3 or images.shape[1:] != (size, size) or images.dtype != np.uint8:
            raise CxrganError(f"translate needs (N, {size}, {size}) uint8 images, got {images.shape} {images.dtype}")
        forth, back = (nets["g_ab"], nets["g_ba"]) if source_class == 0 else (nets["g_ba"], nets["g_ab"])
        was_training = nets.training
        nets.eval()
        outputs: tuple[list, list] = ([np.zeros((0, size, size), np.uint8)], [np.zeros((0, size, size), np.uint8)])
        try:
            for start in range(0, len(images), batch_size):
                x = images_to_tensor(images[start:start + batch_size], self.device)
                with autocast(self.device, self.config.bf16):
                    translated = forth(x)
                    restored = back(translated)
                outputs[0].append(tensor_to_images(translated))
                outputs[1].append(tensor_to_images(restored))
        finally:
            nets.train(was_training)
        return np.concatenate(outputs[0]), np.concatenate(outputs[1])

    def sample(self, n: int, labels: np.ndarray | None = None, generator: torch.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Images of the requested (or fair-coin) classes, each the translation of a random kept image of the other class."""
        self._fitted()
        if n < 0:
            raise CxrganError(f"cannot sample a negative number of images ({n})")
        generator = generator if generator is not None else torch.Generator().manual_seed(self.config.seed)
        if labels is None:
            rows = (torch.rand(n, generator=generator) < 0.5).float().numpy()[:, None]
        else:
            rows = _as_label_rows(labels, n, 1)
            if not np.isin(rows, [0.0, 1.0]).all():
                raise CxrganError(f"cyclegan samples class 0 or 1; requested labels {np.unique(rows).tolist()}")
        size = int(self.data_info_["image_size"])
        images = np.zeros((n, size, size), np.uint8)
        for target in (0, 1):
            where = np.flatnonzero(rows[:, 0] == target)
            bank = self.bank_[1 - target]
            picks = torch.randint(len(bank), (len(where),), generator=generator).numpy()
            if len(where):
                images[where] = self.translate(bank[picks], 1 - target)
        return images, rows.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        nets = self._fitted()
        return {
            "format_version": CHECKPOINT_FORMAT, "method": self.name, "config": config_record(self.config),
            "data_info": copy.deepcopy(self.data_info_),
            **{name: net.state_dict() for name, net in nets.items()},
            "bank": [torch.from_numpy(np.ascontiguousarray(b)) for b in self.bank_],
        }

    def load_state_dict(self, state: dict[str, Any]) -> CycleGAN:
        """Restore networks, kept images, config and data facts from ``state_dict`` output or a checkpoint."""
        if state.get("format_version") != CHECKPOINT_FORMAT:
            raise CxrganError(f"state format {state.get('format_version')!r} is not the supported {CHECKPOINT_FORMAT}")
        if state.get("method") != self.name:
            raise CxrganError(f"state of method {state.get('method')!r} cannot be loaded into a {self.name!r} model")
        fields = {f.name for f in dataclasses.fields(CycleGANConfig)}
        self.config = CycleGANConfig(**{k: v for k, v in state["config"].items() if k in fields})
        self.data_info_ = copy.deepcopy(state["data_info"])
        self._build_networks()
        for name, net in self.nets_.items():
            net.load_state_dict(state[name])
        self.bank_ = [b.numpy().astype(np.uint8) for b in state["bank"]]
        return self


def _lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(scores.float(), torch.full_like(scores.float(), target))


class CycleGANTrainer:
    """The CycleGAN step (G_ab and G_ba together, then D_a and D_b on pooled fakes) with checkpoints and resume.

    Args:
        model: a CycleGAN whose ``nets_`` exist.
        domains: (uint8 images of class 0, uint8 images of class 1).
        run_dir: where checkpoints, metrics.jsonl, loss curves and grids go; None keeps nothing on disk.
        step_hook: called with the global step after every step.
    """

    def __init__(self, model: CycleGAN, domains: list[np.ndarray], run_dir: Path | None,
                 step_hook: Callable[[int], None] | None = None):
        self.model, self.config, self.device, self.domains = model, model.config, model.device, domains
        self.run_dir, self.step_hook = run_dir, step_hook
        self.batch_size = min(self.config.batch_size, *(len(d) for d in domains))
        self.steps_per_epoch = max(len(d) for d in domains) // self.batch_size  # the larger domain sets the epoch
        self.constant_steps = self.steps_per_epoch * self.config.epochs
        self.total_steps = self.steps_per_epoch * (self.config.epochs + self.config.decay_epochs)
        nets, betas = model.nets_, (self.config.beta1, self.config.beta2)
        self.opt_g = torch.optim.Adam([*nets["g_ab"].parameters(), *nets["g_ba"].parameters()], lr=self.config.lr, betas=betas)
        self.opt_d = torch.optim.Adam([*nets["d_a"].parameters(), *nets["d_b"].parameters()], lr=self.config.lr, betas=betas)
        self.pools = [ImagePool(self.config.pool_size), ImagePool(self.config.pool_size)]  # fakes of A, of B
        self.rng = torch.Generator().manual_seed(self.config.seed)
        self.step, self.low_d_steps = 0, 0

    def learning_rate(self, step: int) -> float:
        """Constant for ``epochs`` epochs, then linear to zero over ``decay_epochs`` (Zhu et al., sec. 4)."""
        decay_steps = self.total_steps - self.constant_steps
        if step < self.constant_steps or decay_steps == 0:
            return self.config.lr
        return self.config.lr * (1.0 - (step - self.constant_steps) / decay_steps)

    def epoch_order(self, epoch: int, domain: int) -> np.ndarray:
        """Rows of ``domain`` for every step of ``epoch``: a function of (seed, epoch, domain) only. The smaller domain
        is drawn in several fresh permutations, like the unaligned loader of Zhu et al. draws B at random."""
        rng = torch.Generator().manual_seed(self.config.seed * 1_000_003 + 2 * epoch + domain)
        n, needed = len(self.domains[domain]), self.steps_per_epoch * self.batch_size
        return torch.cat([torch.randperm(n, generator=rng) for _ in range(-(-needed // n))])[:needed].numpy()

    def checkpoint_path(self) -> Path | None:
        return self.run_dir / CHECKPOINT_NAME if self.run_dir is not None else None

    def save_checkpoint(self, done: bool = False) -> None:
        if self.run_dir is None:
            return
        state = self.model.state_dict()
        state.update(opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict(), rng=self.rng.get_state(),
                     pool_a=self.pools[0].state_dict(), pool_b=self.pools[1].state_dict(), step=self.step,
                     epoch=self.step // self.steps_per_epoch, low_d_steps=self.low_d_steps, done=done)
        save_torch(self.checkpoint_path(), state)

    def _restore(self, checkpoint: dict) -> None:
        self.opt_g.load_state_dict(checkpoint["opt_g"])
        self.opt_d.load_state_dict(checkpoint["opt_d"])
        self.rng.set_state(checkpoint["rng"])
        self.pools[0].load_state_dict(checkpoint["pool_a"], self.device)
        self.pools[1].load_state_dict(checkpoint["pool_b"], self.device)
        self.step, self.low_d_steps = int(checkpoint["step"]), int(checkpoint["low_d_steps"])

    def train_step(self, index_a: np.ndarray, index_b: np.ndarray) -> dict[str, float]:
        """G step on both directions (LSGAN + cycle + identity), then the D step on pooled fakes."""
        nets, cfg = self.model.nets_, self.config
        for group in (*self.opt_g.param_groups, *self.opt_d.param_groups):
            group["lr"] = self.learning_rate(self.step)
        real_a = images_to_tensor(self.domains[0][np.sort(index_a)], self.device)
        real_b = images_to_tensor(self.domains[1][np.sort(index_b)], self.device)
        discriminators = [*nets["d_a"].parameters(), *nets["d_b"].parameters()]
        for p in discriminators:
            p.requires_grad_(False)  # G step: no D weight gradients
        try:
            with autocast(self.device, cfg.bf16):
                fake_b, fake_a = nets["g_ab"](real_a), nets["g_ba"](real_b)
                cycled_a, cycled_b = nets["g_ba"](fake_b), nets["g_ab"](fake_a)
                adversarial = _lsgan(nets["d_b"](fake_b), 1.0) + _lsgan(nets["d_a"](fake_a), 1.0)
                identity = torch.zeros((), device=self.device)
                if cfg.lambda_identity > 0:
                    identity = F.l1_loss(nets["g_ab"](real_b).float(), real_b) + F.l1_loss(nets["g_ba"](real_a).float(), real_a)
            cycle = F.l1_loss(cycled_a.float(), real_a) + F.l1_loss(cycled_b.float(), real_b)
            g_loss = adversarial + cfg.lambda_cycle * cycle + cfg.lambda_cycle * cfg.lambda_identity * identity
            self._check_finite("generator", g_loss)
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
        finally:
            for p in discriminators:
                p.requires_grad_(True)
        pooled_a = self.pools[0].query(fake_a.float(), self.rng)
        pooled_b = self.pools[1].query(fake_b.float(), self.rng)
        with autocast(self.device, cfg.bf16):
            real_scores = [nets["d_a"](real_a), nets["d_b"](real_b)]
            fake_scores = [nets["d_a"](pooled_a), nets["d_b"](pooled_b)]
        d_losses = [0.5 * (_lsgan(r, 1.0) + _lsgan(f, 0.0)) for r, f in zip(real_scores, fake_scores)]
        d_loss = d_losses[0] + d_losses[1]
        self._check_finite("discriminator", d_loss)
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "g_adversarial": adversarial.item(),
                "cycle": cycle.item(), "identity": identity.item(),
                "d_real": float(np.mean([s.float().mean().item() for s in real_scores])),
                "d_fake": float(np.mean([s.float().mean().item() for s in fake_scores])),
                "d_min": min(x.item() for x in d_losses)}

    def _check_finite(self, which: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            self._diverged(f"the {which} loss is {loss.item()}")

    def _diverged(self, reason: str) -> None:
        path = self.checkpoint_path()
        where = f"; the last good checkpoint is {path}" if path and path.exists() else "; no checkpoint was written yet"
        raise CxrganError(f"CycleGAN training diverged at step {self.step + 1} ({reason}){where}. "
                          "Try a lower learning rate or another seed.")

    def run(self, resume_from: dict | None = None) -> list[dict]:
        """Train to ``epochs + decay_epochs`` (continuing ``resume_from``); returns the per-epoch records."""
        cfg = self.config
        if resume_from is not None:
            self._restore(resume_from)
        history, sums, started = [], {}, time.perf_counter()
        bar = tqdm(total=self.total_steps, initial=self.step, desc="cyclegan", disable=not cfg.progress, leave=False)
        self.model.nets_.train()
        while self.step < self.total_steps:
            epoch, within = divmod(self.step, self.steps_per_epoch)
            rows = slice(within * self.batch_size, (within + 1) * self.batch_size)
            stats = self.train_step(self.epoch_order(epoch, 0)[rows], self.epoch_order(epoch, 1)[rows])
            # a discriminator that wins outright (LSGAN loss ~0) leaves its generator without gradient
            self.low_d_steps = self.low_d_steps + 1 if stats.pop("d_min") < cfg.divergence_d_loss else 0
            if self.low_d_steps >= cfg.divergence_patience:
                self._diverged(f"a discriminator loss stayed below {cfg.divergence_d_loss:g} for {self.low_d_steps} steps")
            self.step += 1
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value
            sums["n"] = sums.get("n", 0) + 1
            bar.update(1)
            epoch_done = self.step % self.steps_per_epoch == 0
            if epoch_done:
                record = {k: v / sums["n"] for k, v in sums.items() if k != "n"}
                record.update(epoch=self.step // self.steps_per_epoch, step=self.step, lr=self.learning_rate(self.step - 1),
                              seconds=round(time.perf_counter() - started, 3))
                history.append(record)
                sums = {}
                self._write_epoch_artifacts(record)
            if self.run_dir is not None and self.step < self.total_steps and (
                    (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or (not cfg.checkpoint_every and epoch_done)):
                self.save_checkpoint()
            if self.step_hook is not None:
                self.step_hook(self.step)
        bar.close()
        self.save_checkpoint(done=True)
        if self.run_dir is not None:
            save_translation_figure(self.model, self.model.bank_[0][:6], self.model.bank_[1][:6], self.run_dir / "translations.png")
        return history

    def _write_epoch_artifacts(self, record: dict) -> None:
        if self.run_dir is None:
            return
        append_jsonl(self.run_dir / "metrics.jsonl", record)
        save_loss_curves(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curves.png")
        epoch, total = record["epoch"], self.config.epochs + self.config.decay_epochs
        if self.config.grid_every and (epoch % self.config.grid_every == 0 or epoch == total):
            rows = [bank[:8] for bank in self.model.bank_]  # originals and translations, both directions
            grid = np.concatenate([rows[0], self.model.translate(rows[0], 0), rows[1], self.model.translate(rows[1], 1)])
            save_grid(grid, self.run_dir / "samples" / f"epoch{epoch:04d}.png", columns=len(rows[0]))
