"""Multi-label GAN balancers: the 15 % rule's minimum, label-vector sampling, rare-finding choice, contracts."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from balancer_contract import check_balancer_contract
from generator_contract import TINY, check_generator_contract
from cxrgan.balance import BALANCERS, BalanceContext, LabelVectorCGAN, RareFindingDCGAN, choose_rare_findings, make_balancer
from cxrgan.balance.finding_plans import minimum_synthetic_count, plan_label_rows, plan_label_vectors, sample_label_vectors
from cxrgan.balance.multilabel import LabelVectorCopies, RareFindingCopies
from cxrgan.data import load_npz
from cxrgan.errors import CxrganError
from cxrgan.generators import CDCGAN, DCGAN, CDCGANConfig, DCGANConfig, GeneratorSettings, LabelVectorConfig


@pytest.fixture(scope="module")
def nih(nih_path):
    return load_npz(nih_path, target="findings")


@pytest.fixture(scope="module")
def nih_train(nih):
    return nih.split("train")


def _brute_force_one(n_rows: int, n_positive: int, t: Fraction) -> int:
    n = 0
    while Fraction(n_positive + n, n_rows + n) < t:
        n += 1
    return n


@pytest.mark.parametrize("threshold", [0.15, 0.1, 0.5, 1 / 3])
def test_closed_form_is_the_exact_minimum_for_one_finding(threshold):
    t = Fraction(str(threshold))
    for n_rows in (1, 7, 20, 100, 463):
        for n_positive in sorted({0, 1, 5, n_rows // 10, n_rows // 6, n_rows}):
            if n_positive > n_rows:
                continue
            assert minimum_synthetic_count(n_rows, n_positive, threshold) == _brute_force_one(n_rows, n_positive, t)
    # the worked example of the docstring: 5 of 100 need 12 images (17 / 112 >= 15 % but 16 / 111 < 15 %)
    assert minimum_synthetic_count(100, 5, 0.15) == 12


def _first_feasible(n_rows: int, counts: list[int], t: Fraction) -> int:
    """Smallest M with sum_q max(0, ceil(t (N + M) - c_q)) <= M (disjoint findings)."""
    m = 0
    while sum(max(0, math.ceil(t * (n_rows + m) - c)) for c in counts) > m:
        m += 1
    return m


@pytest.mark.parametrize("seed", range(4))
def test_greedy_plan_is_minimal_when_findings_do_not_co_occur(seed):
    rng = np.random.default_rng(seed)
    n_rows, k = int(rng.integers(20, 120)), 4
    labels = np.zeros((n_rows, k), np.float32)
    chosen = [0, 1, 2]
    for j in chosen:  # disjoint rare findings, each in a few rows; column 3 is a common co-finding
        labels[rng.choice(np.flatnonzero(labels[:, :3].sum(1) == 0), int(rng.integers(1, 6)), replace=False), j] = 1
    labels[:, 3] = rng.random(n_rows) < 0.4
    vectors, drawn_for = plan_label_vectors(labels, chosen, 0.15, np.random.default_rng(0))
    counts = labels[:, chosen].sum(0).astype(int).tolist()
    assert len(vectors) == _first_feasible(n_rows, counts, Fraction("0.15"))
    combined = np.concatenate([labels, vectors])
    assert (combined[:, chosen].sum(0) >= 0.15 * len(combined) - 1e-9).all()
    for j in chosen:  # every vector drawn for a finding carries it
        assert (vectors[drawn_for == j, j] == 1).all()
    # one finding alone: the closed form
    single, _ = plan_label_vectors(labels, [0], 0.15, np.random.default_rng(1))
    assert len(single) == minimum_synthetic_count(n_rows, counts[0], 0.15)


def test_plan_with_co_occurrence_reaches_threshold_and_each_image_was_needed(nih_train):
    columns = [nih_train.label_names.index(f) for f in ("Fibrosis", "Nodule", "Mass")]
    vectors, drawn_for = plan_label_vectors(nih_train.labels, columns, 0.15, np.random.default_rng(0))
    labels = np.nan_to_num(nih_train.labels)
    combined = np.concatenate([labels, vectors])
    shares = combined[:, columns].mean(0)
    assert (shares >= 0.15).all()
    # without the last image the finding it was drawn for is below the threshold
    before = combined[:-1]
    last = list(columns).index(int(drawn_for[-1]))
    assert before[:, columns[last]].sum() < 0.15 * len(before)
    with pytest.raises(CxrganError, match="cannot each reach"):
        plan_label_vectors(nih_train.labels, columns, 0.34, np.random.default_rng(0))


def test_label_vector_sampling_preserves_co_occurrence(nih_train):
    """Uniform draws from L_p reproduce the joint distribution of L_p's label patterns (chi-square), while
    drawing each other finding independently from its marginal within L_p does not."""
    labels = np.nan_to_num(nih_train.labels)
    p = nih_train.label_names.index("Infiltration")
    pool = labels[labels[:, p] == 1]
    rng = np.random.default_rng(0)
    n = 4000
    drawn = sample_label_vectors(labels, p, n, rng)
    assert (drawn[:, p] == 1).all()
    patterns, expected_counts = np.unique(pool, axis=0, return_counts=True)
    keys = {tuple(row): i for i, row in enumerate(patterns)}
    observed = np.bincount([keys[tuple(row)] for row in drawn], minlength=len(patterns))
    assert observed.sum() == n, "a drawn vector is not a real L_p pattern"
    expected = expected_counts / expected_counts.sum() * n
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    # pairwise co-occurrence rates match L_p's within sampling error
    real_pairs = pool.T @ pool / len(pool)
    drawn_pairs = drawn.T @ drawn / n
    assert np.abs(real_pairs - drawn_pairs).max() < 4 * np.sqrt(0.25 / n)
    # the counterfactual: drawing each finding independently from its L_p marginal makes label vectors that no
    # real row has (here about 18 % of draws), which the pattern test above would reject outright
    independent = (rng.random((n, labels.shape[1])) < pool.mean(0)).astype(np.float32)
    assert np.mean([tuple(row) not in keys for row in independent]) > 0.1


def test_choose_rare_findings_by_training_frequency_with_a_floor(nih):
    train = nih.split("train")
    # training positives: Fibrosis 17, Mass 18, Pneumothorax 18, Nodule 19, ... (the test split is never consulted)
    assert choose_rare_findings(train, 3, 16) == ("Fibrosis", "Mass", "Pneumothorax")
    assert choose_rare_findings(train, 2, 19) == ("Nodule", "Consolidation")
    with pytest.raises(CxrganError, match="no finding has >= 500"):
        choose_rare_findings(train, 3, 500)
    with pytest.raises(CxrganError, match="multi-label"):
        choose_rare_findings(_binary(train), 3)


def _binary(train):
    from cxrgan.data import from_arrays

    return from_arrays(train.images[:4], np.array([0, 1, 0, 1]), ["x"])


def test_multilabel_generator_contract(nih_train):
    """Both generators on 14-finding data: the cDCGAN takes requested multi-hot vectors, the DCGAN one finding."""
    # one pass over the 463 rows (28 steps): after 4 the live G's BatchNorm statistics still make a flat image
    check_generator_contract(CDCGAN, CDCGANConfig(embed_dim=4, **{**TINY, "steps": 28}), nih_train,
                             [np.eye(14)[4].tolist(), (np.eye(14)[4] + np.eye(14)[11]).tolist()])
    # EMA with re-estimated BatchNorm statistics: 4 steps leave the live G's running statistics near their
    # initial values, where its outputs saturate to almost the same dark image for every z
    model = check_generator_contract(DCGAN, DCGANConfig(target="Fibrosis", ema_decay=0.9, **TINY), nih_train, [])
    _, labels = model.sample(3)
    assert (labels[:, 11] == 1).all() and np.isnan(np.delete(labels, 11, axis=1)).all()


def test_label_vector_cgan_balancer(nih_train, tmp_path):
    findings = ("Fibrosis", "Nodule", "Mass")

    def make(seed):
        return LabelVectorCGAN(LabelVectorConfig(embed_dim=4, **TINY), findings, 0.15, work_dir=tmp_path, random_state=seed)

    balancer = make(0)
    out = check_balancer_contract(balancer, nih_train, expect="any", reseeded=make(1))
    columns = [nih_train.label_names.index(f) for f in findings]
    synthetic = out.subset(out.synthetic)
    assert len(synthetic) == len(balancer.vectors_) > 0
    assert (out.labels[:, columns].sum(0) >= 0.15 * len(out)).all()
    np.testing.assert_array_equal(synthetic.labels, balancer.vectors_)
    table = balancer.table_.set_index("finding")
    assert table.loc["all rows", "generated for it"] == len(synthetic)
    assert (table.loc[list(findings), "combined %"] >= 15).all()
    assert set(synthetic.meta["source"]) == {"cgan-labelvec"}
    assert len(list((tmp_path / "gan").iterdir())) == 1  # the contract's two calls share seed 0's cached generator
    other = make(1).fit_resample(nih_train)
    assert not np.array_equal(other.images[len(nih_train):][:5], synthetic.images[:5])
    with pytest.raises(CxrganError, match="unknown finding"):
        LabelVectorCGAN(LabelVectorConfig(**TINY), ("Nope",), model=balancer.model_).fit_resample(nih_train)


def test_rare_finding_dcgan_balancer(nih_train):
    findings = ("Fibrosis", "Nodule")

    def make(seed):
        return RareFindingDCGAN(DCGANConfig(**TINY), findings, ratio=0.25, random_state=seed)

    balancer = make(0)
    out = check_balancer_contract(balancer, nih_train, expect="any", reseeded=make(1))
    synthetic = out.subset(out.synthetic)
    for finding in findings:
        j = nih_train.label_names.index(finding)
        positives, negatives = int(nih_train.positives()[j]), int((nih_train.labels[:, j] == 0).sum())
        assert balancer.counts_[finding] == math.ceil(0.25 * negatives) - positives
        assert set(balancer.models_[finding].data_info_["target_name"] for _ in [0]) == {finding}
    assert len(synthetic) == sum(balancer.counts_.values())
    # every synthetic row carries the finding it was generated for, and a real L_p vector otherwise
    for j, row in zip(balancer.drawn_for_, synthetic.labels):
        assert row[j] == 1


def test_count_matched_copies_add_the_gan_rows_label_vectors_with_real_images(nih_train):
    """The controls add exactly the rows whose label vectors the GAN methods draw for the same seed: the same count
    and labels, each with its own real image."""
    findings = ("Fibrosis", "Nodule", "Mass")
    copies = LabelVectorCopies(findings, 0.15, random_state=2)
    out = check_balancer_contract(copies, nih_train, expect="any", reseeded=LabelVectorCopies(findings, 0.15, random_state=3))
    columns = [nih_train.label_names.index(f) for f in findings]
    rows, drawn_for = plan_label_rows(nih_train.labels, columns, 0.15, np.random.default_rng(2))
    vectors, _ = plan_label_vectors(nih_train.labels, columns, 0.15, np.random.default_rng(2))  # cgan-labelvec's draws
    added = out.subset(np.arange(len(nih_train), len(out)))
    assert len(added) == len(rows) > 0 and not out.synthetic.any()
    np.testing.assert_array_equal(added.labels, vectors)
    np.testing.assert_array_equal(added.images, nih_train.images[rows])
    np.testing.assert_array_equal(copies.drawn_for_, drawn_for)
    assert (copies.table_.set_index("finding").loc[list(findings), "combined %"] >= 15).all()

    rare = RareFindingCopies(("Fibrosis", "Nodule"), ratio=0.25, random_state=0)
    out = check_balancer_contract(rare, nih_train, expect="any",
                                  reseeded=RareFindingCopies(("Fibrosis", "Nodule"), ratio=0.25, random_state=1))
    rng, added = np.random.default_rng(0), out.subset(np.arange(len(nih_train), len(out)))
    start = 0
    for finding in ("Fibrosis", "Nodule"):  # dcgan-rare's counts and, in order, its label-vector draws
        j = nih_train.label_names.index(finding)
        n = math.ceil(0.25 * int((nih_train.labels[:, j] == 0).sum())) - int(nih_train.positives()[j])
        assert rare.counts_[finding] == n > 0
        np.testing.assert_array_equal(added.labels[start:start + n], sample_label_vectors(nih_train.labels, j, n, rng))
        start += n
    assert start == len(added) and not out.synthetic.any()


def test_registry_factories():
    assert {"cgan-labelvec", "dcgan-rare", "labelvec-copies", "rare-copies"} <= set(BALANCERS)
    assert isinstance(make_balancer("labelvec-copies", BalanceContext(3)), LabelVectorCopies)
    assert make_balancer("rare-copies", BalanceContext(3)).random_state == 3
    a = make_balancer("cgan-labelvec", BalanceContext(3, generators=GeneratorSettings(steps=7, width=8)))
    assert isinstance(a, LabelVectorCGAN) and a.config.ngf == 8 and a.config.steps == 7
    assert a.generator_spec().name == "cgan-labelvec" and a.generator_spec().config.seed == 3
    b = make_balancer("dcgan-rare", BalanceContext(3))
    assert isinstance(b, RareFindingDCGAN) and b.config.steps == DCGAN.cpu_preset["steps"] and b.config.bf16
    assert b.generator_spec("Nodule").config.target == "Nodule"


def test_regimes_are_nested_patient_level_and_keep_rare_findings(nih_train):
    """The data regimes of cgan-regimes: each smaller subset lies inside the larger ones, no patient is split,
    and every finding's positives shrink with the rows (multi-label stratification on the rarest finding)."""
    from cxrgan.data import nested_fractions

    regimes = nested_fractions(nih_train, (0.1, 0.5, 1.0), random_state=0)
    files = {f: set(r.meta["filename"]) for f, r in regimes.items()}
    assert files[0.1] <= files[0.5] <= files[1.0] == set(nih_train.meta["filename"])
    for fraction, regime in regimes.items():
        inside = set(regime.meta["patient_id"])
        outside = set(nih_train.meta["patient_id"]) - inside
        assert not inside & outside
        share = len(regime) / len(nih_train)
        full = nih_train.positives()
        common = full >= 15
        # patients with several images of one finding keep this loose (Fibrosis: 6 of 17 positives in the 10 % regime)
        assert np.all(np.abs(regime.positives()[common] / full[common] - share) < 0.3), (fraction, share)
