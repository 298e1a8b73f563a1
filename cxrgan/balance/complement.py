"""CycleGAN complement oversampling: every training image gets a translated twin of the other class.

Malygina, Ericheva & Drokin (2019), "GANs 'N Lungs: improving pneumonia prediction", sec. 2: with G_{0->1} and
G_{1->0} from a CycleGAN, each x_i with label l_i gets x~_i = G_{l_i -> 1-l_i}(x_i) with label 1 - l_i, and the
classifier trains on X_aug = X + X~ (2n rows, perfectly balanced). Modes:

* ``complement`` (the paper): all n images are translated; counts become n0 + n1 per class.
* ``minority``: only majority images are translated into the minority class, chosen at random without replacement,
  until the classes are balanced (n_majority - n_minority synthetic rows).

The CycleGAN trains on the training split's two classes as unpaired domains; ``extra_data`` (a binary .npz, its
training split; the paper's "additional dataset") adds images to those domains only, never to the classifier's rows.
Trained CycleGANs come from the generator cache in ``work_dir`` (config, training images, seed), like the other GAN
balancers. The CPU and full CycleGAN presets (and their measured cost) live in ``cxrgan.generators.cyclegan``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cxrgan.balance.base import BalanceContext, Balancer, Powerset, register_balancer
from cxrgan.balance.classic import generated_meta
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.npz import load_npz
from cxrgan.errors import CxrganError
from cxrgan.generators.cache import fit_or_load
from cxrgan.generators.cyclegan import CycleGAN, CycleGANConfig
from cxrgan.generators.runs import load_run
from cxrgan.generators.settings import GeneratorSpec

MODES = ("complement", "minority")


def load_extra_domains(path: str | Path, like: CXRDataset) -> CXRDataset:
    """The training split of a binary .npz to add to the CycleGAN's domains, checked against ``like``.

    Its classes are taken as domain 0 / 1 by label value (e.g. NIH "normal" / "abnormal" for Kermany's "normal" /
    "pneumonia"); images must have the training data's size.
    """
    path = Path(path)
    if not path.exists():
        raise CxrganError(f"--gan-extra-data {path}: extra CycleGAN data file not found; give the file or leave the "
                          "'-extra' rows out of --methods")
    extra = load_npz(path, target="labels").split("train")
    if not extra.is_binary:
        raise CxrganError(f"{path}: extra CycleGAN data must be a binary task, got labels {list(extra.label_names)}")
    if extra.image_size != like.image_size:
        raise CxrganError(f"{path}: extra images are {extra.image_size} px but the training images are {like.image_size} px")
    known = ~np.isnan(extra.labels[:, 0])
    extra = extra.subset(np.flatnonzero(known))
    if len(extra) == 0:
        raise CxrganError(f"{path}: no labelled training rows to add to the CycleGAN's domains")
    # relabel into the training data's label columns so the two concatenate
    return dataclasses.replace(extra, label_names=like.label_names, class_names=like.class_names,
                               meta=extra.meta.assign(source=f"extra:{path.name}"))


class CycleGANComplement(Balancer):
    """Adds CycleGAN translations of real training images, labelled with the other class.

    Args:
        config: CycleGAN settings; ``seed`` is replaced by ``random_state``.
        mode: "complement" (2n rows, as in the paper) or "minority" (translate majority images until balanced).
        extra_data: binary .npz whose training split joins the CycleGAN's domains (not the returned rows).
        run_dir: a trained cyclegan run directory to load instead of training.
        work_dir: cache folder for trained CycleGANs (None trains in memory each time).
        device: torch device.
        random_state: seeds CycleGAN training and the choice of translated rows.
        name: method name written to the ``source`` of synthetic rows.
    """

    def __init__(self, config: CycleGANConfig, mode: str = "complement", extra_data: str | Path | None = None,
                 run_dir: str | Path | None = None, work_dir: str | Path | None = None, device: str = "cpu",
                 random_state: int = 0, name: str = "cyclegan-complement"):
        if mode not in MODES:
            raise CxrganError(f"unknown complement mode {mode!r}; expected one of {list(MODES)}")
        self.config, self.mode, self.device, self.random_state = config, mode, device, int(random_state)
        self.extra_data = Path(extra_data) if extra_data is not None else None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.name = name
        self.control = "repeat"  # as many rows and steps, the real images twice instead of their translations

    def config_for(self) -> CycleGANConfig:
        """The config actually trained: the balancer's seed."""
        return dataclasses.replace(self.config, seed=self.random_state)

    def generators(self, train: CXRDataset) -> list[GeneratorSpec]:
        """The CycleGAN this balancer trains (none when it loads a given ``run_dir``)."""
        return [] if self.run_dir is not None else [GeneratorSpec("cyclegan", self.config_for())]

    def extra_rows(self, train: CXRDataset) -> CXRDataset | None:
        """The extra file's training split, which joins the CycleGAN's domains (never the returned rows)."""
        return None if self.extra_data is None else load_extra_domains(self.extra_data, train)

    def fit_generator(self, dataset: CXRDataset) -> CycleGAN:
        """Train (or load from ``run_dir`` / the cache) the CycleGAN for this training split."""
        if self.run_dir is not None:
            model = load_run(self.run_dir, method="cyclegan", device=self.device)
            if int(model.data_info_["image_size"]) != dataset.image_size:
                raise CxrganError(f"{self.run_dir}: CycleGAN translates {model.data_info_['image_size']} px images, "
                                  f"the data are {dataset.image_size} px")
            return model
        return fit_or_load(self.generators(dataset)[0], self.generator_rows(dataset), self.work_dir, self.device)

    def _sources(self, y: np.ndarray) -> np.ndarray:
        """The rows to translate: every row (complement), or random majority rows until balanced (minority)."""
        if self.mode == "complement":
            return np.arange(len(y))
        counts = np.bincount(y, minlength=2)
        majority = int(np.argmax(counts))
        rng = np.random.default_rng(self.random_state)
        rows = np.flatnonzero(y == majority)
        return np.sort(rng.choice(rows, int(counts[majority] - counts[1 - majority]), replace=False))

    def planned_rows(self, train: CXRDataset) -> int:
        return len(train) + len(self._sources(train.binary_targets()))

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        if not dataset.is_binary:
            raise CxrganError(f"{self.name}: complement oversampling needs a binary task, got labels {list(dataset.label_names)}")
        y = dataset.binary_targets()
        self.model_ = self.fit_generator(dataset)
        sources = self._sources(y)
        images = np.zeros((len(sources), dataset.image_size, dataset.image_size), np.uint8)
        for source_class in (0, 1):
            where = np.flatnonzero(y[sources] == source_class)
            if len(where):
                images[where] = self.model_.translate(dataset.images[sources[where]], source_class)
        self.source_rows_ = sources
        if len(sources) == 0:
            return dataset
        labels = (1.0 - y[sources]).astype(np.float32)[:, None]
        # the twin keeps its parent's patient: a patient-level split must never separate an image from its twin
        meta = generated_meta(dataset.meta, len(sources), source=self.name,
                              patient_id=dataset.meta["patient_id"].astype(str).to_numpy()[sources])
        synthetic = CXRDataset(images, labels, dataset.label_names, meta, class_names=dataset.class_names)
        return dataset.with_rows_added(synthetic)


def _factory(mode: str, name: str, with_extra: bool):
    def make(context: BalanceContext) -> CycleGANComplement:
        if with_extra and not context.extra_data:
            raise CxrganError(f"{name}: the '-extra' methods need --gan-extra-data FILE (a binary .npz whose training "
                              "split joins the CycleGAN's domains)")
        return CycleGANComplement(CycleGAN.resolve_config(context.generators), mode=mode,
                                  extra_data=context.extra_data if with_extra else None, work_dir=context.work_dir,
                                  device=context.device, random_state=context.random_state, name=name)

    return make


register_balancer("cyclegan-complement")(_factory("complement", "cyclegan-complement", False))
register_balancer("cyclegan-minority")(_factory("minority", "cyclegan-minority", False))
register_balancer("cyclegan-complement-extra")(_factory("complement", "cyclegan-complement-extra", True))
