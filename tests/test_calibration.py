"""Null calibration on real runs: 'none' against itself on disjoint seeds must rarely be called significant."""

from __future__ import annotations

import pytest

from cxrgan.classify import TrainConfig
from cxrgan.errors import CxrganError
from cxrgan.evaluate.calibration import calibrate, null_splits
from cxrgan.engine.spec import RunSpec
from cxrgan.recipes.compare import CompareConfig, run_compare
from cxrgan.engine import Results


def test_null_splits_list_each_unordered_split_once():
    splits = null_splits(list(range(8)))
    assert len(splits) == 35  # C(8, 4) / 2
    assert len({frozenset(map(frozenset, split)) for split in splits}) == 35
    assert all(set(a).isdisjoint(b) and len(a) == len(b) == 4 for a, b in splits)
    with pytest.raises(CxrganError, match="even number"):
        null_splits([0, 1, 2])


def test_primary_test_holds_its_level_on_real_null_runs(kermany_path, tmp_path):
    """Eight seeds of a small CNN on 5 % of Kermany's training split, 2 epochs, bf16 as the recipes train: 35 null
    comparisons of 4 vs 4."""
    config = CompareConfig(run=RunSpec(str(kermany_path), seeds=8), methods=("none",), train_fraction=0.05,
                           train=TrainConfig(model="small-cnn", epochs=2, batch_size=32, lr=1e-3, progress=False,
                                             device="cpu", bf16=True))
    run_dir = run_compare(config, tmp_path, progress=False)
    results = Results(run_dir)
    scores = {s: v[:, 0] for s, v in results.seed_scores("test", method="none").items()}
    calibration = calibrate(results.labels["test"][:, 0], scores)
    assert calibration.n_splits == 35
    # the bar: p >= 0.05 in at least 90 % of null comparisons
    assert calibration.false_positive_rate("primary") <= 0.10
    assert set(calibration.pvalues) == {"primary", "paired_t", "delong_ensemble", "delong_bonferroni"}
