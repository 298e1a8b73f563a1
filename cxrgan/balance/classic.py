"""Classic balancers (identity, random under-/over-sampling, SMOTE, class weights) and their shared input checks.

All of them follow imbalanced-learn's ``fit_resample`` (Lemaitre, Nogueira and Aridas 2017, "Imbalanced-learn:
A Python Toolbox to Tackle the Curse of Imbalanced Datasets in Machine Learning", JMLR 18) on a ``CXRDataset``.

Classes and multi-label data. Every balancer sees the rows as classes of the *label powerset* (Boutell et al.
2004, "Learning multi-label scene classification"; Tsoumakas and Katakis 2007, "Multi-label classification: an
overview"): each distinct label vector is one class, an unknown (NaN) entry being a third token next to 0 and 1.
For a binary task (K = 1, no NaN) the powerset classes are exactly the two classes. "Balanced" means every
powerset class has the same number of rows:

=================  =================================================================================================
method             what K > 1 data gets
=================  =================================================================================================
``none``           the rows unchanged.
``undersample``    every label vector cut to the count of the rarest vector (with NIH's 14 findings, whose
                   powerset has single-member vectors, that leaves one row per distinct vector: drastic).
``oversample``     every label vector copied up to the count of the commonest vector (rows can grow by the
                   number of distinct vectors times the majority count).
``smote``          vectors with >= 2 rows get SMOTE rows; a vector with a single row cannot be interpolated and
                   is topped up with copies of that real row instead (``synthetic=False``).
``augment``        (``cxrgan.balance.augment``) flipped / affine-warped copies of rows of each vector.
``class-weights``  rows unchanged; per label column, the weights of negatives and positives.
``repeat``         every row twice (not a balancer: the equal-exposure control, see :class:`RepeatBalancer`).
=================  =================================================================================================

For many findings the powerset rule multiplies or removes rows heavily; ``class-weights`` is the per-column
alternative. Every balancer refuses rows outside the training split and data with a single class.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from imblearn.over_sampling import SMOTE, RandomOverSampler
from imblearn.under_sampling import RandomUnderSampler
from sklearn.utils.class_weight import compute_class_weight

from cxrgan.balance.base import Balancer, Powerset, class_counts_text, register_balancer
from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError

# ---- shared helpers (also for generator-backed balancers) ---------------------------------------------------
def generated_meta(template: pd.DataFrame, n_rows: int, source: str, **columns) -> pd.DataFrame:
    """Metadata for ``n_rows`` generated images: the columns of ``template``, blank, then ``columns`` set.

    Generated rows belong to the training split, are flagged ``synthetic`` and have no patient unless a
    column value says otherwise (e.g. the parent's patient for an augmented copy).
    """
    meta = pd.DataFrame(index=range(n_rows))
    for name in template.columns:
        dtype = template[name].dtype
        if pd.api.types.is_bool_dtype(dtype):
            meta[name] = np.zeros(n_rows, dtype=bool)
        elif pd.api.types.is_numeric_dtype(dtype):
            meta[name] = np.full(n_rows, np.nan)
        else:
            meta[name] = [""] * n_rows
    meta["patient_id"] = ""
    meta["split"] = "train"
    meta["source"] = source
    meta["synthetic"] = True
    for name, values in columns.items():
        meta[name] = list(values) if not np.isscalar(values) else values
    return meta


def resampled_rows(dataset: CXRDataset, sample_indices: np.ndarray) -> CXRDataset:
    """Real rows by index (copies keep their metadata and ``synthetic`` flag); stale class weights dropped."""
    return replace(dataset.subset(sample_indices), class_weights=None)


# ---- balancers ----------------------------------------------------------------------------------------------
class IdentityBalancer(Balancer):
    """``none``: the training split as given, the baseline every method is compared with.

    Multi-label: rows unchanged. Checks the input like every balancer (training rows, two or more classes), so a
    run fails at the same place whatever the method.

    Args:
        random_state: unused; accepted so every balancer is built the same way.
    """

    name = "none"

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        codes = classes.codes
        self.class_counts_ = np.bincount(codes)
        self.sample_indices_ = np.arange(len(dataset))
        return replace(dataset)


class RandomUnderBalancer(Balancer):
    """``undersample``: drop random rows of the larger classes down to the size of the smallest (imblearn
    ``RandomUnderSampler``; compared with over-sampling for CNNs by Buda, Maki and Mazurowski 2018, "A systematic
    study of the class imbalance problem in convolutional neural networks", Neural Networks 106).

    Multi-label: on the label powerset; every label vector keeps as many rows as the rarest vector has. Kept rows
    stay in their original relative order with their metadata.

    Args:
        random_state: seed of the row choice.
    """

    name = "undersample"

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        codes = classes.codes
        self.class_counts_ = np.bincount(codes)
        sampler = RandomUnderSampler(random_state=self.random_state)
        sampler.fit_resample(np.arange(len(dataset))[:, None], codes)
        self.sample_indices_ = np.sort(sampler.sample_indices_)
        return resampled_rows(dataset, self.sample_indices_)


class RandomOverBalancer(Balancer):
    """``oversample``: repeat random rows of the smaller classes up to the size of the largest (imblearn
    ``RandomOverSampler``; Buda, Maki and Mazurowski 2018 found it the most reliable fix for CNNs).

    Multi-label: on the label powerset; every label vector is copied up to the count of the commonest vector,
    single-row vectors included. The input rows come first, then the copies (real rows: ``synthetic=False``,
    metadata kept).

    Args:
        random_state: seed of the row choice.
    """

    name = "oversample"

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        codes = classes.codes
        self.class_counts_ = np.bincount(codes)
        sampler = RandomOverSampler(random_state=self.random_state)
        sampler.fit_resample(np.arange(len(dataset))[:, None], codes)
        self.sample_indices_ = np.asarray(sampler.sample_indices_, dtype=np.int64)
        return resampled_rows(dataset, self.sample_indices_)


class SmoteBalancer(Balancer):
    """``smote``: new minority images on the segments between a minority image and one of its k nearest
    minority neighbours, in flattened pixel space (Chawla et al. 2002, "SMOTE: Synthetic Minority Over-sampling
    Technique", JAIR 16, sec. 4.2: x_new = x_i + lambda * (x_nn - x_i), lambda ~ U(0, 1)), via imblearn ``SMOTE``.

    Pixel-space interpolation of two radiographs is a blend, not a plausible X-ray: SMOTE is here as the classic
    baseline the generative methods are measured against.

    ``k_neighbors`` is capped at (class size - 1), so a 3-image class uses 2 neighbours. A binary task whose
    minority has a single image is an error. Multi-label: on the label powerset; each label vector with >= 2
    rows is interpolated within itself and the new rows carry that vector; a vector with a single row is topped
    up with copies of that real row. Output: input rows, then the SMOTE rows (``synthetic=True``, split
    'train', no patient, source 'smote'), then any single-row copies (``synthetic=False``).

    Args:
        random_state: seed of the base-row, neighbour and lambda choices.
        k_neighbors: neighbours per base image before the cap (imblearn's default 5).
    """

    name = "smote"

    def __init__(self, random_state: int, k_neighbors: int = 5) -> None:
        if k_neighbors < 1:
            raise CxrganError(f"smote: k_neighbors must be at least 1, got {k_neighbors}")
        self.random_state = random_state
        self.k_neighbors = k_neighbors

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        codes, names = classes
        counts = np.bincount(codes, minlength=len(names))
        self.class_counts_ = counts
        target = int(counts.max())
        needy = [c for c in range(len(names)) if counts[c] < target]
        singles = [c for c in needy if counts[c] == 1]
        if singles and dataset.is_binary:
            raise CxrganError(
                f"smote: the minority class {names[singles[0]]!r} has 1 image; SMOTE needs at least 2 to "
                f"interpolate (class counts: {class_counts_text(codes, names)}); use oversample or augment"
            )
        # one imblearn call per neighbour count, so each class uses min(k, size - 1) neighbours
        by_k: dict[int, dict[int, int]] = {}
        for c in needy:
            if counts[c] >= 2:
                by_k.setdefault(min(self.k_neighbors, int(counts[c]) - 1), {})[c] = target
        seeds = np.random.default_rng(self.random_state).integers(0, 2**31 - 1, size=len(by_k) + 1)
        pixels = dataset.images.reshape(len(dataset), -1).astype(np.float32)
        new_images, new_codes = [], []
        for seed, (k, strategy) in zip(seeds, sorted(by_k.items())):
            sampler = SMOTE(sampling_strategy=strategy, k_neighbors=k, random_state=int(seed))
            x_out, y_out = sampler.fit_resample(pixels, codes)
            new_images.append(x_out[len(dataset) :])
            new_codes.append(y_out[len(dataset) :])
        n_pixels = pixels.shape[1]
        new_images_arr = np.concatenate(new_images) if new_images else np.zeros((0, n_pixels), np.float32)
        new_codes_arr = np.concatenate(new_codes).astype(np.int64) if new_codes else np.zeros(0, np.int64)
        first_of_class = np.array([np.flatnonzero(codes == c)[0] for c in range(len(names))])
        synthetic = CXRDataset(
            images=np.clip(np.rint(new_images_arr), 0, 255).astype(np.uint8).reshape(-1, *dataset.images.shape[1:]),
            labels=dataset.labels[first_of_class[new_codes_arr]],
            label_names=dataset.label_names,
            meta=generated_meta(dataset.meta, len(new_codes_arr), source="smote"),
            class_names=dataset.class_names,
        )
        single_rows = np.array([first_of_class[c] for c in singles for _ in range(target - 1)], dtype=np.int64)
        self.n_synthetic_ = len(synthetic)
        self.sample_indices_ = np.concatenate(
            [np.arange(len(dataset)), np.full(len(synthetic), -1), single_rows]
        )
        return CXRDataset.concat([dataset, synthetic, dataset.subset(single_rows)])


class ClassWeightBalancer(Balancer):
    """``class-weights``: rows unchanged; ``class_weights`` set so the loss counts each class equally.

    Per label column j (for a binary task, the one column), the weights of negative and positive targets are
    scikit-learn's ``compute_class_weight('balanced')`` on the column's known values: w_c = n_known / (2 n_c)
    (King and Zeng 2001, "Logistic Regression in Rare Events Data"). Multi-label: per column, not on the
    powerset; a column lacking positives or negatives (or with no known value) gets weights (1, 1), there
    being nothing to rebalance.

    Args:
        random_state: unused; accepted so every balancer is built the same way.
    """

    name = "class-weights"

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        codes = classes.codes
        self.class_counts_ = np.bincount(codes)
        weights = np.ones((dataset.n_labels, 2), dtype=np.float32)
        for j in range(dataset.n_labels):
            known = dataset.labels[:, j][~np.isnan(dataset.labels[:, j])].astype(np.int64)
            if np.unique(known).size == 2:
                weights[j] = compute_class_weight("balanced", classes=np.array([0, 1]), y=known)
        self.class_weights_ = weights
        self.sample_indices_ = np.arange(len(dataset))
        return replace(dataset, class_weights=weights)


class RepeatBalancer(Balancer):
    """``repeat``: every training row twice (the input, then the same rows again); class ratio unchanged.

    Not a fix for imbalance but the control for methods that double the training set with new images
    (``cyclegan-complement`` trains on 2n rows): with the same epochs, ``repeat`` gives the classifier the same
    number of gradient steps on the real images alone, so a gain of the method over ``repeat`` is not just
    longer training. Works unchanged on multi-label data.

    Args:
        random_state: unused; accepted so every balancer is built the same way.
    """

    name = "repeat"

    def __init__(self, random_state: int) -> None:
        self.random_state = random_state

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        codes = classes.codes
        self.class_counts_ = np.bincount(codes)
        self.sample_indices_ = np.tile(np.arange(len(dataset)), 2)
        return resampled_rows(dataset, self.sample_indices_)


# ---- registry -------------------------------------------------------------------------------------------------
CLASSIC_BALANCERS: dict[str, type[Balancer]] = {
    "none": IdentityBalancer,
    "undersample": RandomUnderBalancer,
    "oversample": RandomOverBalancer,
    "smote": SmoteBalancer,
    "class-weights": ClassWeightBalancer,
    "repeat": RepeatBalancer,
}
for _name, _cls in CLASSIC_BALANCERS.items():
    register_balancer(_name)(lambda context, cls=_cls: cls(random_state=context.random_state))
