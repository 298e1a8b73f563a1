"""Synthetic-image audit without downloaded weights: fidelity, diversity, memorisation and usefulness of generated
X-rays, measured in the feature space of a CXR classifier trained on the real training split.

Feature space: the global-average-pooled output of ``model.features`` (the input of the final linear layer, 128
values for "small-cnn", 512 for "resnet18") of a ``cxrgan.classify`` backbone trained with ``train_classifier`` on
the real training split and early-stopped on the real validation split. An Inception network trained on ImageNet
(the usual FID space) is neither available offline nor a model of chest X-rays.

Every statistic is printed beside a real-vs-real reference: the same statistic between a random subset of the real
training split (as many rows as there are synthetic images) and the real test split. A generator is good when its
value is near the reference, not when it is near zero.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from cxrgan import distributed
from cxrgan.classify import TrainConfig, predict, train_classifier
from cxrgan.classify.networks import build_classifier
from cxrgan.classify.scoring import macro_auc
from cxrgan.data.dataset import CXRDataset, from_arrays
from cxrgan.data.transforms import uint8_tensor
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit_metrics import (
    frechet_distance,
    kernel_inception_distance,
    nearest_neighbours,
    prdc,
    two_sample_auc,
)
from cxrgan.evaluate.audit_plots import plot_distances, plot_nearest_pairs
from cxrgan.io import load_torch, save_torch, usable_or_discarded, write_json, write_text
from cxrgan.runs import mark_run_dir


@dataclass(frozen=True)
class AuditConfig:
    """Settings of one audit; written into audit.json."""

    feature_model: str = "small-cnn"  # backbone trained on the real training split to embed images
    feature_epochs: int = 5  # its maximum training epochs (early-stopped on real validation AUC)
    tstr_epochs: int = 5  # epochs of the train-on-synthetic / train-on-real classifiers
    batch_size: int = 64  # training batch size of both classifiers
    lr: float = 1e-3  # their Adam learning rate
    k: int = 5  # neighbourhood size of precision / recall / density / coverage (Naeem et al. use 5)
    kid_subsets: int = 50  # KID: random subset pairs
    kid_subset_size: int = 100  # KID: rows per subset
    percentile: float = 1.0  # memorisation threshold: this percentile of real test -> train distances
    n_pairs: int = 8  # closest synthetic / training pairs shown in nearest_pairs.png
    n_folds: int = 5  # folds of the classifier two-sample test
    tstr: bool = True  # train a classifier on the synthetic images and test it on real ones (needs both classes)
    seed: int = 0  # seeds the classifiers, the reference subset and the KID subsets
    device: str = "auto"  # torch device of both classifiers: auto = CUDA when present


def train_feature_model(train: CXRDataset, val: CXRDataset, config: AuditConfig = AuditConfig(),
                        path: str | Path | None = None) -> nn.Module:
    """The classifier whose pooled features define the audit's feature space, trained on real rows only; kept in
    ``path`` when given (and loaded from it when it exists), so the audits of one run share one."""
    if train.synthetic.any():
        raise CxrganError("the feature model must be trained on real images; the training rows hold synthetic ones")
    if path is not None and usable_or_discarded(path, "audit feature model"):  # a damaged one is trained again
        model = build_classifier(config.feature_model, train.n_labels)
        model.load_state_dict(load_torch(path, "audit feature model"))
        # the memory layout the training loop gives the trained model, so its features match bit for bit
        return model.to(resolve_device(config.device), memory_format=torch.channels_last).eval()
    model = train_classifier(train, val, _train_config(config, config.feature_model, config.feature_epochs),
                             seed=config.seed).model
    if path is not None and distributed.is_main():
        save_torch(path, model.state_dict())
    return model


@torch.no_grad()
def extract_features(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """(N, C) global-average-pooled ``model.features`` output for uint8 (N, H, W) images scaled to [-1, 1]."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CxrganError(f"images must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
    device = next(model.parameters()).device
    model.eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        x = uint8_tensor(images[start:start + batch_size]).to(device)
        x = x.unsqueeze(1).float().div(127.5).sub(1.0)
        chunks.append(model.features(x).float().mean(dim=(2, 3)).cpu().numpy())
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros((0, 0))


def memorisation(synthetic_to_train: np.ndarray, test_to_train: np.ndarray, percentile: float = 1.0) -> dict:
    """How close synthetic images sit to training images compared with genuinely new real images.

    Args:
        synthetic_to_train: distance of every synthetic image to its nearest training image.
        test_to_train: the same for every real test image (patients never seen in training).
        percentile: threshold percentile of ``test_to_train``.

    Returns:
        the threshold, the fraction of synthetic images at or below it (about ``percentile`` / 100 for a generator
        that does not copy, 1.0 for exact copies), and quantiles of both distributions.
    """
    threshold = float(np.percentile(test_to_train, percentile))
    quantiles = (0.01, 0.05, 0.25, 0.5)
    return {
        "threshold": threshold,
        "fraction_below": float(np.mean(synthetic_to_train <= threshold)),
        "reference_fraction_below": float(np.mean(test_to_train <= threshold)),
        "synthetic_to_train_quantiles": {str(q): float(np.quantile(synthetic_to_train, q)) for q in quantiles},
        "test_to_train_quantiles": {str(q): float(np.quantile(test_to_train, q)) for q in quantiles},
    }


def train_on_synthetic(images: np.ndarray, labels: np.ndarray, val: CXRDataset, test: CXRDataset,
                       config: AuditConfig = AuditConfig()) -> float:
    """Train-on-synthetic / test-on-real (Esteban et al. 2017, "Real-valued (Medical) Time Series Generation with
    Recurrent Conditional GANs"): a ``config.feature_model`` classifier trained only on synthetic images, its
    epoch chosen on the real validation split, scored by macro ROC AUC on the real test split.

    Args:
        images: (N, H, W) uint8 synthetic images.
        labels: (N, K) their labels (NaN = unknown, ignored in the loss), columns as in ``test``.
        val: real validation rows (select the epoch only).
        test: real test rows.
        config: audit settings (classifier, epochs, seed).
    """
    labels = np.asarray(labels, dtype=np.float32).reshape(len(images), -1)
    if labels.shape[1] != test.n_labels:
        raise CxrganError(f"synthetic labels have {labels.shape[1]} column(s); the test split has {test.n_labels}")
    synthetic = from_arrays(images, labels, test.label_names, class_names=test.class_names, source="synthetic",
                            synthetic=[True] * len(images))
    result = train_classifier(synthetic, val, _train_config(config, config.feature_model, config.tstr_epochs),
                              seed=config.seed)
    return macro_auc(test.labels, predict(result.model, test, resolve_device(config.device)))


def audit_images(synthetic_images: np.ndarray, synthetic_labels: np.ndarray | None, train: CXRDataset,
                 val: CXRDataset, test: CXRDataset, out_dir: str | Path | None = None,
                 config: AuditConfig = AuditConfig(), feature_model: nn.Module | None = None) -> dict:
    """Audit synthetic images against the real splits they were meant to imitate; JSON + PNGs when ``out_dir``.

    When the synthetic labels hold a single class of a binary task (a class-specific generator such as DCGAN on the
    minority class), the distribution metrics compare with real images of that class only.

    Args:
        synthetic_images: (M, H, W) uint8 generated images, same size as the real ones.
        synthetic_labels: (M, K) labels the generator gave them (NaN unknown), or None.
        train: the real rows the generator trained on (and the feature model, unless one is given).
        val: the real validation split (early stopping of the classifiers).
        test: the real test split (never seen by generator or feature model).
        out_dir: where to write audit.json, audit.csv, distances.png and nearest_pairs.png (None: nothing).
        config: audit settings.
        feature_model: an already trained feature model (default: ``train_feature_model(train, val, config)``).

    Returns:
        a JSON-ready dict: per metric the synthetic value and the real-vs-real reference, memorisation summaries in
        feature and pixel space, the nearest training row per synthetic image (an index into ``train``, or into its
        rows of the synthetic class when the comparison was restricted to one class), and the settings.
    """
    synthetic_images = np.asarray(synthetic_images)
    _check_images(synthetic_images, train)
    if synthetic_labels is not None:
        synthetic_labels = np.asarray(synthetic_labels, dtype=np.float32).reshape(len(synthetic_images), -1)
    model = feature_model if feature_model is not None else train_feature_model(train, val, config)
    # the feature model is exactly the train-on-real reference classifier when it was trained here with its settings
    real_model = model if feature_model is None and config.feature_epochs == config.tstr_epochs else None
    real_train, real_test, restriction = _matching_real_rows(synthetic_labels, train, test)
    minimum = max(config.k + 1, config.n_folds, 2)
    for name, count in (("synthetic images", len(synthetic_images)), ("real training rows", len(real_train)),
                        ("real test rows", len(real_test))):
        if count < minimum:
            raise CxrganError(f"the audit needs at least {minimum} {name}, got {count}")
    features = {"synthetic": extract_features(model, synthetic_images), "train": extract_features(model, real_train.images),
                "test": extract_features(model, real_test.images)}
    rng = np.random.default_rng(config.seed)
    reference_index = np.sort(rng.choice(len(real_train), min(len(synthetic_images), len(real_train)), replace=False))
    metrics = _distribution_metrics(features["synthetic"], features["train"][reference_index], features["test"],
                                    config)
    pixels = {"synthetic": _pixels(synthetic_images), "train": _pixels(real_train.images),
              "test": _pixels(real_test.images)}
    memo, nearest, distances = {}, {}, {}
    for space, rows in (("feature", features), ("pixel", pixels)):
        memo[space], nearest[space], distances[space] = _memorisation(rows, config.percentile)
        metrics[f"memorised_{space}"] = {"synthetic": memo[space]["fraction_below"],
                                         "reference": memo[space]["reference_fraction_below"]}
    tstr: dict[str, float | str] = {}
    if config.tstr:
        tstr = _tstr(synthetic_images, synthetic_labels, train, val, test, config, real_model)
        if "synthetic" in tstr:
            metrics["tstr_auc"] = {"synthetic": tstr["synthetic"], "reference": tstr["reference"]}
    result = {
        "config": dataclasses.asdict(config),
        "feature_space": f"global-average-pooled `features` output of a {config.feature_model} trained on the real "
                         f"training split ({features['synthetic'].shape[1]} values per image)",
        "n_synthetic": len(synthetic_images), "n_train": len(real_train), "n_test": len(real_test),
        "real_rows": restriction, "metrics": metrics, "memorisation": memo,
        "nearest_train_index": {space: index.tolist() for space, index in nearest.items()}, "tstr": tstr,
    }
    if out_dir is not None:
        _write_audit(Path(out_dir), result, synthetic_images, real_train.images, nearest, distances, config)
    return result


def _distribution_metrics(f_syn: np.ndarray, f_ref: np.ndarray, f_test: np.ndarray,
                          config: AuditConfig) -> dict[str, dict[str, float]]:
    """FD, KID, precision / recall / density / coverage and the two-sample AUC of the synthetic features and of the
    real reference features, each against the real test features."""
    metrics = {"frechet_distance": {"synthetic": frechet_distance(f_syn, f_test),
                                    "reference": frechet_distance(f_ref, f_test)}}
    kid_syn = kernel_inception_distance(f_syn, f_test, config.kid_subsets, config.kid_subset_size, config.seed)
    kid_ref = kernel_inception_distance(f_ref, f_test, config.kid_subsets, config.kid_subset_size, config.seed)
    metrics["kid"] = {"synthetic": kid_syn[0], "reference": kid_ref[0], "synthetic_std": kid_syn[1],
                      "reference_std": kid_ref[1]}
    syn_prdc, ref_prdc = prdc(f_test, f_syn, config.k), prdc(f_test, f_ref, config.k)
    for key in syn_prdc:
        metrics[key] = {"synthetic": syn_prdc[key], "reference": ref_prdc[key]}
    metrics["two_sample_auc"] = {"synthetic": two_sample_auc(f_test, f_syn, config.n_folds, config.seed),
                                 "reference": two_sample_auc(f_test, f_ref, config.n_folds, config.seed)}
    return metrics


def _memorisation(rows: dict[str, np.ndarray], percentile: float) -> tuple[dict, np.ndarray,
                                                                           tuple[np.ndarray, np.ndarray]]:
    """In one space (features or pixels): the memorisation summary, each synthetic image's nearest training row,
    and the nearest-training distances of the synthetic and of the real test rows."""
    nearest, synthetic_distance = nearest_neighbours(rows["synthetic"], rows["train"])
    _, test_distance = nearest_neighbours(rows["test"], rows["train"])
    memo = memorisation(synthetic_distance, test_distance, percentile)
    memo["synthetic_to_train"] = synthetic_distance.tolist()
    return memo, nearest, (synthetic_distance, test_distance)


def _write_audit(out_dir: Path, result: dict, synthetic_images: np.ndarray, train_images: np.ndarray,
                 nearest: dict[str, np.ndarray], distances: dict, config: AuditConfig) -> None:
    """audit.json, audit.csv, the distance histograms and the nearest-pair grid of one audit."""
    if not out_dir.exists():  # a folder the audit makes is cxrgan's (cxrgan report may write into it)
        out_dir.mkdir(parents=True)
        mark_run_dir(out_dir)
    write_json(out_dir / "audit.json", result)
    write_text(out_dir / "audit.csv", audit_table(result).to_csv(index=False))
    plot_distances(distances, result["memorisation"], out_dir / "distances.png", config.percentile)
    plot_nearest_pairs(synthetic_images, train_images, nearest, distances, out_dir / "nearest_pairs.png",
                       config.n_pairs)


# What each row means and which value is ideal, in the order a reader scans them.
METRIC_ROWS = {
    "frechet_distance": ("Fréchet distance to real test (feature space)", "lower; ~reference"),
    "kid": ("KID to real test (poly kernel, unbiased)", "~0; ~reference"),
    "precision": ("precision (fidelity, k-NN)", "~reference"),
    "recall": ("recall (diversity, k-NN)", "~reference"),
    "density": ("density", "~1"),
    "coverage": ("coverage", "~reference"),
    "two_sample_auc": ("two-sample classifier AUC vs real test", "0.5"),
    "memorised_feature": ("fraction closer to a training image than the test p-th pct. (features)", "~pct/100"),
    "memorised_pixel": ("fraction closer to a training image than the test p-th pct. (pixels)", "~pct/100"),
    "tstr_auc": ("train on synthetic, test on real: ROC AUC", "~reference (train on real)"),
    # synthetic files (cxrgan.evaluate.synthetic_audit): against the training rows of each image's own class
    "memorised_same_class": ("fraction closer to a same-class training image than the test p-th pct. (features)",
                             "~pct/100"),
    "nn_distance_same_class": ("median distance to the nearest same-class training image (features)", "~reference"),
    "near_copies_train": ("near-duplicates of training images (mirrored, shifted, re-encoded, resized)", "0"),
}


def reference_cells(metrics: dict, columns: dict[str, str]) -> dict[str, str]:
    """Table cells of an audit's ``metrics``: per metric key of ``columns`` (key -> column label) that the audit
    has, "synthetic (ref reference)"."""
    return {label: f"{metrics[key]['synthetic']:.3f} (ref {metrics[key]['reference']:.3f})"
            for key, label in columns.items() if key in metrics}


def audit_table(result: dict) -> pd.DataFrame:
    """The printable table: metric, synthetic value, real-vs-real reference, what is ideal."""
    rows = []
    percentile = result["config"]["percentile"]
    for key, (label, ideal) in METRIC_ROWS.items():
        if key not in result["metrics"]:
            continue
        values = result["metrics"][key]
        rows.append({"metric": label.replace("p-th pct.", f"{percentile:g}st pct." if percentile == 1 else
                                             f"{percentile:g}th pct."),
                     "synthetic": _fmt(values["synthetic"], values.get("synthetic_std")),
                     "real train vs test (reference)": _fmt(values["reference"], values.get("reference_std")),
                     "ideal": ideal.replace("pct/100", f"{percentile / 100:g}")})
    return pd.DataFrame(rows)


def _tstr(images: np.ndarray, labels: np.ndarray | None, train: CXRDataset, val: CXRDataset, test: CXRDataset,
          config: AuditConfig, real_model: nn.Module | None = None) -> dict[str, float | str]:
    if labels is None or np.isnan(labels).all():
        return {"skipped": "the synthetic images carry no labels"}
    for j, name in enumerate(test.label_names):
        known = labels[~np.isnan(labels[:, j]), j]
        if test.is_binary and len(np.unique(known)) < 2:
            return {"skipped": f"the synthetic images hold one class of {name!r} only (a class-specific generator)"}
    real = real_model if real_model is not None else train_classifier(
        train, val, _train_config(config, config.feature_model, config.tstr_epochs), seed=config.seed).model
    return {"synthetic": train_on_synthetic(images, labels, val, test, config),
            "reference": macro_auc(test.labels, predict(real, test, resolve_device(config.device)))}


def _matching_real_rows(labels: np.ndarray | None, train: CXRDataset, test: CXRDataset
                        ) -> tuple[CXRDataset, CXRDataset, str]:
    """Real rows of the synthetic images' class when they hold one class of a binary task, else all rows."""
    if labels is None or not train.is_binary:
        return train, test, "all classes"
    known = labels[~np.isnan(labels[:, 0]), 0]
    classes = np.unique(known)
    if len(known) != len(labels) or len(classes) != 1:
        return train, test, "all classes"
    value = float(classes[0])
    name = (train.class_names or ("negative", train.label_names[0]))[int(value)]
    return (train.subset(train.labels[:, 0] == value), test.subset(test.labels[:, 0] == value),
            f"class {name!r} only (the synthetic images are all {name!r})")


def _train_config(config: AuditConfig, model: str, epochs: int) -> TrainConfig:
    return TrainConfig(model=model, epochs=epochs, batch_size=config.batch_size, lr=config.lr, patience=epochs,
                       device=config.device, progress=False)


def _pixels(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0


def _check_images(images: np.ndarray, train: CXRDataset) -> None:
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CxrganError(f"synthetic images must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
    if images.shape[1:] != train.images.shape[1:]:
        raise CxrganError(f"synthetic images are {images.shape[1:]} px but the real ones are "
                          f"{train.images.shape[1:]} px; sample at the data's size")


def _fmt(value: float, std: float | None = None) -> str:
    if value is None or not np.isfinite(value):
        return "n/a"
    text = f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    # a zero spread (every KID subset was the whole set) is rounding noise, not information
    return text + (f" ± {std:.2g}" if std is not None and std > 1e-12 else "")
