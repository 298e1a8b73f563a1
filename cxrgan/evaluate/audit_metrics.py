"""Distribution and memorisation statistics between two sets of feature vectors (or flattened images).

Every function takes plain (N, D) float arrays, so the metrics can be checked on constructed cases and reused with
any feature extractor; ``cxrgan.evaluate.audit`` supplies features from a CXR classifier trained on real data.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrgan.errors import CxrganError
from cxrgan.generators.quality import frechet_distance  # noqa: F401  (defined beside the training-time score)


def _check_pair(a: np.ndarray, b: np.ndarray, what: str, minimum: int = 2) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise CxrganError(f"{what}: expected two (N, D) arrays with the same D, got {a.shape} and {b.shape}")
    if len(a) < minimum or len(b) < minimum:
        raise CxrganError(f"{what}: needs at least {minimum} rows per set, got {len(a)} and {len(b)}")
    return a, b


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, n_subsets: int = 50, subset_size: int = 100,
                              random_state: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018, "Demystifying MMD GANs"): the unbiased MMD^2 estimate with the polynomial
    kernel k(x, y) = (x.y / D + 1)^3, averaged over random subsets of both sets.

    Args:
        a, b: (N, D) features.
        n_subsets: number of random subset pairs.
        subset_size: rows per subset (capped at the smaller set).
        random_state: seed of the subset draws.

    Returns:
        (mean, standard deviation) over subsets.
    """
    a, b = _check_pair(a, b, "KID")
    rng = np.random.default_rng(random_state)
    m = min(subset_size, len(a), len(b))
    dim = a.shape[1]
    # kernel matrices once; every subset estimate is then an indexing of them
    k_aa, k_bb, k_ab = ((a @ a.T) / dim + 1) ** 3, ((b @ b.T) / dim + 1) ** 3, ((a @ b.T) / dim + 1) ** 3
    estimates = []
    for _ in range(n_subsets):
        x, y = rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False)
        k_xx, k_yy = k_aa[np.ix_(x, x)], k_bb[np.ix_(y, y)]
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        estimates.append(within - 2 * k_ab[np.ix_(x, y)].mean())
    return float(np.mean(estimates)), float(np.std(estimates))


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b)) in float64 (one dense matrix: fine for tens of thousands of pairs)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def nearest_neighbours(queries: np.ndarray, reference: np.ndarray,
                       exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Index and distance of the nearest ``reference`` row for every query row (self-matches skipped if asked)."""
    distances = pairwise_distances(queries, reference)
    if exclude_self:
        np.fill_diagonal(distances, np.inf)
    index = distances.argmin(1)
    return index, distances[np.arange(len(queries)), index]


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
    Generative Models", eqs. 1-4), with k-nearest-neighbour balls around real (and, for recall, fake) samples.

    precision = fraction of fake samples inside some real k-NN ball; recall = fraction of real samples inside
    some fake k-NN ball; density = (1 / kM) sum_j #{real balls containing fake j}; coverage = fraction of real
    samples whose own ball contains at least one fake sample.
    """
    real, fake = _check_pair(real, fake, "precision/recall/density/coverage", minimum=k + 1)
    real_radius = np.sort(pairwise_distances(real, real), axis=1)[:, k]  # column 0 is the point itself
    fake_radius = np.sort(pairwise_distances(fake, fake), axis=1)[:, k]
    real_fake = pairwise_distances(real, fake)
    inside_real_balls = real_fake < real_radius[:, None]  # (real, fake)
    return {
        "precision": float(inside_real_balls.any(0).mean()),
        "recall": float((real_fake < fake_radius[None, :]).any(1).mean()),
        "density": float(inside_real_balls.sum(0).mean() / k),
        "coverage": float(inside_real_balls.any(1).mean()),
    }


def two_sample_auc(real: np.ndarray, fake: np.ndarray, n_folds: int = 5, random_state: int = 0) -> float:
    """Classifier two-sample test (Lopez-Paz & Oquab 2017, "Revisiting Classifier Two-Sample Tests"): the
    cross-validated ROC AUC of a standardised logistic regression telling ``real`` from ``fake`` rows.
    0.5 means the classifier cannot tell them apart; 1.0 means it always can.
    """
    real, fake = _check_pair(real, fake, "two-sample test", minimum=n_folds)
    x = np.concatenate([real, fake])
    y = np.concatenate([np.zeros(len(real)), np.ones(len(fake))])
    classifier = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=random_state)
    scores = cross_val_predict(classifier, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, scores))
