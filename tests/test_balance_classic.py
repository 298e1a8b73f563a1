"""Classic balancers on real CXR subsets: the shared contract, multi-label powerset rules, weights and bad input."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from balancer_contract import (
    CLASSIC_BALANCERS,
    EXPECTED_OUTCOME,
    LONG_TAIL_METHODS,
    NEW_LABEL_VECTORS,
    assert_same_rows,
    check_balancer_contract,
    check_rejects_single_class,
)
from sklearn.utils.class_weight import compute_class_weight

from cxrgan.balance import BALANCERS, BalanceContext, label_powerset, make_balancer
from cxrgan.data import CXRDataset, load_npz
from cxrgan.errors import CxrganError

NIH_COLUMNS = ("Effusion", "Infiltration", "Atelectasis")


@pytest.fixture(scope="module")
def kermany_train(kermany_small) -> CXRDataset:
    """160 real training images, 40 normal : 120 pneumonia."""
    return kermany_small.split("train")


@pytest.fixture(scope="module")
def nih_full_train(nih_path) -> CXRDataset:
    return load_npz(nih_path, target="findings").split("train")


@pytest.fixture(scope="module")
def nih_small(nih_full_train) -> CXRDataset:
    """Real NIH rows on three findings: up to 16 rows per label vector, the rarest vector with a single row, and
    three 'no finding' rows whose Atelectasis is made unknown (NaN, its own powerset token)."""
    columns = [nih_full_train.label_names.index(name) for name in NIH_COLUMNS]
    narrow = replace(nih_full_train, labels=nih_full_train.labels[:, columns], label_names=NIH_COLUMNS)
    codes, _ = label_powerset(narrow)
    counts = np.bincount(codes)
    rarest = int(np.argmin(counts))
    keep = np.sort(
        np.concatenate([np.flatnonzero(codes == c)[: 1 if c == rarest else 16] for c in range(len(counts))])
    )
    small = narrow.subset(keep)
    labels = small.labels.copy()
    no_finding = np.flatnonzero((labels == 0).all(axis=1))
    labels[no_finding[:3], 2] = np.nan
    return replace(small, labels=labels)


def _dataset(request, which: str) -> CXRDataset:
    return request.getfixturevalue({"binary": "kermany_train", "multilabel": "nih_small"}[which])


# ---- the contract ---------------------------------------------------------------------------------------------
def test_classic_names_registered():
    assert set(CLASSIC_BALANCERS) <= set(BALANCERS) and set(LONG_TAIL_METHODS) <= set(BALANCERS)


@pytest.mark.parametrize("which", ["binary", "multilabel"])
@pytest.mark.parametrize("name", CLASSIC_BALANCERS + LONG_TAIL_METHODS)
def test_contract(name, which, request):
    dataset = _dataset(request, which)
    out = check_balancer_contract(
        make_balancer(name, BalanceContext(random_state=0)),
        dataset,
        expect=EXPECTED_OUTCOME.get(name, "balanced"),
        reseeded=make_balancer(name, BalanceContext(random_state=1)),
        new_label_vectors=name in NEW_LABEL_VECTORS,
    )
    if name in ("smote", "augment", "mlsmote"):
        assert out.synthetic.sum() > 0
    else:
        assert not out.synthetic.any()


# Every registered method, GAN-backed ones included: the check happens before any model is trained.
@pytest.mark.parametrize("name", sorted(BALANCERS))
def test_single_class_is_refused(name, kermany_train, nih_path):
    pneumonia_only = kermany_train.subset(kermany_train.binary_targets() == 1)
    # the one method that cannot be built without a setting: CycleGAN with extra domain images
    extra = str(nih_path) if name == "cyclegan-complement-extra" else None
    balancer = make_balancer(name, BalanceContext(random_state=0, extra_data=extra))
    check_rejects_single_class(balancer, pneumonia_only)


@pytest.mark.parametrize("name", CLASSIC_BALANCERS + LONG_TAIL_METHODS)
def test_val_and_test_rows_are_refused(name, kermany_small):
    splits = r"training split only.*(val: 40.*test: 40|test: 40.*val: 40)"
    with pytest.raises(CxrganError, match=splits):
        make_balancer(name, BalanceContext(random_state=0)).fit_resample(kermany_small)


# ---- label powerset -----------------------------------------------------------------------------------------------
def test_label_powerset_names_and_nan_token(kermany_train, nih_small):
    codes, names = label_powerset(kermany_train)
    assert names == ["normal", "pneumonia"]
    np.testing.assert_array_equal(codes, kermany_train.binary_targets())
    codes, names = label_powerset(nih_small)
    counts = dict(zip(names, np.bincount(codes).tolist()))
    assert counts["no finding ?Atelectasis"] == 3
    assert counts["no finding"] == 16 - 3
    assert "Effusion+Infiltration" in counts
    assert min(counts.values()) == 1  # the single-row vector the rules must handle


# ---- method specifics -----------------------------------------------------------------------------------------
def test_undersample_keeps_original_order_and_metadata(kermany_train):
    out = make_balancer("undersample", BalanceContext(random_state=3)).fit_resample(kermany_train)
    assert len(out) == 80 and out.positives()[0] == 40
    position = {f: i for i, f in enumerate(kermany_train.meta["filename"])}
    kept = [position[f] for f in out.meta["filename"]]
    assert kept == sorted(kept)
    np.testing.assert_array_equal(out.meta["patient_id"], kermany_train.meta["patient_id"].to_numpy()[kept])
    np.testing.assert_array_equal(out.images, kermany_train.images[kept])
    # every normal image is kept (the minority sets the size)
    normal_files = set(kermany_train.meta["filename"][kermany_train.labels[:, 0] == 0])
    assert set(out.meta["filename"][out.labels[:, 0] == 0]) == normal_files


def test_repeat_doubles_every_row_and_keeps_the_class_ratio(kermany_train):
    out = make_balancer("repeat", BalanceContext(random_state=0)).fit_resample(kermany_train)
    assert len(out) == 2 * len(kermany_train) and out.positives()[0] == 2 * kermany_train.positives()[0]
    assert_same_rows(out.subset(np.arange(len(kermany_train), len(out))), kermany_train)
    assert not out.synthetic.any()


def test_oversample_adds_real_copies_with_metadata(kermany_train):
    balancer = make_balancer("oversample", BalanceContext(random_state=0))
    out = balancer.fit_resample(kermany_train)
    assert len(out) == 240 and out.positives()[0] == 120
    added = out.subset(np.arange(160, 240))
    parents = balancer.sample_indices_[160:]
    assert (kermany_train.labels[parents, 0] == 0).all()
    np.testing.assert_array_equal(added.images, kermany_train.images[parents])
    assert list(added.meta["filename"]) == list(kermany_train.meta["filename"].iloc[parents])
    assert list(added.meta["patient_id"]) == list(kermany_train.meta["patient_id"].iloc[parents])
    assert not added.synthetic.any()


def test_resampling_drops_stale_class_weights(kermany_train):
    weighted = make_balancer("class-weights", BalanceContext(random_state=0)).fit_resample(kermany_train)
    assert make_balancer("oversample", BalanceContext(random_state=0)).fit_resample(weighted).class_weights is None
    assert make_balancer("undersample", BalanceContext(random_state=0)).fit_resample(weighted).class_weights is None


def _segment_residual(x: np.ndarray, bases: np.ndarray) -> float:
    """Smallest distance from x to a segment between two of ``bases`` (flattened float images)."""
    best = np.inf
    for i in range(len(bases)):
        d = bases - bases[i]
        norms = (d * d).sum(axis=1)
        norms[i] = 1.0
        lam = np.clip(((x - bases[i]) * d).sum(axis=1) / norms, 0, 1)
        residual = np.linalg.norm(bases[i] + lam[:, None] * d - x, axis=1)
        residual[i] = np.inf
        best = min(best, float(residual.min()))
    return best


def test_smote_rows_interpolate_minority_images(kermany_train):
    balancer = make_balancer("smote", BalanceContext(random_state=0))
    out = balancer.fit_resample(kermany_train)
    synthetic = out.subset(np.arange(160, 240))
    assert synthetic.synthetic.all() and balancer.n_synthetic_ == 80
    assert (synthetic.labels[:, 0] == 0).all()
    assert set(synthetic.meta["source"]) == {"smote"} and set(synthetic.meta["patient_id"]) == {""}
    assert set(synthetic.meta["filename"]) == {""}
    normals = kermany_train.images[kermany_train.labels[:, 0] == 0].reshape(40, -1).astype(np.float64)
    rounding = 0.5 * np.sqrt(normals.shape[1])  # each pixel is rounded to a grey level
    for image in synthetic.images[:6]:
        assert _segment_residual(image.reshape(-1).astype(np.float64), normals) <= rounding


def test_smote_caps_k_neighbors_by_minority_size(kermany_train):
    y = kermany_train.binary_targets()
    tiny = kermany_train.subset(np.sort(np.r_[np.flatnonzero(y == 0)[:3], np.flatnonzero(y == 1)[:20]]))
    out = make_balancer("smote", BalanceContext(random_state=0)).fit_resample(tiny)
    assert out.synthetic.sum() == 17 and out.positives()[0] == 20
    normals = tiny.images[tiny.labels[:, 0] == 0].reshape(3, -1).astype(np.float64)
    for image in out.images[23:]:
        assert _segment_residual(image.reshape(-1).astype(np.float64), normals) <= 0.5 * 64


def test_smote_one_image_minority_is_refused(kermany_train):
    y = kermany_train.binary_targets()
    one_normal = kermany_train.subset(np.sort(np.r_[np.flatnonzero(y == 0)[:1], np.flatnonzero(y == 1)[:30]]))
    with pytest.raises(CxrganError, match=r"minority class 'normal' has 1 image.*normal: 1, pneumonia: 30"):
        make_balancer("smote", BalanceContext(random_state=0)).fit_resample(one_normal)


def test_smote_multilabel_single_row_vectors_get_real_copies(nih_small):
    codes, names = label_powerset(nih_small)
    counts = np.bincount(codes)
    single = int(np.flatnonzero(counts == 1)[0])
    balancer = make_balancer("smote", BalanceContext(random_state=0))
    out = balancer.fit_resample(nih_small)
    out_codes, out_names = label_powerset(out)
    assert out_names == names and set(np.bincount(out_codes).tolist()) == {int(counts.max())}
    rows = np.flatnonzero(out_codes == single)
    assert not out.synthetic[rows].any()  # copies of the one real row, not interpolations
    source_row = np.flatnonzero(codes == single)[0]
    assert (out.images[rows] == nih_small.images[source_row]).all()
    assert set(out.meta["patient_id"].iloc[rows]) == {nih_small.meta["patient_id"].iloc[source_row]}
    synthetic_names = {names[c] for c in out_codes[out.synthetic]}
    assert synthetic_names == {names[c] for c in range(len(names)) if 1 < counts[c] < counts.max()}


def test_class_weights_binary_match_sklearn(kermany_train):
    out = make_balancer("class-weights", BalanceContext(random_state=0)).fit_resample(kermany_train)
    np.testing.assert_allclose(out.class_weights, [[160 / (2 * 40), 160 / (2 * 120)]], rtol=1e-6)


def test_class_weights_multilabel_per_column(nih_full_train, nih_small):
    out = make_balancer("class-weights", BalanceContext(random_state=0)).fit_resample(nih_small)
    for j in range(3):
        known = nih_small.labels[:, j][~np.isnan(nih_small.labels[:, j])].astype(int)
        expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=known)
        np.testing.assert_allclose(out.class_weights[j], expected, rtol=1e-6)
    # a column without positives (Hernia once its one case is removed) has nothing to rebalance
    hernia = nih_full_train.label_names.index("Hernia")
    no_hernia = nih_full_train.subset(nih_full_train.labels[:, hernia] != 1)
    weights = make_balancer("class-weights", BalanceContext(random_state=0)).fit_resample(no_hernia).class_weights
    np.testing.assert_array_equal(weights[hernia], [1.0, 1.0])
    assert weights.shape == (14, 2) and (weights[:, 1] > weights[:, 0]).sum() == 13


def test_undersample_all_findings_keeps_one_row_per_label_vector(nih_full_train):
    """The documented powerset rule on NIH's 14 findings: single-member vectors set the size to one."""
    codes, names = label_powerset(nih_full_train)
    out = make_balancer("undersample", BalanceContext(random_state=0)).fit_resample(nih_full_train)
    out_codes, out_names = label_powerset(out)
    assert len(out) == len(names) and out_names == names
