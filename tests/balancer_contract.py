"""The contract every balancer must pass (imbalanced-learn's estimator checks, for ``fit_resample`` on CXR data).

Use from any test module (pytest puts ``tests/`` on the import path):

    from balancer_contract import check_balancer_contract, check_rejects_single_class
    check_balancer_contract(
        make_balancer("dcgan", BalanceContext(0)), train, reseeded=make_balancer("dcgan", BalanceContext(1))
    )

``expect`` says what the output must be: "balanced" (every label-powerset class has the same count; for a binary
task, as many negatives as positives), "weights" (rows unchanged, ``class_weights`` set), "identity" (rows
unchanged) or "any" (only the generic checks).

tests/test_balance_classic.py runs it on the ``CLASSIC_BALANCERS`` and ``LONG_TAIL_METHODS``; GAN-backed balancers
run it with tiny generator settings in their own test modules (tests/test_balance_gan.py).
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from cxrgan.balance import Balancer, label_powerset
from cxrgan.data import CXRDataset
from cxrgan.errors import CxrganError

# what each method promises; a registered name not listed here must give balanced output
EXPECTED_OUTCOME = {"none": "identity", "class-weights": "weights", "repeat": "any",
                    # per-label resamplers move the label counts towards MeanIR, not to a balanced powerset
                    "ml-ros": "any", "ml-rus": "any", "mlsmote": "any",
                    # loss-side methods change training, not rows
                    "focal": "identity", "ldam-drw": "identity", "logit-adjust": "identity",
                    "logit-adjust-posthoc": "identity", "crt": "identity"}
CLASSIC_BALANCERS = ("none", "undersample", "oversample", "smote", "augment", "class-weights", "repeat")
# the long-tail methods of cxrgan.balance.multilabel_resample and cxrgan.balance.longtail
LONG_TAIL_METHODS = ("lp-ros", "lp-rus", "ml-ros", "ml-rus", "mlsmote", "focal", "ldam-drw", "logit-adjust",
                     "logit-adjust-posthoc", "crt")
# methods whose synthetic rows may carry a label vector no input row has (MLSMOTE's neighbour vote)
NEW_LABEL_VECTORS = ("mlsmote",)


def row_keys(dataset: CXRDataset) -> list[bytes]:
    """One hash per row of image bytes and label vector (NaN-safe)."""
    labels = np.nan_to_num(dataset.labels, nan=-1.0)
    return [
        hashlib.sha1(np.ascontiguousarray(dataset.images[i]).tobytes() + labels[i].tobytes()).digest()
        for i in range(len(dataset))
    ]


def _snapshot(dataset: CXRDataset) -> tuple:
    weights = None if dataset.class_weights is None else dataset.class_weights.copy()
    return (np.array(dataset.images), dataset.labels.copy(), dataset.meta.copy(deep=True), weights)


def assert_same_rows(a: CXRDataset, b: CXRDataset) -> None:
    """Same images, labels and metadata, row for row."""
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)  # NaN == NaN here
    assert a.meta.astype(str).equals(b.meta.astype(str))


def check_balancer_contract(
    balancer: Balancer,
    dataset: CXRDataset,
    expect: str = "balanced",
    reseeded: Balancer | None = None,
    new_label_vectors: bool = False,
) -> CXRDataset:
    """Assert the balancer contract on a training split; return the output for method-specific checks.

    Args:
        balancer: the balancer under test.
        dataset: a training split with at least two classes.
        expect: "balanced", "weights", "identity" or "any" (see the module docstring).
        reseeded: the same method with a different random_state; when given and the method changes rows,
            its output must differ.
        new_label_vectors: synthetic rows may carry label vectors the input lacks (real rows never may).
    """
    assert expect in ("balanced", "weights", "identity", "any"), expect
    before = _snapshot(dataset)
    out = balancer.fit_resample(dataset)

    # the input is not modified
    np.testing.assert_array_equal(dataset.images, before[0])
    np.testing.assert_array_equal(dataset.labels, before[1])
    assert dataset.meta.equals(before[2])
    assert (dataset.class_weights is None) == (before[3] is None)

    # shape, dtype, label columns
    assert isinstance(out, CXRDataset)
    assert out.images.dtype == np.uint8 and out.images.shape[1:] == dataset.images.shape[1:]
    assert out.label_names == dataset.label_names and out.class_names == dataset.class_names
    assert len(out.meta) == len(out) == len(out.labels)

    # labels valid: every output label vector is one the input has
    in_vectors = {tuple(v) for v in np.nan_to_num(dataset.labels, nan=-1.0)}
    checked = ~out.synthetic if new_label_vectors else np.ones(len(out), bool)
    out_vectors = {tuple(v) for v in np.nan_to_num(out.labels[checked], nan=-1.0)}
    assert out_vectors <= in_vectors, f"new label vectors {out_vectors - in_vectors}"

    # training split only; synthetic rows are named and real rows are real
    assert set(out.meta["split"]) == {"train"}
    real = ~out.synthetic
    in_keys = row_keys(dataset)
    out_keys = row_keys(out)
    assert {k for k, r in zip(out_keys, real) if r} <= set(in_keys), "a row flagged real is not an input row"
    assert all(out.meta.loc[out.synthetic, "source"].astype(str) != ""), "synthetic rows need a source"
    if len(out) >= len(dataset):  # rows added after the originals, which come first and unchanged
        assert_same_rows(out.subset(np.arange(len(dataset))), dataset)
    else:  # rows removed: the kept ones stay in their original relative order
        position = {}
        for i, key in enumerate(in_keys):
            position.setdefault(key, []).append(i)
        order = [position[k].pop(0) if position[k] else -1 for k in out_keys]
        assert -1 not in order and order == sorted(order)

    # the promised outcome
    codes, names = label_powerset(out)
    counts = np.bincount(codes, minlength=len(names))
    if expect == "balanced":
        assert len(set(counts.tolist())) == 1, f"unbalanced: {dict(zip(names, counts.tolist()))}"
        assert out.class_weights is None, "rows changed but class weights were kept"
    elif expect in ("weights", "identity"):
        assert_same_rows(out, dataset)
        if expect == "weights":
            assert out.class_weights is not None and out.class_weights.shape == (dataset.n_labels, 2)
            assert np.isfinite(out.class_weights).all() and (out.class_weights > 0).all()

    # reproducible with the same seed; different with another seed when rows change
    again = balancer.fit_resample(dataset)
    assert_same_rows(out, again)
    if out.class_weights is not None:
        np.testing.assert_array_equal(out.class_weights, again.class_weights)
    if reseeded is not None and expect == "balanced":
        other = reseeded.fit_resample(dataset)
        changed = len(other) != len(out) or not (
            np.array_equal(other.images, out.images) and out.meta.astype(str).equals(other.meta.astype(str))
        )
        assert changed, "another random_state gave the identical output"
    return out


def check_rejects_single_class(balancer: Balancer, dataset: CXRDataset) -> None:
    """A training split with one class is refused with a CxrganError naming the class counts."""
    codes, names = label_powerset(dataset)
    assert len(names) == 1, "give a one-class dataset"
    with pytest.raises(CxrganError, match=re.escape(f"{names[0]}: {len(dataset)}")):
        balancer.fit_resample(dataset)
