"""Multi-label GAN balancers for rare findings: a conditional GAN on sampled label vectors and one DCGAN per finding.

* ``cgan-labelvec`` (method A): Sundaram & Hulkund (2021), "GAN-based Data Augmentation for Chest X-ray
  Classification" (KDD DSHealth). For a rare finding p, L_p = the label vectors of real training rows with p
  present; vectors are drawn uniformly with replacement from L_p and the conditional DCGAN (label embedding in G,
  projection D, see ``cxrgan.generators.dcgan``) makes one image per vector, so co-occurring findings are kept.
  The *minimum* number of images is generated such that every chosen finding is present in at least
  ``threshold`` (15 %) of the combined set (see :func:`plan_label_vectors`). ``ldm-labelvec`` is the same method
  with the label-vector latent diffusion model (``cxrgan.generators.diffusion``) as the conditional generator.
* ``dcgan-rare`` (method B): Venugopal Sunitha, "Chest X-ray Disease Diagnosis Using GANs" (CheXpert). One
  unconditional DCGAN per chosen finding p, trained on the training rows with p present; each sample is labelled
  p = 1 and, for the other findings, with the vector of a real row drawn uniformly from L_p (the DCGAN models
  images given p, which mixes p's co-occurrences in their real proportions, so the drawn vector is a sample of
  the labels such an image carries). Per finding, ``max(0, ceil(ratio * negatives) - positives)`` images are
  added (counts of the real training rows; ratio 1.0 = balanced against the real rows, "nearly" because other
  findings' synthetic rows also shift the counts, recorded in ``table_``).

Each method has a count-matched control that adds *real* rows instead of generated ones: ``labelvec-copies``
copies the very rows whose label vectors method A draws (same seed, same draws), ``rare-copies`` the very rows
whose vectors method B draws. The classifier then sees the same number of extra rows with the same labels, so
"the GAN beats its copies" separates what the generated images add from more rows of the rare findings.

Rare findings are chosen by :func:`choose_rare_findings`: the least frequent findings among those with at least
``min_positives`` training positives (default 16, the fewest images the GAN core trains a DCGAN on), optionally
only findings with positives in an evaluation split (a finding without test positives has no AUC).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cxrgan.balance.base import BalanceContext, Balancer, Powerset, register_balancer
from cxrgan.balance.classic import generated_meta
from cxrgan.balance.finding_plans import (DEFAULT_MIN_POSITIVES, DEFAULT_THRESHOLD, choose_rare_findings, finding_deficit,
                                          finding_table, plan_label_rows, sample_label_rows)
from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError
from cxrgan.generators.cache import fit_or_load
from cxrgan.generators.dcgan import DCGAN, DCGANConfig, LabelVectorCDCGAN
from cxrgan.generators.diffusion import LabelVectorLDM
from cxrgan.generators.settings import GeneratorSpec

def _synthetic_rows(dataset: CXRDataset, images: np.ndarray, labels: np.ndarray, name: str) -> CXRDataset:
    """``dataset`` followed by generated rows (training split, flagged synthetic, one pseudo-patient each)."""
    meta = generated_meta(dataset.meta, len(images), source=name)
    meta["patient_id"] = [f"{name}-{i:06d}" for i in range(len(images))]
    return dataset.with_rows_added(CXRDataset(images, labels, dataset.label_names, meta))


def checked_findings(balancer: Any, dataset: CXRDataset) -> tuple[str, ...]:
    """The findings a multi-label balancer augments on ``dataset``: its own list, else the rarest with enough
    positives, refusing names the dataset does not have."""
    findings = balancer.findings or choose_rare_findings(dataset, balancer.n_findings, balancer.min_positives)
    unknown = [f for f in findings if f not in dataset.label_names]
    if unknown:
        raise CxrganError(f"{balancer.name}: unknown finding(s) {unknown}; available: {list(dataset.label_names)}")
    return tuple(findings)


class LabelVectorCGAN(Balancer):
    """Method A: conditional DCGAN images for label vectors sampled from L_p until each rare finding is >= 15 %.

    Args:
        config: the config of ``generator`` (trained on all training rows); its seed is replaced by ``random_state``.
        findings: the findings to augment; None chooses them with :func:`choose_rare_findings`.
        threshold: required share of each chosen finding in the combined set.
        n_findings: how many findings to choose when ``findings`` is None.
        min_positives: floor on training positives when choosing.
        model: an already trained conditional generator to use instead of training (e.g. one trained on the full
            training split and reused across data regimes, as the paper's pretrained GAN).
        work_dir: cache folder for trained generators.
        device: torch device.
        random_state: seeds generator training, label-vector draws and sampling.
        name: the ``source`` of synthetic rows.
        generator: the label-vector generator's registry name ("cgan-labelvec" or "ldm-labelvec").

    After ``fit_resample``: ``findings_`` (augmented), ``skipped_`` (chosen findings without a positive row here,
    e.g. in a 1 % regime), ``model_``, ``vectors_``, ``drawn_for_`` and ``table_`` (per finding: real and
    combined positives and shares, images generated for it; the paper's Table 1 row).
    """

    def __init__(self, config: Any, findings: Sequence[str] | None = None,
                 threshold: float = DEFAULT_THRESHOLD, n_findings: int = 3, min_positives: int = DEFAULT_MIN_POSITIVES,
                 model=None, work_dir: str | Path | None = None, device: str = "cpu", random_state: int = 0,
                 name: str = "cgan-labelvec", generator: str = "cgan-labelvec"):
        if not 0 < threshold < 1:
            raise CxrganError(f"threshold must lie in (0, 1), got {threshold}")
        self.config, self.findings, self.threshold = config, None if findings is None else tuple(findings), threshold
        self.n_findings, self.min_positives, self.model, self.name = n_findings, min_positives, model, name
        self.random_state, self.device, self.generator = int(random_state), device, generator
        self.work_dir = Path(work_dir) if work_dir is not None else None

    def generator_spec(self) -> GeneratorSpec:
        """The label-vector generator this balancer trains (its config with the balancer's seed)."""
        return GeneratorSpec(self.generator, dataclasses.replace(self.config, seed=self.random_state))

    def generators(self, train: CXRDataset) -> list[GeneratorSpec]:
        """The label-vector generator, unless a trained ``model`` was given."""
        return [self.generator_spec()] if self.model is None else []

    def planned_rows(self, train: CXRDataset) -> int:
        return len(train) + len(label_vector_plan(self, train)[1])

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        columns, rows, drawn_for = label_vector_plan(self, dataset)
        vectors = dataset.labels[rows].reshape(len(rows), dataset.n_labels).copy()
        self.model_ = self.model if self.model is not None else fit_or_load(self.generator_spec(), dataset,
                                                                             self.work_dir, self.device)
        if list(self.model_.data_info_["label_names"]) != list(dataset.label_names):
            raise CxrganError(f"{self.name}: the generator's labels {self.model_.data_info_['label_names']} differ "
                              f"from the data's {list(dataset.label_names)}")
        generator = torch.Generator().manual_seed(self.random_state)
        if len(vectors):
            # the generator is conditioned on 0 where a real vector is unknown; the row keeps NaN (masked in the loss)
            images, _ = self.model_.sample(len(vectors), labels=np.nan_to_num(vectors, nan=0.0), generator=generator)
        else:
            images = None
        self.vectors_, self.drawn_for_ = vectors, drawn_for
        out = _synthetic_rows(dataset, images, vectors, self.name) if len(vectors) else dataset
        self.table_ = finding_table(dataset, out, columns, drawn_for)
        return out


def label_vector_plan(balancer: Any, dataset: CXRDataset) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Method A's draws for ``balancer`` (its findings, threshold and seed): the augmented finding columns, the
    real rows whose label vectors are drawn, and the column each was drawn for; sets ``findings_`` and
    ``skipped_`` (chosen findings without a positive row here, e.g. in a 1 % regime: no L_p to draw from)."""
    findings = checked_findings(balancer, dataset)
    present = dataset.positives()
    balancer.skipped_ = tuple(f for f in findings if present[dataset.label_names.index(f)] == 0)
    balancer.findings_ = tuple(f for f in findings if f not in balancer.skipped_)
    columns = [dataset.label_names.index(f) for f in balancer.findings_]
    if not columns:
        return columns, np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows, drawn_for = plan_label_rows(dataset.labels, columns, balancer.threshold,
                                      np.random.default_rng(balancer.random_state))
    return columns, rows, drawn_for


class LabelVectorCopies(Balancer):
    """Method A's count-matched control: the real rows whose label vectors method A draws, copied.

    With the same findings, threshold and ``random_state`` as a :class:`LabelVectorCGAN`, it adds the same number
    of rows with the same label vectors, each with the real image of the row its vector came from.

    Args:
        findings, threshold, n_findings, min_positives, random_state: as :class:`LabelVectorCGAN`.
        name: the method's name in messages.

    After ``fit_resample``: ``findings_``, ``skipped_``, ``drawn_for_`` and ``table_`` as :class:`LabelVectorCGAN`.
    """

    def __init__(self, findings: Sequence[str] | None = None, threshold: float = DEFAULT_THRESHOLD, n_findings: int = 3,
                 min_positives: int = DEFAULT_MIN_POSITIVES, random_state: int = 0, name: str = "labelvec-copies"):
        if not 0 < threshold < 1:
            raise CxrganError(f"threshold must lie in (0, 1), got {threshold}")
        self.findings, self.threshold = None if findings is None else tuple(findings), threshold
        self.n_findings, self.min_positives, self.random_state, self.name = n_findings, min_positives, int(random_state), name

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        columns, rows, self.drawn_for_ = label_vector_plan(self, dataset)
        out = dataset.with_rows_added(dataset.subset(rows)) if len(rows) else dataset
        self.table_ = finding_table(dataset, out, columns, self.drawn_for_)
        return out


def rare_finding_plan(balancer: Any, dataset: CXRDataset) -> list[tuple[str, int, np.ndarray]]:
    """Method B's draws for ``balancer`` (its findings, ratio and seed): per finding, its column and the real rows
    with it whose label vectors the added images carry, ``max(0, ceil(ratio * negatives) - positives)`` of them."""
    rng = np.random.default_rng(balancer.random_state)
    plan = []
    for finding in checked_findings(balancer, dataset):
        column = dataset.label_names.index(finding)
        n = finding_deficit(dataset.labels[:, column], balancer.ratio)
        plan.append((finding, column, sample_label_rows(dataset.labels, column, n, rng) if n else np.zeros(0, np.int64)))
    return plan


class RareFindingCopies(Balancer):
    """Method B's count-matched control: the real rows whose label vectors method B draws, copied.

    With the same findings, ratio and ``random_state`` as a :class:`RareFindingDCGAN`, it adds per finding the
    same number of rows with the same label vectors, each with the real image of the row its vector came from.

    Args:
        findings, ratio, n_findings, min_positives, random_state: as :class:`RareFindingDCGAN`.
        name: the method's name in messages.

    After ``fit_resample``: ``findings_``, ``counts_``, ``drawn_for_`` and ``table_`` as :class:`RareFindingDCGAN`.
    """

    def __init__(self, findings: Sequence[str] | None = None, ratio: float = 1.0, n_findings: int = 3,
                 min_positives: int = DEFAULT_MIN_POSITIVES, random_state: int = 0, name: str = "rare-copies"):
        if ratio <= 0:
            raise CxrganError(f"ratio must be positive, got {ratio}")
        self.findings, self.ratio = None if findings is None else tuple(findings), float(ratio)
        self.n_findings, self.min_positives, self.random_state, self.name = n_findings, min_positives, int(random_state), name

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        plan = rare_finding_plan(self, dataset)
        self.findings_ = tuple(finding for finding, _, _ in plan)
        self.counts_ = {finding: len(rows) for finding, _, rows in plan}
        rows = np.concatenate([rows for _, _, rows in plan])
        self.drawn_for_ = np.concatenate([np.full(len(rows), column) for _, column, rows in plan])
        out = dataset.with_rows_added(dataset.subset(rows)) if len(rows) else dataset
        self.table_ = finding_table(dataset, out, [column for _, column, _ in plan], self.drawn_for_)
        return out


class RareFindingDCGAN(Balancer):
    """Method B: one unconditional DCGAN per rare finding, its samples added until the finding is nearly balanced.

    Args:
        config: the DCGAN config; ``target`` is set per finding, the seed to ``random_state``.
        findings: the findings to augment; None chooses them with :func:`choose_rare_findings`.
        ratio: per finding, add ``max(0, ceil(ratio * negatives) - positives)`` images (real training counts).
        n_findings: how many findings to choose when ``findings`` is None.
        min_positives: floor on training positives when choosing.
        work_dir, device, random_state, name: as :class:`LabelVectorCGAN`.

    After ``fit_resample``: ``findings_``, ``models_`` (finding -> DCGAN), ``counts_`` (finding -> images added)
    and ``table_`` (real and combined positives and shares per finding).
    """

    def __init__(self, config: DCGANConfig, findings: Sequence[str] | None = None, ratio: float = 1.0,
                 n_findings: int = 3, min_positives: int = DEFAULT_MIN_POSITIVES, work_dir: str | Path | None = None,
                 device: str = "cpu", random_state: int = 0, name: str = "dcgan-rare"):
        if ratio <= 0:
            raise CxrganError(f"ratio must be positive, got {ratio}")
        self.config, self.findings, self.ratio = config, None if findings is None else tuple(findings), float(ratio)
        self.n_findings, self.min_positives, self.name = n_findings, min_positives, name
        self.random_state, self.device = int(random_state), device
        self.work_dir = Path(work_dir) if work_dir is not None else None

    def generator_spec(self, finding: str) -> GeneratorSpec:
        """The DCGAN of ``finding`` this balancer trains (its config with the finding and the balancer's seed)."""
        return GeneratorSpec("dcgan", dataclasses.replace(self.config, target=finding, seed=self.random_state))

    def generators(self, train: CXRDataset) -> list[GeneratorSpec]:
        """One DCGAN per augmented finding."""
        return [self.generator_spec(finding) for finding in checked_findings(self, train)]

    def planned_rows(self, train: CXRDataset) -> int:
        return len(train) + sum(len(rows) for _, _, rows in rare_finding_plan(self, train))

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        plan = rare_finding_plan(self, dataset)
        generator = torch.Generator().manual_seed(self.random_state)
        images, labels = [], []
        self.models_, self.counts_ = {}, {}
        for finding, column, rows in plan:
            self.counts_[finding] = len(rows)
            model = fit_or_load(self.generator_spec(finding), dataset, self.work_dir, self.device)
            self.models_[finding] = model
            if len(rows) == 0:
                continue
            sampled, _ = model.sample(len(rows), generator=generator)
            images.append(sampled)
            labels.append(dataset.labels[rows].copy())  # p = 1 in every drawn vector
        self.findings_ = tuple(finding for finding, _, _ in plan)
        if images:
            out = _synthetic_rows(dataset, np.concatenate(images), np.concatenate(labels), self.name)
        else:
            out = dataset
        self.drawn_for_ = np.concatenate([np.full(len(rows), column) for _, column, rows in plan])
        self.table_ = finding_table(dataset, out, [column for _, column, _ in plan], self.drawn_for_)
        return out


@register_balancer("cgan-labelvec")
def _cgan_labelvec(context: BalanceContext) -> LabelVectorCGAN:
    return LabelVectorCGAN(LabelVectorCDCGAN.resolve_config(context.generators), work_dir=context.work_dir,
                           device=context.device, random_state=context.random_state)


@register_balancer("ldm-labelvec")
def _ldm_labelvec(context: BalanceContext) -> LabelVectorCGAN:
    return LabelVectorCGAN(LabelVectorLDM.resolve_config(context.generators), work_dir=context.work_dir,
                           device=context.device, random_state=context.random_state, name="ldm-labelvec",
                           generator="ldm-labelvec")


@register_balancer("dcgan-rare")
def _dcgan_rare(context: BalanceContext) -> RareFindingDCGAN:
    return RareFindingDCGAN(DCGAN.resolve_config(context.generators), work_dir=context.work_dir,
                            device=context.device, random_state=context.random_state)


@register_balancer("labelvec-copies")
def _labelvec_copies(context: BalanceContext) -> LabelVectorCopies:
    return LabelVectorCopies(random_state=context.random_state)


@register_balancer("rare-copies")
def _rare_copies(context: BalanceContext) -> RareFindingCopies:
    return RareFindingCopies(random_state=context.random_state)
