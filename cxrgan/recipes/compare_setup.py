"""What a comparison is (its config) and the fixed splits it runs on: the data file's splits, the training split cut
to a fraction or a class ratio, and the checks every split and method list must pass before anything trains."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from cxrgan.balance import BALANCERS
from cxrgan.classify import TrainConfig
from cxrgan.data import CXRDataset, load_npz
from cxrgan.data.labels import check_known_labels
from cxrgan.data.splits import fraction_subset, induce_imbalance
from cxrgan.data.synthetic import SyntheticFiles
from cxrgan.engine.spec import HoldsRunSpec, RunSpec
from cxrgan.errors import CxrganError
from cxrgan.generators.settings import GeneratorSettings, GeneratorSpec

CLASSIC_METHODS = ("none", "class-weights", "undersample", "oversample", "smote", "augment")


@dataclass(frozen=True)
class CompareConfig(HoldsRunSpec):
    """One comparison: data, methods, seeds, classifier; written to the run's config.json."""

    run: RunSpec  # the data file (compact .npz with train/val/test splits), seeds, external sites, device
    methods: tuple[str, ...] = CLASSIC_METHODS  # balancer names; `baseline` must be one of them
    baseline: str = "none"  # method every other method is compared with
    target: str = "labels"  # "labels" (binary) or "findings" (multi-label)
    uncertainty: str = "ignore"  # U-policy for multi-label -1 training labels: zeros, ones, ignore
    train_fraction: float = 1.0  # stratified patient-level fraction of the training split (data regimes)
    imbalance: tuple[int, int] | None = None  # induce negatives:positives ratio on the training split, e.g. (3, 1)
    data_seed: int = 0  # seed of subsetting / imbalance induction; fixed so every method and seed sees one split
    n_boot: int = 1000  # bootstrap resamples for each run's AUC CI
    train: TrainConfig = field(default_factory=TrainConfig)  # classifier settings
    generators: GeneratorSettings = GeneratorSettings()  # steps / width / full preset of generator-backed methods
    extra_data: str | None = None  # binary .npz whose training split joins a CycleGAN's domains (cyclegan-*-extra)
    synthetic: SyntheticFiles = SyntheticFiles()  # --synthetic files, one row synthetic:<stem> each, and their mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", self.synthetic.with_rows(tuple(self.methods)))


class GeneratorUse(NamedTuple):
    """One generator a comparison trains: its spec, the rows it trains on, and the first cell that trains it."""

    spec: GeneratorSpec
    rows: CXRDataset
    method: str
    seed: int


# ---- data -----------------------------------------------------------------------------------------------------
def prepare_splits(config: CompareConfig) -> tuple[CXRDataset, CXRDataset, CXRDataset]:
    """Load the data and derive the (fixed) training split; val and test stay the file's real splits."""
    source = config.run.file
    dataset = load_npz(source, target=config.target, uncertainty=config.uncertainty,
                       allow_patient_overlap=config.run.allow_patient_overlap,
                       allow_unknown_patients=config.run.allow_unknown_patients)
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    for name, part in (("train", train), ("val", val), ("test", test)):
        if len(part) == 0:
            raise CxrganError(f"{source}: the {name} split is empty; a comparison needs train, val and test rows")
        if part.synthetic.any():
            raise CxrganError(f"{source}: the {name} split holds synthetic rows; start from real data")
    if not 0 < config.train_fraction <= 1:
        raise CxrganError(f"--train-fraction must lie in (0, 1], got {config.train_fraction}")
    if config.train_fraction < 1.0:
        train = fraction_subset(train, config.train_fraction, random_state=config.data_seed)
    if config.imbalance is not None:
        if not dataset.is_binary:
            raise CxrganError("--imbalance needs a binary task (--target labels)")
        if min(config.imbalance) < 1:
            raise CxrganError(f"--imbalance {config.imbalance[0]}:{config.imbalance[1]}: both parts must be >= 1")
        train = induce_imbalance(train, ratio_counts(train, config.imbalance), random_state=config.data_seed)
    check_classes(source, {"train": train, "val": val, "test": test})
    return train, val, test


def check_classes(source: str, splits: dict[str, CXRDataset]) -> None:
    """Every split of a binary task holds both classes and, unless it trains, no unknown label; a multi-label task has
    some finding with both in each."""
    for name, part in splits.items():
        if part.is_binary:
            y = part.labels[:, 0]
            if name != "train":
                check_known_labels(part, f"{source}: the {name} split")
            present = set(np.unique(y[~np.isnan(y)]).astype(int).tolist())
            if present != {0, 1}:
                names = part.class_names or ("0", "1")
                missing = [names[c] for c in (0, 1) if c not in present]
                raise CxrganError(f"{source}: the {name} split has no {missing[0]!r} rows; every split needs both "
                                  "classes (an AUC needs them)")
        else:
            labels = part.labels
            both = [(np.nan_to_num(labels[:, j], nan=-1) == 1).any() and (np.nan_to_num(labels[:, j], nan=-1) == 0).any()
                    for j in range(part.n_labels)]
            if not any(both):
                raise CxrganError(f"{source}: no finding has both positive and negative rows in the {name} split")


def ratio_counts(train: CXRDataset, ratio: tuple[int, int]) -> dict[int, int]:
    """The largest class counts with negatives : positives = ``ratio`` that removing rows can reach."""
    y = train.binary_targets()
    negatives, positives = int((y == 0).sum()), int((y == 1).sum())
    keep_positives = min(positives, negatives * ratio[1] // ratio[0])
    return {0: min(negatives, round(keep_positives * ratio[0] / ratio[1])), 1: keep_positives}


def check_methods(methods: tuple[str, ...], baseline: str, synthetic: tuple[str, ...] = ()) -> None:
    """Names (registered, or ``synthetic`` rows) and the baseline, before anything is loaded or trained."""
    if not methods:
        raise CxrganError("--methods is empty; name at least one method")
    unknown = [m for m in methods if m not in BALANCERS and m not in synthetic]
    if unknown:
        raise CxrganError(f"unknown method(s) {unknown}; available: {', '.join(sorted(BALANCERS))}")
    duplicated = sorted({m for m in methods if methods.count(m) > 1})
    if duplicated:
        raise CxrganError(f"--methods names {duplicated} more than once")
    if baseline not in methods:
        raise CxrganError(f"baseline {baseline!r} is not among the methods {list(methods)}")
