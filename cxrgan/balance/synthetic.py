"""Rows of synthetic files made elsewhere (``--synthetic FILE``): one method ``synthetic:<stem>`` per file, judged by
the same seed-level verdicts as every generator cxrgan trains, after a leakage check of every image.

Modes (``--synthetic-mode``), each with the same counts as the matching built-in row, so a file and a generator
cxrgan trains are compared like for like:

* ``balance``: per seed, as many images of the minority class as the ``dcgan`` row adds (``ceil(ratio x majority)
  - minority``, :func:`cxrgan.balance.gan.minority_deficit`), drawn from the file's images of that class without
  replacement with the seed; for multi-label data, per augmented finding as many images carrying it as the
  ``dcgan-rare`` row adds (:func:`cxrgan.balance.finding_plans.finding_deficit`), each image drawn once;
* ``add``: every image of the file, every seed;
* ``pretrain``: the ``synth-pretrain`` schedule (:mod:`cxrgan.balance.pretrain`): the classifier first trains on
  the file's images for as many image passes as its real epochs make, then on the real rows, which are unchanged.

Before anything trains, :func:`check_synthetic_files` refuses a file holding a near-duplicate of a validation, test
or external-site image (mirrored, shifted, re-encoded and resized copies included: :mod:`cxrgan.data.near_duplicates`)
and one with too few images for its balance draws; near-copies of training images are allowed and counted (the
audit reports them as memorised).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cxrgan.balance.base import BalanceContext, Balancer, Powerset, register_balancer_family
from cxrgan.balance.classic import generated_meta
from cxrgan.balance.gan import minority_deficit
from cxrgan.balance.finding_plans import DEFAULT_MIN_POSITIVES, choose_rare_findings, finding_deficit
from cxrgan.balance.pretrain import pretraining_epochs, pretraining_stages
from cxrgan.balance.stages import Main, Stage
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.near_duplicates import check_no_near_duplicates, fingerprints, match
from cxrgan.data.npz import save_npz
from cxrgan.data.synthetic import ROW_PREFIX, SyntheticFiles, load_synthetic, row_name
from cxrgan.errors import CxrganError
from cxrgan.generators.base import image_fingerprint


class SyntheticFileRows(Balancer):
    """The images of one synthetic file as training rows (``balance`` / ``add``) or as a pretraining set.

    Args:
        path: the file (.npz in the data format) or folder of class folders.
        mode: "balance", "add" or "pretrain" (see the module docstring).
        ratio: balance: fill the minority class (each augmented finding) up to ratio x the majority.
        findings: multi-label balance: the findings to fill; empty = the rarest ``n_findings`` with at least
            ``min_positives`` training positives (the ``dcgan-rare`` row's choice).
        n_findings: how many findings to choose when ``findings`` is empty.
        min_positives: floor on a chosen finding's training positives.
        work_dir: where pretrain mode writes the file's images at the data's size (a temporary folder when None).
        random_state: seeds the balance draws.
        name: the row name (``synthetic:<stem>``), the ``source`` of its rows.

    After ``fit_resample``: ``n_added_`` (rows added), ``drawn_`` (indices of the file's images used).
    """

    def __init__(self, path: str | Path, mode: str = "balance", ratio: float = 1.0, findings: tuple[str, ...] = (),
                 n_findings: int = 3, min_positives: int = DEFAULT_MIN_POSITIVES, work_dir: str | Path | None = None,
                 random_state: int = 0, name: str | None = None):
        SyntheticFiles((str(path),), mode, ratio)  # checks mode and ratio
        self.path, self.mode, self.ratio, self.findings = Path(path), mode, float(ratio), tuple(findings)
        self.n_findings, self.min_positives, self.random_state = n_findings, min_positives, int(random_state)
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.name = name or row_name(path)
        # balance mode adds as many minority images as oversampling copies (the dcgan row's count)
        self.control = "oversample" if mode == "balance" else None

    def draws(self, dataset: CXRDataset, synthetic: CXRDataset) -> dict[str, int]:
        """How many images of each class (binary) or augmented finding (multi-label) balance mode draws."""
        if dataset.is_binary:
            minority, deficit = minority_deficit(dataset, self.ratio)
            return {(dataset.class_names or ("0", "1"))[minority]: deficit}
        findings = self.findings or choose_rare_findings(dataset, self.n_findings, self.min_positives)
        unknown = [f for f in findings if f not in dataset.label_names]
        if unknown:
            raise CxrganError(f"{self.name}: unknown finding(s) {unknown}; available: {list(dataset.label_names)}")
        return {f: finding_deficit(dataset.labels[:, dataset.label_names.index(f)], self.ratio) for f in findings}

    def _balance_rows(self, dataset: CXRDataset, synthetic: CXRDataset) -> np.ndarray:
        """The file's rows balance mode adds, drawn per class or finding without replacement (refuses too few)."""
        rng = np.random.default_rng(self.random_state)
        taken = np.zeros(len(synthetic), bool)
        names = dataset.class_names or ("0", "1")
        for target, n in self.draws(dataset, synthetic).items():
            if dataset.is_binary:
                column, value = 0, float(names.index(target))
            else:
                column, value = dataset.label_names.index(target), 1.0
            pool = np.flatnonzero((synthetic.labels[:, column] == value) & ~taken)
            if n and not (synthetic.labels[:, column] == value).any():
                held = (f"{sorted({names[int(v)] for v in synthetic.labels[:, 0]})} images only" if dataset.is_binary
                        else f"no image with {target!r}")
                raise CxrganError(f"--synthetic {self.path}: holds {held}; balance adds {n} {target!r} images per "
                                  f"seed (as the {'dcgan' if dataset.is_binary else 'dcgan-rare'} row)")
            if len(pool) < n:
                row = "dcgan" if dataset.is_binary else "dcgan-rare"
                raise CxrganError(f"--synthetic {self.path}: holds {len(pool)} {target!r} images; balance draws {n} "
                                  f"per seed (as many as the {row} row adds); give more images or --synthetic-mode add")
            taken[rng.choice(pool, n, replace=False)] = True
        return np.flatnonzero(taken)

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        synthetic = load_synthetic(self.path, dataset)
        if self.mode == "pretrain":  # the pretraining file is written by stages, when training needs it
            self.synthetic_, self.n_real_, self.n_synthetic_, self.n_added_ = synthetic, len(dataset), len(synthetic), 0
            self.drawn_ = np.arange(len(synthetic))
            return dataclasses.replace(dataset)
        self.drawn_ = self._balance_rows(dataset, synthetic) if self.mode == "balance" else np.arange(len(synthetic))
        self.n_added_ = len(self.drawn_)
        if not self.n_added_:
            return dataclasses.replace(dataset)
        rows = synthetic.subset(self.drawn_)
        meta = generated_meta(dataset.meta, len(rows), source=self.name, patient_id=rows.meta["patient_id"].tolist())
        return dataset.with_rows_added(dataclasses.replace(rows, meta=meta))

    def _pretraining_file(self, synthetic: CXRDataset) -> Path:
        """The file's images at the data's size as a compact file for the classifier's pretraining (written once)."""
        folder = self.work_dir / "synthetic" if self.work_dir is not None else Path(
            tempfile.mkdtemp(prefix="cxrgan-synthetic-"))
        path = folder / f"{self.name.removeprefix(ROW_PREFIX)}-{image_fingerprint(synthetic.images)}.npz"
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            save_npz(synthetic, path)
        return path

    def stages(self, epochs: int) -> tuple[Stage, ...]:
        if self.mode != "pretrain":
            return (Main(),)
        if not hasattr(self, "synthetic_"):
            raise CxrganError(f"{self.name}: call fit_resample before stages")
        self.pretrain_data_ = self._pretraining_file(self.synthetic_)
        return pretraining_stages(epochs, self.pretrain_data_, self.n_real_, self.n_synthetic_)

    def planned_images(self, train: CXRDataset, epochs: int) -> int:
        if self.mode != "pretrain":
            return epochs * self.planned_rows(train)
        n_synthetic = len(load_synthetic(self.path, train))
        return epochs * len(train) + pretraining_epochs(epochs, len(train), n_synthetic) * n_synthetic


@register_balancer_family(ROW_PREFIX)
def _synthetic_row(name: str, context: BalanceContext) -> SyntheticFileRows:
    files = context.synthetic
    return SyntheticFileRows(files.path_of(name), files.mode, files.ratio, files.findings, work_dir=context.work_dir,
                             random_state=context.random_state, name=name)


def check_synthetic_files(files: SyntheticFiles, train: CXRDataset, evaluation: Mapping[str, np.ndarray],
                          work_dir: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Before training: every file loads at ``train``'s task and size, holds no near-duplicate of an evaluation
    image (description -> images, e.g. {"the test split of data.npz": ...}) and enough images for its balance
    draws. Returns per row: images, images per class or finding, near-copies of training images (memorised)."""
    reports = {}
    train_prints = None
    for row, path in zip(files.rows, files.paths):
        synthetic = load_synthetic(path, train)
        prints = fingerprints(synthetic.images)
        check_no_near_duplicates(prints, evaluation, f"--synthetic {path}",
                                 "synthetic images must not copy evaluation images")
        balancer = _synthetic_row(row, BalanceContext(random_state=0, work_dir=work_dir, synthetic=files))
        if files.mode == "balance":
            balancer._balance_rows(train, synthetic)  # refuses a file with too few images before anything trains
        train_prints = train_prints if train_prints is not None else fingerprints(train.images)
        copies = match(prints, train_prints)
        reports[row] = {"path": str(path), "images": len(synthetic), "mode": files.mode,
                        "draws per seed": balancer.draws(train, synthetic) if files.mode == "balance" else None,
                        "near-copies of training images": copies.count}
    return reports
