"""ML-ROS, ML-RUS and MLSMOTE as balancers on real NIH rows and a hand-built fixture, and their imbalanced-learn face
(estimator checks, a Pipeline, the same rows as the balancers)."""

from __future__ import annotations

import numpy as np
import pytest
from imblearn.pipeline import Pipeline
from imblearn.utils.estimator_checks import estimator_checks_generator
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import FunctionTransformer

from cxrgan.balance import BalanceContext, make_balancer
from cxrgan.balance import label_powerset
from cxrgan.balance.imblearn_api import MLROS, MLRUS, MLSMOTE
from cxrgan.balance.multilabel_resample import MLROSBalancer, MLRUSBalancer, MLSMOTEBalancer
from cxrgan.data import from_arrays, load_npz
from cxrgan.data.label_imbalance import irlbl, label_sets, mean_ir
from cxrgan.errors import CxrganError


@pytest.fixture(scope="module")
def nih_train(nih_path):
    return load_npz(nih_path, target="findings").split("train")


# ---- balancers on real rows -------------------------------------------------------------------------------------
def test_ml_rus_keeps_three_quarters_where_the_powerset_keeps_58(nih_train):
    """The issue's measurement on the NIH subset (463 training rows, 14 findings), at the default P = 25 %."""
    balancer = make_balancer("ml-rus", BalanceContext(random_state=0))
    out = balancer.fit_resample(nih_train)
    assert len(out) == 348 and len(out) >= 0.75 * len(nih_train)
    assert len(make_balancer("lp-rus", BalanceContext(random_state=0)).fit_resample(nih_train)) == 58
    assert balancer.label_names_[-1] == "no finding" and len(balancer.irlbl_before_) == 15
    assert balancer.mean_ir_before_ == pytest.approx(mean_ir(label_sets(nih_train.labels, nih_train.label_names)[0]
                                                             .sum(axis=0)))
    # minority findings (IRLbl > MeanIR) keep every row; kept rows keep their order and metadata
    minority = balancer.irlbl_before_ > balancer.mean_ir_before_
    before, _ = label_sets(nih_train.labels, nih_train.label_names)
    after, _ = label_sets(out.labels, out.label_names)
    np.testing.assert_array_equal(after.sum(axis=0)[minority], before.sum(axis=0)[minority])
    assert list(out.meta["filename"]) == list(nih_train.meta["filename"].iloc[balancer.sample_indices_])
    table = balancer.imbalance_table()
    assert list(table.columns) == ["label", "before n", "before IRLbl", "ml-rus n", "ml-rus IRLbl"]
    assert table["ml-rus n"].iloc[-1] == 348


def test_ml_ros_clones_rows_of_minority_findings(nih_train):
    balancer = make_balancer("ml-ros", BalanceContext(random_state=0))
    out = balancer.fit_resample(nih_train)
    copies = balancer.sample_indices_[len(nih_train):]
    assert 0 < len(copies) <= 115 and len(out) == len(nih_train) + len(copies)
    carried, _ = label_sets(nih_train.labels, nih_train.label_names)
    minority = balancer.irlbl_before_ > balancer.mean_ir_before_
    assert carried[copies][:, minority].any(axis=1).all()  # every copy carries a minority finding
    assert balancer.mean_ir_after_ < balancer.mean_ir_before_
    np.testing.assert_array_equal(out.images[len(nih_train):], nih_train.images[copies])
    assert not out.synthetic.any()


def test_percentage_outside_0_100_is_refused():
    for cls, name in ((MLROSBalancer, "ml-ros"), (MLRUSBalancer, "ml-rus")):
        for bad in (0, 150):
            with pytest.raises(CxrganError, match=rf"^{name}: the resampling percentage must lie in \(0, 100\], "
                                                  rf"got {bad}$"):
                cls(random_state=0, percentage=bad)
    with pytest.raises(CxrganError, match=r"^mlsmote: k_neighbors must be at least 1, got 0$"):
        MLSMOTEBalancer(random_state=0, k_neighbors=0)


def test_ml_rus_that_would_empty_a_finding_is_refused():
    # 6 rows of A, 2 of B, 1 of D: at P = 100 % ML-RUS would remove every A row (see test_label_imbalance)
    labels = np.array([[1, 0, 0]] * 6 + [[0, 1, 0]] * 2 + [[0, 0, 1]], dtype=np.float32)
    images = np.random.default_rng(0).integers(0, 256, (9, 8, 8), dtype=np.uint8)
    dataset = from_arrays(images, labels, ("A", "B", "D"))
    balancer = MLRUSBalancer(random_state=0, percentage=100, no_finding=False)
    with pytest.raises(CxrganError, match=r"^ml-rus: removing 100 % of the rows would leave 'A' without a row"):
        balancer.fit_resample(dataset)


# ---- MLSMOTE on a fixture ---------------------------------------------------------------------------------------
def _mlsmote_fixture(y_rows_in_bag: int) -> tuple:
    """Findings X, Y: 4 rows carry X (the first ``y_rows_in_bag`` of them Y too), 20 - y_rows_in_bag rows Y alone,
    40 no finding. Counts X 4, Y 20, no finding 40 -> IRLbl 10, 2, 1; MeanIR 13/3: X is the one minority label."""
    labels = np.array([[1, 1]] * y_rows_in_bag + [[1, 0]] * (4 - y_rows_in_bag) + [[0, 1]] * (20 - y_rows_in_bag)
                      + [[0, 0]] * 40, dtype=np.float32)
    images = np.random.default_rng(1).integers(0, 256, (len(labels), 8, 8), dtype=np.uint8)
    return from_arrays(images, labels, ("X", "Y")), labels


@pytest.mark.parametrize("y_rows_in_bag,expected_y", [(3, 1.0), (2, 0.0)])
def test_mlsmote_labels_follow_the_ranking_rule(y_rows_in_bag, expected_y):
    dataset, labels = _mlsmote_fixture(y_rows_in_bag)
    balancer = MLSMOTEBalancer(random_state=0)  # k = 5, capped at bag size - 1 = 3: the other three X rows
    out = balancer.fit_resample(dataset)
    # one synthetic row per row of X's bag; Y was not a minority label before or after (IRLbl 40/24 < 13/3)
    assert balancer.n_synthetic_ == 4 and balancer.made_for_ == ("X",) * 4
    synthetic = out.labels[len(dataset):]
    # votes among seed + 3 neighbours (all four X rows): X 4 > 2 -> 1; Y 3 > 2 -> 1, Y 2 > 2 is false -> 0,
    # whatever the seed's own Y
    np.testing.assert_array_equal(synthetic, np.tile([1.0, expected_y], (4, 1)))
    np.testing.assert_array_equal(balancer.seed_rows_, [0, 1, 2, 3])
    assert set(balancer.reference_rows_) <= {0, 1, 2, 3} and (balancer.reference_rows_ != balancer.seed_rows_).all()
    # every pixel lies between the seed's and the reference's (each pixel its own gap), up to rounding
    low = np.minimum(dataset.images[balancer.seed_rows_], dataset.images[balancer.reference_rows_])
    high = np.maximum(dataset.images[balancer.seed_rows_], dataset.images[balancer.reference_rows_])
    assert ((out.images[len(dataset):] >= low) & (out.images[len(dataset):] <= high)).all()
    assert out.synthetic[len(dataset):].all() and set(out.meta["source"][len(dataset):]) == {"mlsmote"}


def test_mlsmote_grows_the_data_label_by_label(nih_train):
    balancer = make_balancer("mlsmote", BalanceContext(random_state=0))
    out = balancer.fit_resample(nih_train)
    # minority labels of the NIH subset: Pneumonia (5 rows), Edema (6), Pleural_Thickening (6), Hernia (1 row:
    # no neighbour, skipped); one synthetic row per bag row, bags read on the data as grown so far
    assert balancer.skipped_labels_ == ("Hernia",)
    assert sorted(set(balancer.made_for_)) == ["Edema", "Pleural_Thickening", "Pneumonia"]
    assert balancer.n_synthetic_ == len(out) - len(nih_train) >= 17
    assert (out.labels[len(nih_train):] == 1).any(axis=1).all()
    assert balancer.mean_ir_after_ < balancer.mean_ir_before_


def test_per_label_methods_on_a_binary_task(kermany_small):
    """Binary: the two classes are the labels; the minority class is cloned / interpolated."""
    train = kermany_small.split("train")  # 40 normal : 120 pneumonia; IRLbl 3 and 1, MeanIR 2
    ros = make_balancer("ml-ros", BalanceContext(random_state=0))
    out = ros.fit_resample(train)
    # normal rows are cloned until 120 / n <= 2, i.e. 60 normal rows: 20 copies (under the budget of 40)
    assert np.bincount(label_powerset(out)[0]).tolist() == [60, 120]
    assert ros.label_names_ == ("pneumonia", "normal")
    smote = make_balancer("mlsmote", BalanceContext(random_state=0))
    out = smote.fit_resample(train)
    assert smote.n_synthetic_ == 40 and (out.labels[160:] == 0).all()


# ---- the imbalanced-learn face ----------------------------------------------------------------------------------
# imbalanced-learn's sampler checks run on 2-D X, which these samplers accept as (N, F) rows. All apply except
# check_target_type, which wants multi-label y refused: supporting it is the point. The class-count checks of
# check_samplers_fit_resample / _sampling_strategy_ concern Base(Over|Under)Sampler subclasses, whose
# sampling_strategy sets the counts; ours are set by IRLbl and MeanIR, so those checks only run fit_resample.
SAMPLER_CHECKS = [
    check for sampler in (MLROS(random_state=0), MLRUS(random_state=0), MLSMOTE(random_state=0))
    for check in estimator_checks_generator(
        sampler, legacy=True, mark="xfail",
        expected_failed_checks={"check_target_type": "multi-label y is supported, not refused"})]


def _check_id(value) -> str:
    """'MLROS' for a sampler, 'check_samplers_fit' for a check (a partial of it)."""
    return type(value).__name__ if hasattr(value, "fit_resample") else getattr(value, "func", value).__name__


@pytest.mark.parametrize("estimator,check", SAMPLER_CHECKS, ids=_check_id)
def test_imbalanced_learn_estimator_checks(estimator, check):
    check(estimator)


def test_samplers_give_the_balancers_rows(nih_train):
    for sampler, name in ((MLROS(random_state=3), "ml-ros"), (MLRUS(random_state=3), "ml-rus")):
        images, labels = sampler.fit_resample(nih_train.images, nih_train.labels.astype(int))
        balancer = make_balancer(name, BalanceContext(random_state=3))
        out = balancer.fit_resample(nih_train)
        np.testing.assert_array_equal(sampler.sample_indices_, balancer.sample_indices_)
        np.testing.assert_array_equal(images, out.images)
        np.testing.assert_array_equal(labels, out.labels)
    images, labels = MLSMOTE(random_state=3).fit_resample(nih_train.images[..., None], nih_train.labels.astype(int))
    out = make_balancer("mlsmote", BalanceContext(random_state=3)).fit_resample(nih_train)
    assert images.shape == (len(out), 64, 64, 1) and images.dtype == np.uint8  # (N, H, W, C) kept
    np.testing.assert_array_equal(images[..., 0], out.images)
    np.testing.assert_array_equal(labels, out.labels)


def test_samplers_in_an_imbalanced_learn_pipeline(nih_path, kermany_small):
    flatten = FunctionTransformer(lambda x: x.reshape(len(x), -1).astype(np.float32))
    data = load_npz(nih_path, target="findings")
    train, val = data.split("train"), data.split("val")
    pipeline = Pipeline([("resample", MLRUS(random_state=0)), ("flatten", flatten),
                         ("knn", KNeighborsClassifier(n_neighbors=5))])
    pipeline.fit(train.images, train.labels.astype(int))
    assert pipeline.predict(val.images).shape == (len(val), 14)  # samplers act at fit only
    binary = Pipeline([("resample", MLSMOTE(random_state=0, per_feature_gap=False)), ("flatten", flatten),
                       ("knn", KNeighborsClassifier(n_neighbors=5))])
    k_train, k_val = kermany_small.split("train"), kermany_small.split("val")
    binary.fit(k_train.images, k_train.binary_targets())
    assert binary.named_steps["resample"].sampling_strategy_ == {0: 40}  # one synthetic normal per normal row
    assert set(binary.predict(k_val.images)) <= {0, 1}


def test_sampler_errors_are_value_errors():
    labels = np.array([[1, 0, 0]] * 6 + [[0, 1, 0]] * 2 + [[0, 0, 1]], dtype=int)  # as in test_label_imbalance
    assert irlbl(labels.sum(axis=0)).tolist() == [1.0, 3.0, 6.0]
    with pytest.raises(ValueError, match="would leave '0' without a row"):
        MLRUS(percentage=100, no_finding=False, random_state=0).fit_resample(np.zeros((9, 4, 4)), labels)
    with pytest.raises(ValueError, match="percentage"):
        MLROS(percentage=0).fit_resample(np.zeros((9, 4)), labels)
