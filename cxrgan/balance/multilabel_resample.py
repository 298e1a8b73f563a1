"""Multi-label resampling by per-label imbalance (ML-ROS, ML-RUS, MLSMOTE) and the label-powerset names LP-ROS / LP-RUS.

Charte et al. define two ways to see a multi-label set as imbalanced, and a resampler for each:

=================  ===============================================================================================
method             what it balances, and when to use it
=================  ===============================================================================================
``lp-ros``         = ``oversample``: every *label vector* (label-powerset class) copied up to the commonest one.
``lp-rus``         = ``undersample``: every label vector cut to the rarest one. Right for a binary or multi-class
                   task, or few findings with few distinct vectors. With many findings the powerset has many
                   single-row vectors: on the NIH subset (14 findings) ``lp-rus`` keeps 58 of 463 training rows,
                   and ``lp-ros`` multiplies the rows by the number of vectors. (Charte et al.'s LP-ROS / LP-RUS
                   stop at P % of the rows and at the mean label-set size; these two balance fully, as
                   imbalanced-learn's samplers do, and are the ``oversample`` / ``undersample`` classes.)
``ml-ros``         clones rows of the *minority labels* (IRLbl > MeanIR) until P % of the rows are added or every
                   such label reaches MeanIR (Charte et al. 2015, Neurocomputing 163).
``ml-rus``         removes rows of the *majority labels* (IRLbl < MeanIR) that carry no minority label, until P %
                   of the rows are removed or every such label reaches MeanIR (same paper): keeps at least
                   (100 - P) % of the rows. Use these two when there are many findings: they act per label,
                   touch at most P % of the rows and keep co-occurring findings together.
``mlsmote``        one synthetic row per row of each minority label's bag, between the row and one of its k
                   nearest bag neighbours; labels by the neighbours' vote (Charte et al. 2015, "MLSMOTE",
                   Knowledge-Based Systems 89). On pixels, like ``smote``: a blend of radiographs, a baseline.
=================  ===============================================================================================

IRLbl and MeanIR are computed on the findings plus "no finding" (see :mod:`cxrgan.data.label_imbalance`); for a
binary task the labels are its two classes, so ``ml-ros`` there clones minority-class rows until the class ratio
is halfway (in IRLbl) to balanced. These methods balance findings *against each other*, not a finding's positives
against its negatives (that is the per-column job of ``class-weights`` and the loss-side methods). Every one of
them records ``label_names_``, ``irlbl_before_``, ``irlbl_after_``, ``mean_ir_before_`` and ``mean_ir_after_``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from cxrgan.balance.base import Balancer, Powerset, register_balancer
from cxrgan.balance.classic import RandomOverBalancer, RandomUnderBalancer, generated_meta, resampled_rows
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.label_imbalance import (
    DEFAULT_PERCENTAGE,
    as_columns,
    check_percentage,
    imbalance_table,
    irlbl,
    label_sets,
    mean_ir,
    ml_ros_rows,
    ml_rus_rows,
)
from cxrgan.errors import CxrganError

DEFAULT_K_NEIGHBORS = 5  # MLSMOTE's k (Charte et al. 2015 use 5, as SMOTE)


def mlsmote_samples(features: np.ndarray, labels: np.ndarray, k_neighbors: int, rng: np.random.Generator,
                    no_finding: bool = True, per_feature_gap: bool = True) -> dict[str, np.ndarray]:
    """MLSMOTE (Charte, Rivera, del Jesus and Herrera 2015, Knowledge-Based Systems 89) on row features.

    MeanIR is fixed at the start. For each label in turn, on the data as grown so far (earlier labels' synthetic
    rows included, as the paper's ``D <- D + synthSmpl``): if its IRLbl > MeanIR, each row of its bag (the rows
    carrying it) yields one synthetic row. The seed's k nearest bag neighbours (Euclidean) are found, one of them
    is the reference, and every feature is ``seed + gap * (reference - seed)`` with its own gap ~ U(0, 1) (the
    paper draws it per feature; ``per_feature_gap=False`` draws one per row, as SMOTE). Labels follow the paper's
    *ranking* rule: a label is set when more than half of the seed and its neighbours carry it, i.e. when its
    count among those k + 1 rows exceeds (k + 1) / 2 (unknown entries count as not carried).

    ``k`` is capped at bag size - 1; a bag of one row yields nothing (no neighbour to interpolate towards).

    Args:
        features: (N, F) array; synthetic features are cast to its dtype (rounded and clipped for integers).
        labels: (N, K) labels, 1 / 0 / NaN.
        k_neighbors: k.
        rng: random generator of the reference choices and the gaps.
        no_finding: count "no finding" as a label (see :func:`cxrgan.data.label_imbalance.label_sets`).
        per_feature_gap: one gap per feature (the paper) or one per row.

    Returns a dict of ``features`` (M, F), ``labels`` (M, K) float32, ``seed`` and ``reference`` (M,) row indices
    into the grown data (>= N for synthetic rows), ``label`` (M,) the label each row was made for, and ``skipped``
    the labels whose minority bag had a single row.
    """
    if k_neighbors < 1:
        raise CxrganError(f"mlsmote: k_neighbors must be at least 1, got {k_neighbors}")
    features = np.asarray(features)
    data, known_labels = features, as_columns(labels)
    matrix, _ = label_sets(known_labels, range(known_labels.shape[1]), no_finding)
    threshold = mean_ir(matrix.sum(axis=0))
    made: dict[str, list] = {"features": [], "labels": [], "seed": [], "reference": [], "label": []}
    skipped = []
    for j in range(matrix.shape[1]):
        if not irlbl(matrix.sum(axis=0))[j] > threshold:
            continue
        bag = np.flatnonzero(matrix[:, j])
        n_neighbors = min(k_neighbors, len(bag) - 1)
        if n_neighbors < 1:
            skipped.append(j)
            continue
        bag_features = data[bag].astype(np.float32)
        _, nearest = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(bag_features).kneighbors(bag_features)
        new_features, new_labels = [], []
        for position, seed in enumerate(bag):
            # the query row is its own nearest neighbour unless it has exact duplicates: drop it by position
            neighbours = bag[[i for i in nearest[position] if i != position][:n_neighbors]]
            reference = int(neighbours[rng.integers(n_neighbors)])
            gap = rng.random(data.shape[1]) if per_feature_gap else rng.random()
            value = data[seed].astype(np.float64) + gap * (data[reference].astype(np.float64) - data[seed])
            new_features.append(_cast(value, data.dtype))
            votes = (known_labels[np.r_[seed, neighbours]] == 1).sum(axis=0)
            new_labels.append((votes > (n_neighbors + 1) / 2).astype(np.float32))
            made["seed"].append(int(seed))
            made["reference"].append(reference)
            made["label"].append(j)
        data = np.concatenate([data, np.stack(new_features)])
        known_labels = np.concatenate([known_labels, np.stack(new_labels)])
        matrix, _ = label_sets(known_labels, range(known_labels.shape[1]), no_finding)
    n = len(features)
    return {"features": data[n:], "labels": known_labels[n:], "seed": np.asarray(made["seed"], np.int64),
            "reference": np.asarray(made["reference"], np.int64), "label": np.asarray(made["label"], np.int64),
            "skipped": np.asarray(skipped, np.int64)}


def _cast(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


class _PerLabelResampler(Balancer):
    """Shared settings and the before / after imbalance record of ML-ROS, ML-RUS and MLSMOTE."""

    name = ""

    def _label_sets(self, dataset: CXRDataset) -> tuple[np.ndarray, tuple[str, ...]]:
        negative = dataset.class_names[0] if dataset.class_names else None
        return label_sets(dataset.labels, dataset.label_names, self.no_finding, negative)

    def _record(self, dataset: CXRDataset, out: CXRDataset) -> None:
        before, self.label_names_ = self._label_sets(dataset)
        after, _ = self._label_sets(out)
        self.irlbl_before_, self.irlbl_after_ = irlbl(before.sum(axis=0)), irlbl(after.sum(axis=0))
        self.mean_ir_before_, self.mean_ir_after_ = mean_ir(before.sum(axis=0)), mean_ir(after.sum(axis=0))
        self._matrices = (before, after)

    def imbalance_table(self) -> pd.DataFrame:
        """Rows carrying each label and its IRLbl, MeanIR and the row count, before and after ``fit_resample``."""
        before, after = self._matrices
        return imbalance_table(before, self.label_names_, **{self.name: after})


class MLROSBalancer(_PerLabelResampler):
    """``ml-ros``: ML-ROS, random copies of minority-label rows (Charte et al. 2015).

    The input rows come first, then the copies (real rows, metadata kept, ``synthetic=False``); ``sample_indices_``
    holds the source row of every output row.

    Args:
        random_state: seed of the row choice.
        percentage: P, at most P % of the rows are added, in (0, 100] (the paper's experiments: 25).
        no_finding: count "no finding" as a label (see :mod:`cxrgan.data.label_imbalance`).
    """

    name = "ml-ros"

    def __init__(self, random_state: int, percentage: float = DEFAULT_PERCENTAGE, no_finding: bool = True) -> None:
        self.random_state, self.percentage = random_state, check_percentage(percentage, self.name)
        self.no_finding = no_finding

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        matrix, _ = self._label_sets(dataset)
        clones = ml_ros_rows(matrix, self.percentage, np.random.default_rng(self.random_state))
        self.sample_indices_ = np.concatenate([np.arange(len(dataset)), clones])
        out = resampled_rows(dataset, self.sample_indices_)
        self._record(dataset, out)
        return out


class MLRUSBalancer(_PerLabelResampler):
    """``ml-rus``: ML-RUS, random removal of majority-label rows (Charte et al. 2015).

    Rows carrying a minority label are kept; kept rows stay in their original order with their metadata
    (``sample_indices_``). An error names the label when a removal would leave it without a row.

    Args:
        random_state: seed of the row choice.
        percentage: P, at most P % of the rows are removed, in (0, 100] (the paper's experiments: 25).
        no_finding: count "no finding" as a label (see :mod:`cxrgan.data.label_imbalance`).
    """

    name = "ml-rus"

    def __init__(self, random_state: int, percentage: float = DEFAULT_PERCENTAGE, no_finding: bool = True) -> None:
        self.random_state, self.percentage = random_state, check_percentage(percentage, self.name)
        self.no_finding = no_finding

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        matrix, names = self._label_sets(dataset)
        removed = ml_rus_rows(matrix, self.percentage, np.random.default_rng(self.random_state), names)
        self.sample_indices_ = np.setdiff1d(np.arange(len(dataset)), removed)  # sorted: original order
        out = resampled_rows(dataset, self.sample_indices_)
        self._record(dataset, out)
        return out


class MLSMOTEBalancer(_PerLabelResampler):
    """``mlsmote``: MLSMOTE on flattened pixels (:func:`mlsmote_samples`).

    Pixels, not a feature embedding: ``balance`` cannot use a trained classifier (it sits left of ``classify``),
    and pixel space is where ``smote`` works too, so the two are comparable. Each synthetic pixel takes its own
    gap (the paper's rule), so an image is a pixel-wise random blend of two radiographs, not a plausible X-ray.
    The ranking rule can give a synthetic row a label vector no real row has. Output: the input rows, then the
    synthetic rows (``synthetic=True``, source 'mlsmote', no patient); ``sample_indices_`` is -1 for them, and
    ``seed_rows_`` / ``reference_rows_`` / ``made_for_`` say how each was made.

    Args:
        random_state: seed of the reference choices and gaps.
        k_neighbors: k nearest neighbours in the label's bag (capped at bag size - 1).
        no_finding: count "no finding" as a label (see :mod:`cxrgan.data.label_imbalance`).
        per_feature_gap: one gap per pixel (the paper) or one per image (as SMOTE).
    """

    name = "mlsmote"

    def __init__(self, random_state: int, k_neighbors: int = DEFAULT_K_NEIGHBORS, no_finding: bool = True,
                 per_feature_gap: bool = True) -> None:
        if k_neighbors < 1:
            raise CxrganError(f"mlsmote: k_neighbors must be at least 1, got {k_neighbors}")
        self.random_state, self.k_neighbors = random_state, k_neighbors
        self.no_finding, self.per_feature_gap = no_finding, per_feature_gap

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        made = mlsmote_samples(dataset.images.reshape(len(dataset), -1), dataset.labels, self.k_neighbors,
                               np.random.default_rng(self.random_state), self.no_finding, self.per_feature_gap)
        n_new = len(made["labels"])
        synthetic = CXRDataset(images=made["features"].reshape(n_new, *dataset.images.shape[1:]),
                               labels=made["labels"], label_names=dataset.label_names,
                               meta=generated_meta(dataset.meta, n_new, source=self.name),
                               class_names=dataset.class_names)
        self.n_synthetic_ = n_new
        self.seed_rows_, self.reference_rows_ = made["seed"], made["reference"]
        _, names = self._label_sets(dataset)
        self.made_for_ = tuple(names[j] for j in made["label"])
        self.skipped_labels_ = tuple(names[j] for j in made["skipped"])
        self.sample_indices_ = np.concatenate([np.arange(len(dataset)), np.full(n_new, -1)])
        out = CXRDataset.concat([dataset, synthetic])
        self._record(dataset, out)
        return out


# ---- registry -------------------------------------------------------------------------------------------------
PER_LABEL_RESAMPLERS: dict[str, type[Balancer]] = {
    "ml-ros": MLROSBalancer,
    "ml-rus": MLRUSBalancer,
    "mlsmote": MLSMOTEBalancer,
    "lp-ros": RandomOverBalancer,  # Charte et al.'s names for the powerset samplers ``oversample`` / ``undersample``
    "lp-rus": RandomUnderBalancer,
}
for _name, _cls in PER_LABEL_RESAMPLERS.items():
    register_balancer(_name)(lambda context, cls=_cls: cls(random_state=context.random_state))
