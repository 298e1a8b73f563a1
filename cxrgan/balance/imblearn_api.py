"""imbalanced-learn samplers for image arrays and multi-label targets: ML-ROS, ML-RUS and MLSMOTE outside CXRDataset.

imbalanced-learn has no multi-label resampling (requested in its issue tracker since 2017; its MLSMOTE pull request
is still open). These samplers follow its API (``fit_resample(X, y) -> (X_res, y_res)``, usable as a step of an
``imblearn.pipeline.Pipeline``) and run the same code as the ``ml-ros`` / ``ml-rus`` / ``mlsmote`` balancers, so
the same ``random_state`` gives the same rows on a dataset's arrays.

``X``: any array whose first axis is the rows, e.g. (N, H, W) or (N, H, W, C) images, or (N, F) features; its dtype
is kept (MLSMOTE rounds and clips synthetic values for integer dtypes such as uint8 images). ``y``:

* 1-D (or (N, 1)) with two classes: a binary task, whose two classes are the two labels (as ``CXRDataset`` with
  K = 1);
* 1-D with more classes: a multi-class task, one label per class (Charte et al.'s multi-label view of it);
* (N, K) 0/1 indicator: a multi-label task, the K columns plus "no finding" (rows without a label) unless
  ``no_finding=False``.

Resampled ``y`` has the input's form. ``sampling_strategy_`` maps each label (a class value, or a column index;
"no finding" is index K) to the number of rows added (cloned or synthesised) or removed that carry it.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from imblearn.base import BaseSampler
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_consistent_length, validate_data

from cxrgan.balance.multilabel_resample import DEFAULT_K_NEIGHBORS, mlsmote_samples
from cxrgan.data.label_imbalance import DEFAULT_PERCENTAGE, label_sets, ml_ros_rows, ml_rus_rows
from cxrgan.errors import CxrganError


class _LabelSampler(BaseSampler):
    """Input checks, target encoding and tags shared by the three samplers (imbalanced-learn ``BaseSampler``)."""

    _sampling_type = "bypass"  # the amount comes from the method's own rule, not from sampling_strategy
    _returns_sample_indices = True

    def __init__(self, *, no_finding: bool = True, random_state=None) -> None:
        super().__init__()  # sampling_strategy = "auto", unused ("bypass")
        self.no_finding = no_finding
        self.random_state = random_state

    def _check_X_y(self, X, y, accept_sparse=None):
        if hasattr(X, "sparse"):  # a DataFrame of sparse columns: rows of images or features are dense anyway
            X = X.sparse.to_dense()
        features = check_array(X, allow_nd=True, dtype=None)
        target = np.asarray(y)
        if target.ndim == 2 and target.shape[1] == 1:
            target = target.ravel()
        check_consistent_length(features, target)
        if type_of_target(target) not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"y must be binary, multi-class or a 0/1 multi-label indicator, "
                             f"got {type_of_target(target)}")
        validate_data(self, X=X if hasattr(X, "columns") else features, reset=True, skip_check_array=True)
        return features, target, False

    def _labels(self, y: np.ndarray) -> tuple[np.ndarray, bool]:
        """(N, K) float labels for the shared code and the ``no_finding`` flag to use with them."""
        if y.ndim == 2:
            return y.astype(np.float32), self.no_finding
        classes = np.unique(y)
        if len(classes) == 2:  # binary: one column, its two classes are the labels (the CXRDataset rule)
            return (y == classes[1]).astype(np.float32)[:, None], True
        return (y[:, None] == classes[None, :]).astype(np.float32), False

    def _label_keys(self, y: np.ndarray) -> list:
        """The ``sampling_strategy_`` key of each label column of :meth:`_labels`'s label sets."""
        if y.ndim == 2:
            return list(range(y.shape[1] + 1))
        classes = np.unique(y).tolist()
        return [classes[1], classes[0]] if len(classes) == 2 else classes

    def _generator(self) -> np.random.Generator:
        if self.random_state is None or isinstance(self.random_state, Integral):
            return np.random.default_rng(self.random_state)
        return np.random.default_rng(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _carried(self, y: np.ndarray, matrix: np.ndarray) -> dict:
        """Per label key, how many rows of ``matrix`` (the rows added or removed) carry the label."""
        keys = self._label_keys(y)
        return {keys[j]: int(count) for j, count in enumerate(matrix.sum(axis=0)) if count}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = False
        tags.target_tags.multi_output = True
        tags.sampler_tags.sample_indices = self._returns_sample_indices
        return tags


class MLROS(_LabelSampler):
    """ML-ROS (Charte et al. 2015) as an imbalanced-learn sampler (``cxrgan.data.label_imbalance.ml_ros_rows``).

    The input rows come first, then the clones; ``sample_indices_`` gives the source row of every output row.

    Args:
        percentage: at most this % of the rows is added, in (0, 100].
        no_finding: count rows without a label as the label "no finding" (multi-label ``y``).
        random_state: int, RandomState or None.
    """

    _parameter_constraints = {"percentage": [Interval(Real, 0, 100, closed="right")], "no_finding": ["boolean"],
                              "random_state": ["random_state"]}

    def __init__(self, *, percentage: float = DEFAULT_PERCENTAGE, no_finding: bool = True, random_state=None) -> None:
        super().__init__(no_finding=no_finding, random_state=random_state)
        self.percentage = percentage

    def _fit_resample(self, X, y):
        labels, no_finding = self._labels(y)
        matrix, _ = label_sets(labels, range(labels.shape[1]), no_finding)
        clones = ml_ros_rows(matrix, self.percentage, self._generator())
        self.sample_indices_ = np.concatenate([np.arange(len(X)), clones])
        self.sampling_strategy_ = self._carried(y, matrix[clones])
        return X[self.sample_indices_], y[self.sample_indices_]


class MLRUS(_LabelSampler):
    """ML-RUS (Charte et al. 2015) as an imbalanced-learn sampler (``cxrgan.data.label_imbalance.ml_rus_rows``).

    Rows carrying a minority label are kept; kept rows stay in their order and ``sample_indices_`` gives their
    input positions. A removal that would leave a label without rows is a ``ValueError``.

    Args:
        percentage: at most this % of the rows is removed, in (0, 100].
        no_finding: count rows without a label as the label "no finding" (multi-label ``y``).
        random_state: int, RandomState or None.
    """

    _parameter_constraints = MLROS._parameter_constraints

    def __init__(self, *, percentage: float = DEFAULT_PERCENTAGE, no_finding: bool = True, random_state=None) -> None:
        super().__init__(no_finding=no_finding, random_state=random_state)
        self.percentage = percentage

    def _fit_resample(self, X, y):
        labels, no_finding = self._labels(y)
        matrix, _ = label_sets(labels, range(labels.shape[1]), no_finding)
        try:
            removed = ml_rus_rows(matrix, self.percentage, self._generator(), [str(k) for k in self._label_keys(y)])
        except CxrganError as exc:  # scikit-learn's convention for bad input
            raise ValueError(str(exc)) from exc
        self.sample_indices_ = np.setdiff1d(np.arange(len(X)), removed)
        self.sampling_strategy_ = self._carried(y, matrix[removed])
        return X[self.sample_indices_], y[self.sample_indices_]


class MLSMOTE(_LabelSampler):
    """MLSMOTE (Charte et al. 2015, Knowledge-Based Systems 89) as an imbalanced-learn sampler; see
    :func:`~cxrgan.balance.multilabel_resample.mlsmote_samples` (features are the flattened rows of ``X``, labels
    of synthetic rows by the neighbours' vote). The input rows come first, then the synthetic rows.

    Args:
        k_neighbors: neighbours within a label's bag (capped at bag size - 1).
        per_feature_gap: one interpolation gap per feature (the paper) or per row (as SMOTE).
        no_finding: count rows without a label as the label "no finding" (multi-label ``y``).
        random_state: int, RandomState or None.
    """

    _returns_sample_indices = False  # synthetic rows have no source row
    _parameter_constraints = {"k_neighbors": [Interval(Integral, 1, None, closed="left")],
                              "per_feature_gap": ["boolean"], "no_finding": ["boolean"],
                              "random_state": ["random_state"]}

    def __init__(self, *, k_neighbors: int = DEFAULT_K_NEIGHBORS, per_feature_gap: bool = True,
                 no_finding: bool = True, random_state=None) -> None:
        super().__init__(no_finding=no_finding, random_state=random_state)
        self.k_neighbors = k_neighbors
        self.per_feature_gap = per_feature_gap

    def _fit_resample(self, X, y):
        labels, no_finding = self._labels(y)
        made = mlsmote_samples(X.reshape(len(X), -1), labels, self.k_neighbors, self._generator(), no_finding,
                               self.per_feature_gap)
        self.sampling_strategy_ = self._carried(y, label_sets(made["labels"], range(labels.shape[1]), no_finding)[0])
        new_X = made["features"].reshape(len(made["labels"]), *X.shape[1:])
        if y.ndim == 2:
            new_y = made["labels"].astype(y.dtype)
        else:
            keys = self._label_keys(y)
            classes = np.unique(y)
            # binary: label column 1 set -> the positive class; multi-class: the one class set by the vote
            new_y = (classes[made["labels"][:, 0].astype(int)] if len(keys) == 2
                     else classes[made["labels"].argmax(axis=1)]).astype(y.dtype)
        return np.concatenate([X, new_X]), np.concatenate([y, new_y])
