"""GAN oversampling: train (or load) a generator on the training split and add synthetic minority images.

Methods (Sun & Li, "DCGAN and cDCGAN for pneumonia oversampling"): ``dcgan`` trains one DCGAN on the minority
class and adds its samples; ``cdcgan-aX`` trains one conditional DCGAN on all classes and samples labels that are
healthy with probability alpha = X.

How many images are added. Let ``deficit = ceil(ratio * n_majority) - n_minority`` (ratio 1.0 = balanced), or
``n_synthetic`` when given explicitly. A DCGAN adds exactly ``deficit`` minority images. A cDCGAN adds images of
both classes such that alpha is the fraction labelled healthy (label 0) and the minority class gains exactly
``deficit`` images: with the minority diseased, ``deficit`` diseased plus ``round(deficit * alpha / (1 - alpha))``
healthy images (alpha 0.5 adds as many healthy as diseased ones; alpha 0 gives a balanced set). The counts are
fixed rather than Bernoulli draws so repeated runs differ only by the images. With ``n_synthetic`` given, that is
the total, split ``round(alpha * n)`` healthy and the rest diseased. So for alpha > 0 the output is deliberately
not balanced: alpha trades sensitivity for specificity as in the paper.

Generators see only the training split (``fit_resample`` refuses other rows). When the run has a ``work_dir``,
trained generators are cached there by (method, config, training data, seed), so the three cDCGAN alphas of a
seed share one trained model and an interrupted run resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from cxrgan.balance.base import BalanceContext, Balancer, register_balancer
from cxrgan.balance.classic import check_train_split, generated_meta
from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators.base import generator_class, image_fingerprint
from cxrgan.generators.dcgan import CDCGANConfig, DCGANConfig
from cxrgan.generators.loop import GANConfig, config_record
from cxrgan.generators.runs import load_run

# CPU defaults: slim widths, DiffAugment and EMA so a run on ~1000 images trains in a few minutes
# (timings in the report of issue 3); ``full`` uses the DCGAN paper widths.
CPU_DEFAULTS = dict(ngf=32, ndf=32, batch_size=64, diffaugment="translation,cutout,brightness,contrast",
                    ema_decay=0.999, bf16=True, progress=False, grid_every=10)
CPU_TRAIN_STEPS = 500  # optimisation steps per CPU-default generator, whatever the class size (epochs follow)
# DiffAugment guards against a discriminator memorising few images over many epochs; in a short run over many
# images it only slows D and G collapses partially. Measured on Kermany 64 px (3:1), 500 steps, width 32:
# cDCGAN on 1611 images (20 epochs) pixel std across samples 15 with DiffAugment vs 30 without (real: 32-36);
# DCGAN on 403 pneumonia images (84 epochs) 30 with DiffAugment. So it is kept only from this many epochs on.
AUGMENT_MIN_EPOCHS = 50
FULL_DEFAULTS = dict(ngf=64, ndf=64, epochs=100, batch_size=64, diffaugment="translation,cutout,brightness,contrast",
                     ema_decay=0.999, bf16=False, progress=True, grid_every=5)


class GANOversampler(Balancer):
    """Adds generated minority images to a binary training split.

    Args:
        method: generator registry key, "dcgan" or "cdcgan".
        config: the generator's config; its ``seed`` is replaced by ``random_state`` (and a DCGAN's ``target``
            by the minority class).
        alpha: cDCGAN probability of a healthy sampled label (ignored for DCGAN).
        ratio: target minority / majority count after oversampling (1.0 = balanced).
        n_synthetic: explicit number of generated images; overrides ``ratio``.
        run_dir: a trained run directory to load instead of training.
        work_dir: cache folder for trained generators (None trains in memory each time).
        device: torch device.
        random_state: seeds generator training and sampling.
        name: the method name written to the ``source`` of synthetic rows.
        train_steps: when given, the number of optimisation steps to train for: ``config.epochs`` becomes
            ``ceil(train_steps / steps_per_epoch)`` for the rows the generator trains on, so the cost does not
            grow with the class size, and DiffAugment is dropped when that gives fewer than
            ``AUGMENT_MIN_EPOCHS`` epochs (see the measurement above).
    """

    def __init__(self, method: str, config: GANConfig, alpha: float = 0.5, ratio: float = 1.0,
                 n_synthetic: int | None = None, run_dir: str | Path | None = None, work_dir: str | Path | None = None,
                 device: str = "cpu", random_state: int = 0, name: str | None = None, train_steps: int | None = None):
        if ratio <= 0:
            raise CxrganError(f"ratio must be positive, got {ratio}")
        if n_synthetic is not None and n_synthetic < 0:
            raise CxrganError(f"n_synthetic must be >= 0, got {n_synthetic}")
        self.method, self.config, self.alpha, self.ratio = method, config, float(alpha), float(ratio)
        self.n_synthetic, self.device, self.random_state = n_synthetic, device, int(random_state)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.name = name or method
        self.train_steps = train_steps
        generator_class(method)  # unknown method -> clear error now

    # ---- generator ----------------------------------------------------------------------------------------
    def config_for(self, target_value: int, n_train: int) -> GANConfig:
        """The generator config actually trained: seed, DCGAN target class, and (with ``train_steps``) the epochs
        and DiffAugment policy resolved for ``n_train`` training rows."""
        changes: dict = {"seed": self.random_state}
        if self.train_steps is not None:
            steps_per_epoch = max(1, n_train // min(self.config.batch_size, n_train))
            changes["epochs"] = max(1, math.ceil(self.train_steps / steps_per_epoch))
            if changes["epochs"] < AUGMENT_MIN_EPOCHS:
                changes["diffaugment"] = ""
        if isinstance(self.config, DCGANConfig):
            changes["target"] = str(target_value)
        if isinstance(self.config, CDCGANConfig):
            changes["alpha"] = 0.5  # sampling-only; one canonical value lets all alphas share a trained model
        return dataclasses.replace(self.config, **changes)

    def _cache_dir(self, config: GANConfig, dataset: CXRDataset) -> Path | None:
        if self.work_dir is None:
            return None
        record = {k: v for k, v in config_record(config).items() if k not in ("alpha", "progress", "grid_every")}
        key = json.dumps({"method": self.method, "config": record, "images": image_fingerprint(dataset.images),
                          "labels": hashlib.sha1(np.nan_to_num(dataset.labels, nan=-1).tobytes()).hexdigest()}, sort_keys=True)
        return self.work_dir / "gan" / f"{self.method}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"

    def _generator(self, dataset: CXRDataset, minority_value: int, minority_name: str):
        if self.run_dir is not None:
            model = load_run(self.run_dir, method=self.method, device=self.device)
            size = int(model.data_info_["image_size"])
            if size != dataset.image_size:
                raise CxrganError(f"{self.run_dir}: generator makes {size} px images but the data are {dataset.image_size} px")
            if list(model.data_info_["label_names"]) != list(dataset.label_names):
                raise CxrganError(f"{self.run_dir}: generator labels {model.data_info_['label_names']} differ from the data's "
                                  f"{list(dataset.label_names)}")
            target = model.data_info_.get("target_name")
            if target is not None and target != minority_name:
                raise CxrganError(f"{self.run_dir}: this DCGAN models {target!r} but the minority class is {minority_name!r}")
            return model
        n_train = len(dataset) if isinstance(self.config, CDCGANConfig) else int((dataset.labels[:, 0] == minority_value).sum())
        config = self.config_for(minority_value, n_train)
        cache = self._cache_dir(config, dataset)
        return generator_class(self.method)(config, device=self.device, run_dir=cache).fit(dataset, resume=cache is not None)

    # ---- balancing ----------------------------------------------------------------------------------------
    def _label_counts(self, deficit: int, minority: int) -> tuple[int, int]:
        """(n healthy, n diseased) synthetic images for a cDCGAN (see the module docstring)."""
        if self.n_synthetic is not None:
            healthy = round(self.alpha * self.n_synthetic)
            return healthy, self.n_synthetic - healthy
        minority_fraction = self.alpha if minority == 0 else 1.0 - self.alpha
        if deficit and minority_fraction <= 0:
            raise CxrganError(f"{self.name}: alpha = {self.alpha} never samples the minority class")
        other = round(deficit * (1.0 - minority_fraction) / minority_fraction) if deficit else 0
        return (deficit, other) if minority == 0 else (other, deficit)

    def fit_resample(self, dataset: CXRDataset) -> CXRDataset:
        check_train_split(dataset, self.name)
        y = dataset.binary_targets()
        counts = np.bincount(y, minlength=2)
        minority = int(np.argmin(counts))
        names = dataset.class_names or ("0", "1")
        deficit = max(0, math.ceil(self.ratio * counts[1 - minority]) - int(counts[minority]))
        self.model_ = self._generator(dataset, minority, names[minority])
        self.deficit_ = deficit
        rng = torch.Generator().manual_seed(self.random_state)
        if isinstance(self.config, DCGANConfig):
            total = deficit if self.n_synthetic is None else self.n_synthetic
            requested = np.full((total, 1), float(minority), dtype=np.float32)
        else:
            n_healthy, n_diseased = self._label_counts(deficit, minority)
            requested = np.concatenate([np.zeros(n_healthy), np.ones(n_diseased)]).astype(np.float32)[:, None]
            requested = requested[torch.randperm(len(requested), generator=rng).numpy()]
        total = len(requested)
        self.synthetic_counts_ = {names[0]: int((requested == 0).sum()), names[1]: int((requested == 1).sum())}
        if total == 0:
            return dataset
        images, labels = self.model_.sample(total, labels=requested, generator=rng)
        meta = generated_meta(dataset.meta, total, source=self.name)
        meta["patient_id"] = [f"{self.name}-{i:06d}" for i in range(total)]
        synthetic = CXRDataset(images, labels, dataset.label_names, meta, class_names=dataset.class_names)
        return dataset.with_rows_added(synthetic)


def _factory(method: str, alpha: float, name: str):
    def make(context: BalanceContext) -> GANOversampler:
        overrides = dict(context.generator_overrides)
        train_steps = overrides.pop("train_steps", None if context.full else CPU_TRAIN_STEPS)
        config_class = DCGANConfig if method == "dcgan" else CDCGANConfig
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(config_class)})
        if unknown:
            raise CxrganError(f"{name}: unknown generator setting(s) {unknown}")
        config = config_class(**{**(FULL_DEFAULTS if context.full else CPU_DEFAULTS), **overrides})
        if method == "cdcgan":
            config = dataclasses.replace(config, alpha=alpha)
        return GANOversampler(method, config, alpha=alpha, work_dir=context.work_dir, device=context.device,
                              random_state=context.random_state, name=name, train_steps=train_steps)

    return make


register_balancer("dcgan")(_factory("dcgan", 0.0, "dcgan"))
register_balancer("cdcgan")(_factory("cdcgan", 0.5, "cdcgan"))
for _alpha in (0.25, 0.5, 0.75):
    register_balancer(f"cdcgan-a{_alpha:g}")(_factory("cdcgan", _alpha, f"cdcgan-a{_alpha:g}"))
