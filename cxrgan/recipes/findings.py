"""Shared by the multi-label recipes: findings data with the uncertainty policy on training rows only, one scored
classifier run, per-finding AUC cells that say when an AUC is not estimable, and per-finding verdicts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from cxrgan.balance.stages import Main, Stage
from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.data import CXRDataset, detect_layout, load_chexpert_raw, load_nih, load_npz
from cxrgan.data.labels import UNCERTAINTY_POLICIES, policy_on_training_rows
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.evaluate.inference import MIN_TEST_POSITIVES, estimable
from cxrgan.evaluate.verdicts import Comparison, compare_auc, compare_macro_auc
from cxrgan.evaluate.metrics import multilabel_auc
from cxrgan.evaluate.summary import seed_cell
from cxrgan.generators.settings import GeneratorSpec
from cxrgan.engine import Cell, CellResult, Plan, Results, Table, TargetRow
from cxrgan.engine.probes import generator_seconds, training_seconds


def load_findings(data: str | Path | tuple[str, ...], size: int = 64, data_seed: int = 0,
                  allow_patient_overlap: bool = False, allow_unknown_patients: bool = False) -> CXRDataset:
    """A multi-label dataset with U-Ignore labels: uncertain findings unknown (NaN), blank ones negative.

    ``data`` is a compact .npz with ``findings`` (``cxrgan data prepare`` output), a CheXpert CSV or folder, or an
    NIH ``Data_Entry_2017.csv`` or its folder (decoded at ``size`` px, split by patient with ``data_seed``); or
    several compact files with the same finding names and disjoint patients, joined with their splits kept.
    Apply a policy to the training rows with :func:`with_policy`.
    """
    if isinstance(data, tuple):
        if len(data) == 1:
            return load_findings(data[0], size, data_seed, allow_patient_overlap, allow_unknown_patients)
        return join_findings_files(data, allow_patient_overlap, allow_unknown_patients)
    path = Path(data)
    layout = detect_layout(path)
    if layout == "compact":
        return load_npz(path, target="findings", uncertainty="ignore", allow_patient_overlap=allow_patient_overlap,
                        allow_unknown_patients=allow_unknown_patients)
    if layout == "chexpert":
        return load_chexpert_raw(path, size=size, uncertainty="ignore", random_state=data_seed)[0]
    if layout == "nih":
        root, csv = (path.parent, path) if path.is_file() else (path, None)
        return load_nih(root, size=size, csv=csv, random_state=data_seed)  # NIH labels are 1 / 0 only
    raise CxrganError(f"{path}: a {layout!r} source has no findings; give a findings .npz, a CheXpert or NIH CSV")


def join_findings_files(paths: tuple[str, ...], allow_patient_overlap: bool = False,
                        allow_unknown_patients: bool = False) -> CXRDataset:
    """Several compact findings files as one dataset: same finding names and image size, no patient in two files."""
    parts = []
    for path in paths:
        if detect_layout(Path(path)) != "compact":
            raise CxrganError(f"--data {path}: only compact .npz files can be joined; prepare it first")
        part = load_npz(path, target="findings", uncertainty="ignore", allow_patient_overlap=allow_patient_overlap,
                        allow_unknown_patients=allow_unknown_patients)
        parts.append(dataclasses.replace(part, meta=part.meta.assign(source=Path(path).stem)))
    first = parts[0]
    for path, part in zip(paths[1:], parts[1:]):
        if part.label_names != first.label_names:
            raise CxrganError(f"--data {path}: findings {list(part.label_names)} differ from {paths[0]}'s "
                              f"{list(first.label_names)}; joined files need the same finding names")
        if part.images.shape[1:] != first.images.shape[1:]:
            raise CxrganError(f"--data {path}: images are {part.images.shape[1]} px, {paths[0]}'s "
                              f"{first.images.shape[1]} px")
    seen: dict[str, str] = {}
    for path, part in zip(paths, parts):
        ids = set(part.meta["patient_id"].astype(str)) - {""}
        shared = sorted(i for i in ids if i in seen)
        if shared:
            raise CxrganError(f"--data {path}: {len(shared)} patient id(s) also in {seen[shared[0]]} (e.g. "
                              f"{', '.join(shared[:3])}); joined files must hold different patients")
        seen.update({i: path for i in ids})
    return CXRDataset.concat(parts)


def with_policy(dataset: CXRDataset, policy: str) -> CXRDataset:
    """The same rows with uncertainty ``policy`` on the training rows; val and test stay U-Ignore (one truth)."""
    if policy not in UNCERTAINTY_POLICIES:
        raise CxrganError(f"unknown uncertainty policy {policy!r}; expected one of {list(UNCERTAINTY_POLICIES)}")
    return dataclasses.replace(dataset, labels=policy_on_training_rows(dataset.labels,
                                                                       dataset.meta["split"].to_numpy(), policy))


def uncertain_counts(dataset: CXRDataset) -> dict[str, int]:
    """Unknown (uncertain) labels per split of a U-Ignore dataset."""
    return {name: int(np.isnan(dataset.split(name).labels).sum()) for name in ("train", "val", "test")}


def check_findings(names: tuple[str, ...], dataset: CXRDataset) -> None:
    unknown = [f for f in names if f not in dataset.label_names]
    if unknown:
        raise CxrganError(f"--findings: unknown finding(s) {unknown}; available: {list(dataset.label_names)}")


def train_and_score(train: CXRDataset, val: CXRDataset, test: CXRDataset, config: TrainConfig, seed: int,
                    progress: bool, stages: tuple[Stage, ...] = (Main(),)) -> CellResult:
    """Train one classifier through ``stages`` (best val AUC kept); per-finding test AUC in the record, val and test
    scores stored."""
    config = dataclasses.replace(config, progress=config.progress and progress)
    result = train_classifier(train, val, config, seed, stages=stages)
    device = resolve_device(config.device)
    s_val = predict(result.model, val, device, config.eval_batch_size, config.bf16, fp16=config.fp16)
    s_test = predict(result.model, test, device, config.eval_batch_size, config.bf16, fp16=config.fp16)
    record = {"auc": multilabel_auc(test.labels, s_test, test.label_names), "best_epoch": result.best_epoch,
              "best_val_auc": result.best_val_auc, "train_rows": len(train), "synthetic": int(train.synthetic.sum())}
    return CellResult(record, {"val": s_val, "test": s_test}, summary=f"macro AUC {record['auc']['macro']:.3f}")


def auc_cell(values: list[float], y: np.ndarray) -> str:
    """``mean [CI]`` over seeds of a finding's AUC, or "not estimable" when the test set has too few positives."""
    if not estimable(y):
        known = y[~np.isnan(y)]
        return f"not estimable ({int((known == 1).sum())} test +)"
    return seed_cell(values)


def finding_comparisons(results: Results, findings: tuple[str, ...], row: dict[str, Any],
                        method: dict[str, Any], baseline: dict[str, Any]) -> list[Comparison]:
    """Per finding, the method's cells (``method`` coordinates) against the baseline's on the test set, plus the
    macro AUC over the estimable findings (one seed-level test whose test-image term covers their shared images)."""
    y, names = results.labels["test"], results.label_names
    patients = results.patients("test")
    mine, base = results.seed_scores("test", **method), results.seed_scores("test", **baseline)
    rows = []
    for finding in findings:
        j = names.index(finding)
        rows.append(compare_auc({**row, "finding": finding}, y[:, j], {s: v[:, j] for s, v in mine.items()},
                                {s: v[:, j] for s, v in base.items()}, patients))
    counted = [names.index(f) for f in findings if estimable(y[:, names.index(f)])]
    if len(counted) > 1:
        rows.append(compare_macro_auc({**row, "finding": f"mean of {len(counted)} estimable"}, y, mine, base,
                                      patients, columns=counted))
    return rows


def finding_target_rows(results: Results, findings: tuple[str, ...], row: dict[str, Any], method: dict[str, Any],
                        baseline: dict[str, Any]) -> list[TargetRow]:
    """The rows of :func:`finding_comparisons`, each with the two arms (``method``, ``baseline``) --target-mde grows."""
    return [TargetRow(comparison, (method, baseline))
            for comparison in finding_comparisons(results, findings, row, method, baseline)]


def finding_counts(train: CXRDataset, test: CXRDataset) -> Table:
    """Per finding: training and test positives, and whether the test split can estimate its AUC."""
    import pandas as pd

    rows = [{"finding": name, "train +": int(train.positives()[j]), "test +": int(test.positives()[j]),
             "test AUC": "estimable" if estimable(test.labels[:, j]) else f"not estimable (< {MIN_TEST_POSITIVES})"}
            for j, name in enumerate(test.label_names)]
    return Table("finding_counts", "Positives per finding (training and test splits)", pd.DataFrame(rows),
                 f"A test AUC needs at least {MIN_TEST_POSITIVES} positives and negatives to be reported.")


def test_positives_note(results: Results, findings: tuple[str, ...]) -> str:
    """How many test positives each reported finding has, and the rule for "not estimable"."""
    y, names = results.labels["test"], results.label_names
    counts = ", ".join(f"{f} {int(np.nansum(y[:, names.index(f)] == 1))}" for f in findings)
    return (f"Test positives of {len(y)} test rows: {counts}. A finding with fewer than {MIN_TEST_POSITIVES} test "
            "positives (or negatives) is marked not estimable and is not tested: with that few, one image moves "
            "its AUC by 1/positives or more.")


class CellWork(NamedTuple):
    """What one multi-label cell trains, for its time estimate."""

    rows: CXRDataset  # the real rows it starts from
    images: int  # training images the classifier sees over its stages (real and planned synthetic rows)
    generators: list[tuple[GeneratorSpec, CXRDataset]]  # the generators it trains first, with their rows


def findings_estimates(recipe: Any, plan: Plan, work: Callable[[Cell], CellWork]) -> dict[str, float]:
    """Seconds per multi-label cell: the probed classifier on the images ``work(cell)`` counts, plus the generators
    it trains first (each counted once; ``recipe`` has ``config.train``, ``config.run``, ``val_`` and ``test_``)."""
    config = recipe.config
    device = str(config.run.torch_device())
    eval_rows = len(recipe.val_) + len(recipe.test_)
    estimates, trained = {}, set()
    for cell in plan.cells:
        rows, images, generators = work(cell)
        seconds = training_seconds(config.train, images, eval_rows, rows.image_size, rows.n_labels,
                                   trace_memory=config.generators.full)
        for spec, gan_rows in generators:
            key = (spec.name, repr(spec.config), len(gan_rows))
            if key not in trained:
                trained.add(key)
                seconds += generator_seconds(spec, gan_rows, device, trace_memory=config.generators.full)
        estimates[cell.name] = seconds
    return estimates
