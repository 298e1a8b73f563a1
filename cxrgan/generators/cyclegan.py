"""CycleGAN between the two classes of a binary task (G0->1, G1->0): config, presets, its step in the one loop.

Zhu, Park, Isola & Efros (2017), "Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks":
two translators G_ab: A -> B, G_ba: B -> A and two PatchGAN discriminators, trained with the least-squares GAN loss
(Mao et al. 2017; eq. 1 with MSE), the cycle-consistency loss lambda * (|G_ba(G_ab(a)) - a|_1 + |G_ab(G_ba(b)) - b|_1)
with lambda = 10 (eq. 2-3), the identity loss 0.5 * lambda * (|G_ab(b) - b|_1 + |G_ba(a) - a|_1) (sec. 5.2), a
50-image history pool for the discriminators, and Adam(2e-4, beta1 0.5) kept constant for the first half of the
run and decayed linearly to zero over the second (the paper's 100 + 100 epochs; ``decay_fraction``). Domain A is
class 0 of the training split, domain B class 1; Malygina et al. (2019), "GANs 'N Lungs", use G_ab and G_ba to give
every image a complement of the other class.

It trains through the one loop (``training.py``) with two row streams, one per domain; the loop's checkpoints keep
the image pools (``training_state``). ``sample`` translates training images the model keeps (``bank_size`` per
class) so the generic interface works without inputs; ``translate`` is the method's real entry point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrgan.data.dataset import CXRDataset
from cxrgan.data.transforms import images_to_tensor, tensor_to_images
from cxrgan.device import autocast
from cxrgan.errors import CxrganError
from cxrgan.generators.base import GenerativeModel, ImageTranslator, register_generator
from cxrgan.generators.cyclegan_figure import save_translation_figure
from cxrgan.generators.cyclegan_networks import ImagePool, PatchDiscriminator, ResnetGenerator, init_normal
from cxrgan.generators.conditioning import as_label_rows
from cxrgan.generators.seam import Batch, Statistic, StepContext, Stream
from cxrgan.generators.trainable import TrainableModel
from cxrgan.generators.trainer_config import TrainerConfig

# CPU preset, measured here (64 px, batch 4, one thread of a 2-core machine busy with another benchmark): a
# CycleGAN step takes 0.35 s at width 16 with 6 blocks, 0.27 s with 3 blocks, 0.97 s at width 32, 0.68 s at width 16
# with batch 8; on real Kermany images width 16 takes 0.45 s in fp32 and 0.21 s with bf16 autocast (same losses after
# 20 steps). Width 16, 6 blocks, batch 4, bf16 and 1000 steps (half at the constant rate, half decaying) train one
# CycleGAN in about 4 minutes. Recipe cyclegan-complement's six CycleGANs (2 rows x 3 seeds) and twelve ResNet-18
# runs took 52 minutes single-threaded beside another recipe (46 without the 'repeat' control row).
CPU_PRESET: dict[str, Any] = dict(steps=1000, ngf=16, ndf=16, n_blocks=6, batch_size=4, bf16=True, progress=False,
                                  log_every=25, checkpoint_every=100, grid_every=250, quality_every=250)
# Full preset (GPUs), the paper's: width 64, 9 blocks, batch 1, 200 epochs of about 1,000 images per domain.
FULL_PRESET: dict[str, Any] = dict(steps=200_000, ngf=64, ndf=64, n_blocks=9, batch_size=1, progress=True,
                                   log_every=500, checkpoint_every=5000, grid_every=10_000, quality_every=5000)


@dataclass(frozen=True)
class CycleGANConfig(TrainerConfig):
    """CycleGAN settings (paper values in comments): the loop's settings plus these."""

    steps: int = 200_000  # optimisation steps (paper: 200 epochs of about 1,000 images at batch 1)
    batch_size: int = 1  # images per domain per step (paper 1)
    divergence_d_loss: float = 1e-4  # LSGAN D loss under which a D has won (its outputs are exactly 1 and 0)
    ngf: int = 64  # generator width: channels of its first layer (paper 64)
    ndf: int = 64  # PatchGAN width: channels of its first layer (paper 64)
    n_blocks: int = 6  # residual blocks of each generator (paper: 6 at 128 px, 9 at 256 px)
    decay_fraction: float = 0.5  # final share of the steps over which the rate decays linearly to zero (paper 0.5)
    lr: float = 2e-4  # Adam learning rate of generators and discriminators (paper 2e-4)
    beta1: float = 0.5  # Adam beta1 (paper 0.5)
    beta2: float = 0.999  # Adam beta2
    lambda_cycle: float = 10.0  # weight of the cycle-consistency loss (paper 10)
    lambda_identity: float = 0.5  # identity-loss weight as a fraction of lambda_cycle (paper 0.5)
    pool_size: int = 50  # generated images the discriminators' history pool holds (paper 50; 0 = none)
    bank_size: int = 64  # training images per class kept in the model for ``sample`` without inputs

    describes: ClassVar[str] = "CycleGAN"

    def checks(self) -> dict[str, bool]:
        return {**super().checks(), "ngf": self.ngf >= 1, "ndf": self.ndf >= 1, "n_blocks": self.n_blocks >= 0,
                "decay_fraction": 0 <= self.decay_fraction <= 1, "lr": self.lr > 0, "beta1": 0 <= self.beta1 < 1,
                "beta2": 0 <= self.beta2 < 1, "lambda_cycle": self.lambda_cycle >= 0,
                "lambda_identity": self.lambda_identity >= 0, "pool_size": self.pool_size >= 0,
                "bank_size": self.bank_size >= 1}


def _lsgan(scores: torch.Tensor, target: float) -> torch.Tensor:
    return F.mse_loss(scores.float(), torch.full_like(scores.float(), target))


@register_generator("cyclegan")
class CycleGAN(TrainableModel, GenerativeModel, ImageTranslator):
    """Unpaired translation between class 0 (domain A) and class 1 (domain B) of a binary training split.

    Args:
        config: CycleGAN settings (defaults when None).
        device: torch device to train and translate on.
        run_dir: folder for checkpoint.pt, metrics.jsonl, loss_curves.png, samples/ and translations.png.
        step_hook: called with the number of finished steps after each step (progress reporting, tests).
    """

    config_class = CycleGANConfig
    summary = "unpaired translation between the two classes (Zhu et al. 2017); samples translate real images"
    cpu_preset, full_preset = CPU_PRESET, FULL_PRESET
    ema_networks = ("g_ab", "g_ba")
    divergence_statistic = "d_min"  # either discriminator winning outright leaves its generator without gradient

    def __init__(self, config: CycleGANConfig | None = None, device: str | torch.device = "cpu",
                 run_dir: str | Path | None = None, step_hook=None):
        super().__init__(config, device, run_dir, step_hook)
        self.bank_: list[np.ndarray] | None = None  # kept training images of class 0 and class 1

    # ---- the loop's seam ------------------------------------------------------------------------------------------
    def _training_streams(self, dataset: CXRDataset) -> tuple[list[Stream], dict[str, Any]]:
        if not dataset.is_binary:
            raise CxrganError(f"cyclegan translates between the two classes of a binary task; got labels {list(dataset.label_names)}")
        y = dataset.labels[:, 0]
        domains = [np.ascontiguousarray(dataset.images[y == value]) for value in (0.0, 1.0)]
        names = dataset.class_names or ("0", "1")
        for name, images in zip(names, domains):
            if len(images) < 2:
                raise CxrganError(f"cyclegan needs at least 2 training images of class {name!r}, the training set has {len(images)}")
        return [Stream(d) for d in domains], {"class_names": list(names), "n_train": [int(len(d)) for d in domains]}

    def _initialise(self, streams: list[Stream]) -> None:
        self.build()
        bank_rng = torch.Generator().manual_seed(self.config.seed + 3)
        self.bank_ = [s.images[np.sort(torch.randperm(len(s.images), generator=bank_rng)[: self.config.bank_size].numpy())]
                      for s in streams]

    def _build_networks(self) -> nn.ModuleDict:
        cfg, size = self.config, int(self.data_info_["image_size"])
        nets = nn.ModuleDict({
            "g_ab": ResnetGenerator(cfg.ngf, cfg.n_blocks), "g_ba": ResnetGenerator(cfg.ngf, cfg.n_blocks),
            "d_a": PatchDiscriminator(size, cfg.ndf), "d_b": PatchDiscriminator(size, cfg.ndf),
        })
        init_normal(nets, torch.Generator().manual_seed(cfg.seed + 1))
        return nets.to(self.device)

    def start_training(self) -> dict[str, torch.optim.Optimizer]:
        nets, cfg = self.networks_, self.config
        betas = (cfg.beta1, cfg.beta2)
        self._pools = [ImagePool(cfg.pool_size), ImagePool(cfg.pool_size)]  # fakes of A, of B
        return {"generators": torch.optim.Adam([*nets["g_ab"].parameters(), *nets["g_ba"].parameters()], lr=cfg.lr, betas=betas),
                "discriminators": torch.optim.Adam([*nets["d_a"].parameters(), *nets["d_b"].parameters()], lr=cfg.lr, betas=betas)}

    def learning_rate_factor(self, step: int) -> float:
        """Constant, then linear to zero over the last ``decay_fraction`` of the steps (Zhu et al., sec. 4)."""
        decay_steps = round(self.config.steps * self.config.decay_fraction)
        constant_steps = self.config.steps - decay_steps
        if step < constant_steps or decay_steps == 0:
            return 1.0
        return 1.0 - (step - constant_steps) / decay_steps

    def training_state(self) -> dict[str, Any]:
        return {"pool_a": self._pools[0].state_dict(), "pool_b": self._pools[1].state_dict()}

    def load_training_state(self, state: dict[str, Any]) -> None:
        self._pools[0].load_state_dict(state["pool_a"], self.device)
        self._pools[1].load_state_dict(state["pool_b"], self.device)

    def train_step(self, batches: list[Batch], ctx: StepContext) -> dict[str, Statistic]:
        """G step on both directions (LSGAN + cycle + identity), then the D step on pooled fakes."""
        nets, cfg = self.networks_, self.config
        (real_a, _), (real_b, _) = batches
        opt_g, opt_d = ctx.optimizers["generators"], ctx.optimizers["discriminators"]
        discriminators = [*nets["d_a"].parameters(), *nets["d_b"].parameters()]
        for p in discriminators:
            p.requires_grad_(False)  # G step: no D weight gradients
        try:
            with ctx.autocast():
                fake_b, fake_a = nets["g_ab"](real_a), nets["g_ba"](real_b)
                cycled_a, cycled_b = nets["g_ba"](fake_b), nets["g_ab"](fake_a)
                adversarial = _lsgan(nets["d_b"](fake_b), 1.0) + _lsgan(nets["d_a"](fake_a), 1.0)
                identity = torch.zeros((), device=self.device)
                if cfg.lambda_identity > 0:
                    identity = F.l1_loss(nets["g_ab"](real_b).float(), real_b) + F.l1_loss(nets["g_ba"](real_a).float(), real_a)
            cycle = F.l1_loss(cycled_a.float(), real_a) + F.l1_loss(cycled_b.float(), real_b)
            g_loss = adversarial + cfg.lambda_cycle * cycle + cfg.lambda_cycle * cfg.lambda_identity * identity
            ctx.check_finite("generator", g_loss)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
        finally:
            for p in discriminators:
                p.requires_grad_(True)
        pooled_a = self._pools[0].query(fake_a.float(), ctx.rng)
        pooled_b = self._pools[1].query(fake_b.float(), ctx.rng)
        with ctx.autocast():
            real_scores = [nets["d_a"](real_a), nets["d_b"](real_b)]
            fake_scores = [nets["d_a"](pooled_a), nets["d_b"](pooled_b)]
        d_losses = [0.5 * (_lsgan(r, 1.0) + _lsgan(f, 0.0)) for r, f in zip(real_scores, fake_scores)]
        d_loss = d_losses[0] + d_losses[1]
        ctx.check_finite("discriminator", d_loss)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        with torch.no_grad():
            return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), "g_adversarial": adversarial.detach(),
                    "cycle": cycle.detach(), "identity": identity.detach(),
                    "d_real": torch.stack([s.float().mean() for s in real_scores]).mean(),
                    "d_fake": torch.stack([s.float().mean() for s in fake_scores]).mean(),
                    "d_min": torch.minimum(*d_losses), "lr": opt_g.param_groups[0]["lr"]}

    def preview_images(self) -> tuple[np.ndarray, int]:
        rows = [bank[:8] for bank in self.bank_]  # originals and translations, both directions
        grid = np.concatenate([rows[0], self.translate(rows[0], 0), rows[1], self.translate(rows[1], 1)])
        return grid, len(rows[0])

    def quality_rows(self, streams: list[Stream]) -> tuple[np.ndarray, np.ndarray]:
        """Real images of both classes; each is compared with a translation into its class."""
        labels = np.concatenate([np.full(len(s.images), float(c), np.float32) for c, s in enumerate(streams)])[:, None]
        return np.concatenate([s.images for s in streams]), labels

    def save_artifacts(self, run_dir: Path) -> None:
        save_translation_figure(self, self.bank_[0][:6], self.bank_[1][:6], run_dir / "translations.png")

    def extra_state(self) -> dict[str, Any]:
        return {"bank": [torch.from_numpy(np.ascontiguousarray(b)) for b in self.bank_]}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.bank_ = [b.numpy().astype(np.uint8) for b in state["bank"]]

    # ---- interface --------------------------------------------------------------------------------------------------
    def fit(self, train_dataset: CXRDataset, resume: bool = False) -> CycleGAN:
        """Train on the two classes of a binary training split; with ``resume`` continue ``run_dir``'s checkpoint."""
        return super().fit(train_dataset, resume)

    @torch.no_grad()
    def translate(self, images: np.ndarray, source_class: int, batch_size: int = 64) -> np.ndarray:
        """(N, H, W) uint8 images of ``source_class`` (0 or 1) -> their translations into the other class."""
        return self.cycle(images, source_class, batch_size)[0]

    @torch.no_grad()
    def cycle(self, images: np.ndarray, source_class: int, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """(translations, cycle reconstructions G_back(G_forth(x))) of ``images`` of ``source_class``, uint8."""
        self._fitted()
        if source_class not in (0, 1):
            raise CxrganError(f"source_class must be 0 or 1, got {source_class!r}")
        size = int(self.data_info_["image_size"])
        if images.ndim != 3 or images.shape[1:] != (size, size) or images.dtype != np.uint8:
            raise CxrganError(f"translate needs (N, {size}, {size}) uint8 images, got {images.shape} {images.dtype}")
        g_ab, g_ba = self.sampled("g_ab"), self.sampled("g_ba")
        forth, back = (g_ab, g_ba) if source_class == 0 else (g_ba, g_ab)
        was_training = forth.training, back.training
        forth.eval()
        back.eval()
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
            forth.train(was_training[0])
            back.train(was_training[1])
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
            rows = as_label_rows(labels, n, 1)
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
