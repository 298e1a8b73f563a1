"""The contracts every generator and balancer must pass, as public checks for third-party ones (in the spirit of
scikit-learn's ``check_estimator`` and imbalanced-learn's estimator checks).

    from cxrgan.testing import check_balancer, check_generator
    check_generator(MyGenerator)            # a GenerativeModel class, registered or not
    check_balancer(make_my_balancer)        # factory(BalanceContext) -> Balancer (a Balancer class taking one too)

``check_generator`` trains the class briefly on 64 real training images (a tiny config from its presets unless one
is given) and checks fitting, sampling (shapes, dtypes, labels, reproducibility from the torch.Generator, different
samples for another seed), the weights-only ``state_dict`` round trip, and what cxrgan's commands need of it: the
registry interface (``resolve_config``, the constructor's ``device`` / ``run_dir`` / ``step_hook``), a run
directory ``cxrgan sample`` / ``audit`` can load, and, for models of the one training loop (``TrainableModel``), a
resume after interruption that ends bit-identical. ``check_balancer`` checks ``fit_resample`` on a real imbalanced
training split: the input untouched, shapes and label names kept, only training rows, synthetic rows flagged and
named, real rows real, the promised outcome ("balanced", "weights", "identity" or "any"), the same output for the
same seed and another for another seed. Every failure is an ``AssertionError`` saying what broke.

The data: by default the first rows of the shared real data (``$CXRGAN_DATA``, else ``../shared/data``: Kermany at
64 px for binary models, the NIH ChestX-ray14 subset for multi-label ones); pass your own training split otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cxrgan.balance import BALANCERS, Balancer, BalanceContext, label_powerset
from cxrgan.balance.stages import check_stages
from cxrgan.classify import TrainConfig
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.npz import load_npz
from cxrgan.errors import CxrganError
from cxrgan.generators.base import GENERATORS, GenerativeModel
from cxrgan.generators.runs import load_run
from cxrgan.generators.settings import GeneratorSettings
from cxrgan.generators.trainable import TrainableModel
from cxrgan.recipes import KERMANY_64, NIH_SUBSET_64

# What each built-in method promises; a name not listed must give balanced output.
EXPECTED_OUTCOME = {"none": "identity", "class-weights": "weights", "repeat": "any",
                    # per-label resamplers move the label counts towards MeanIR, not to a balanced powerset
                    "ml-ros": "any", "ml-rus": "any", "mlsmote": "any",
                    # loss-side methods change training, not rows
                    "focal": "identity", "ldam-drw": "identity", "logit-adjust": "identity",
                    "logit-adjust-posthoc": "identity", "crt": "identity"}
OUTCOMES = ("balanced", "weights", "identity", "any")
TINY_SETTINGS = GeneratorSettings(steps=4, width=8)  # the presets of a generator, cut to a few steps of width 8


# ---- data --------------------------------------------------------------------------------------------------------
def small_train_split(dataset: CXRDataset, n_negative: int = 16, n_positive: int = 48) -> CXRDataset:
    """The first ``n_negative`` normal and ``n_positive`` pneumonia training rows of a real binary dataset (64 by
    default)."""
    train = dataset.split("train")
    y = train.binary_targets()
    index = np.concatenate([np.flatnonzero(y == 0)[:n_negative], np.flatnonzero(y == 1)[:n_positive]])
    return train.subset(np.sort(index))


def default_train_split(task: str = "labels") -> CXRDataset:
    """64 real training rows of the shared data: Kermany (16 normal, 48 pneumonia) for "labels", NIH (40 with a
    finding, 24 without) for "findings"."""
    path = Path(KERMANY_64 if task == "labels" else NIH_SUBSET_64)
    if not path.is_file():
        raise CxrganError(f"{path}: no such file; set CXRGAN_DATA to the shared data folder or pass a training split")
    if task == "labels":
        return small_train_split(load_npz(path))
    train = load_npz(path, target="findings").split("train")
    has_finding = (np.nan_to_num(train.labels) == 1).any(axis=1)
    return train.subset(np.sort(np.concatenate([np.flatnonzero(has_finding)[:40], np.flatnonzero(~has_finding)[:24]])))


def _raises(error: type[BaseException], action: Callable[[], Any], what: str, match: str = "") -> BaseException:
    try:
        action()
    except error as exc:
        assert match in str(exc), f"{what}: the {error.__name__} should say {match!r}, it says {exc}"
        return exc
    raise AssertionError(f"{what}: expected a {error.__name__}")


# ---- generators --------------------------------------------------------------------------------------------------
def _reload(state: dict) -> dict:
    """Round trip through torch.save / torch.load(weights_only=True), as a checkpoint on disk would."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def check_generator_contract(cls: type[GenerativeModel], config: object, train_split: CXRDataset,
                             requestable_labels: list[list[float]]) -> GenerativeModel:
    """Fit ``cls`` briefly on ``train_split`` and check sampling, reproducibility, state round trip and labels
    (``requestable_labels``: (K,) rows one may request, which the samples must then carry)."""
    unfitted = cls(config)
    _raises(CxrganError, lambda: unfitted.sample(2), "sampling an unfitted model")
    model = cls(config)
    assert model.fit(train_split) is model, "fit must return self"
    if isinstance(model, TrainableModel):
        assert model.history_ and model.history_[-1]["step"] == config.steps, "train config.steps steps of the loop"

    size, k = train_split.image_size, train_split.n_labels
    images, labels = model.sample(12, generator=torch.Generator().manual_seed(3))
    assert images.shape == (12, size, size) and images.dtype == np.uint8, f"images {images.shape} {images.dtype}"
    assert labels.shape == (12, k) and labels.dtype == np.float32, f"labels {labels.shape} {labels.dtype}"
    known = labels[~np.isnan(labels)]
    assert np.isin(known, [0.0, 1.0]).all(), "sampled labels must be 0, 1 or NaN"
    assert images.std() > 0, "samples must not be constant images"

    again, again_labels = model.sample(12, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(images, again, err_msg="the same torch.Generator seed must give the same images")
    np.testing.assert_array_equal(labels, again_labels)
    other, _ = model.sample(12, generator=torch.Generator().manual_seed(4))
    assert not np.array_equal(images, other), "different seeds must give different samples"

    empty, empty_labels = model.sample(0)
    assert empty.shape == (0, size, size) and empty_labels.shape == (0, k), "sample(0) must give empty arrays"

    restored = cls().load_state_dict(_reload(model.state_dict()))
    copy_images, copy_labels = restored.sample(12, generator=torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(images, copy_images, err_msg="a model restored from state_dict samples differently")
    np.testing.assert_array_equal(labels, copy_labels)

    for row in requestable_labels:
        got_images, got_labels = model.sample(5, labels=np.array(row, dtype=np.float32),
                                              generator=torch.Generator().manual_seed(5))
        assert got_images.shape == (5, size, size)
        np.testing.assert_array_equal(got_labels, np.tile(np.array(row, dtype=np.float32), (5, 1)),
                                      err_msg=f"requested labels {row} not carried by the samples")
    return model


def _tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested state dict, by dotted path."""
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_tensors(value, f"{prefix}{key}."))
        elif isinstance(value, (list, tuple)):
            out.update({f"{prefix}{key}.{i}": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)})
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
    return out


def _records(path: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in path.read_text().splitlines()]


def check_resume_contract(cls: type[GenerativeModel], config: object, train_split: CXRDataset,
                          tmp_path: str | Path) -> None:
    """An interrupted run resumed from its checkpoint ends bit-identical to an uninterrupted one: weights (the best
    model fit keeps and the last checkpoint), metrics.jsonl without duplicates; checkpoints load weights-only."""
    tmp_path = Path(tmp_path)
    config = dataclasses.replace(config, steps=6, checkpoint_every=2, log_every=1, quality_every=3, grid_every=3)
    full = cls(config, run_dir=tmp_path / "full").fit(train_split)

    def interrupt(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt  # after the step-4 checkpoint, with step 5 already in metrics.jsonl

    _raises(KeyboardInterrupt, lambda: cls(config, run_dir=tmp_path / "cut", step_hook=interrupt).fit(train_split),
            "the step hook's interruption")
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 4 and not saved["done"], "the last checkpoint before the interruption is step 4's"
    assert [r["step"] for r in _records(tmp_path / "cut" / "metrics.jsonl")] == [1, 2, 3, 4, 5]
    resumed = cls(config, run_dir=tmp_path / "cut").fit(train_split, resume=True)

    ours, theirs = _tensors(resumed.state_dict()), _tensors(full.state_dict())
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), f"best model: {key}"
    last = {name: torch.load(tmp_path / name / "checkpoint.pt", weights_only=True) for name in ("full", "cut")}
    assert last["cut"]["done"] and last["cut"]["step"] == 6
    for key, value in _tensors(last["full"]["networks"]).items():
        assert torch.equal(_tensors(last["cut"]["networks"])[key], value), f"last checkpoint: {key}"
    assert _records(tmp_path / "cut" / "metrics.jsonl") == _records(tmp_path / "full" / "metrics.jsonl")
    best = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    assert best["best"]["step"] in (3, 6) and cls().load_state_dict(best).data_info_ == full.data_info_


def tiny_config(cls: type[GenerativeModel], **fixed: Any) -> Any:
    """The class's config for a contract run: its CPU preset cut to ``TINY_SETTINGS``, progress bars off."""
    names = {f.name for f in dataclasses.fields(cls.config_class)}
    quiet = {k: v for k, v in (("progress", False), ("quality_every", 0), ("batch_size", 16)) if k in names}
    return cls.resolve_config(TINY_SETTINGS, **{**quiet, **fixed})


def requestable_labels(cls: type[GenerativeModel], train: CXRDataset) -> list[list[float]]:
    """Label rows a model of ``cls`` must honour when asked: its class (one-class models), both classes of a binary
    task (conditional ones), a training row's vector (label-vector ones)."""
    if cls.models_one_class:
        return [[1.0]] if train.is_binary else []
    if train.is_binary:
        return [[0.0], [1.0]]
    present = np.flatnonzero((np.nan_to_num(train.labels) == 1).any(axis=1))
    return [np.nan_to_num(train.labels[present[0]]).tolist()] if len(present) else []


def check_generator(cls: type[GenerativeModel], config: Any = None, train: CXRDataset | None = None,
                    requestable: list[list[float]] | None = None) -> GenerativeModel:
    """Check that ``cls`` fulfils the generator contract cxrgan's commands rely on (see the module docstring).

    Args:
        cls: a ``GenerativeModel`` subclass (registered under ``cls.name``, or not yet).
        config: a small config of ``cls.config_class`` (default: ``tiny_config(cls)``).
        train: a real training split of the task the class models (default: ``default_train_split``).
        requestable: label rows whose samples must carry them (default: ``requestable_labels``).

    Returns the model fitted by the check.
    """
    assert isinstance(cls, type) and issubclass(cls, GenerativeModel), f"{cls!r} is not a GenerativeModel class"
    for attribute in ("name", "config_class", "summary", "data_target", "models_one_class"):
        assert hasattr(cls, attribute), f"{cls.__name__} lacks the class attribute {attribute!r}"
    assert cls.data_target in ("labels", "findings"), f"data_target {cls.data_target!r}: 'labels' or 'findings'"
    assert dataclasses.is_dataclass(cls.config_class), "config_class must be a (frozen) dataclass"
    assert hasattr(cls.config_class, "RUN_ONLY_FIELDS"), "config_class needs RUN_ONLY_FIELDS (may change on resume)"
    assert hasattr(cls, "resolve_config"), f"{cls.__name__} needs resolve_config(settings, **fixed) (as TrainableModel)"
    config = config if config is not None else tiny_config(cls)
    assert isinstance(config, cls.config_class), f"config: a {type(config).__name__}, not a {cls.config_class.__name__}"
    assert hasattr(config, "seed"), "the config needs a seed field: balancers set it per training seed"
    if cls.models_one_class:
        assert hasattr(config, "target"), "a one-class model's config needs a target field (the class it models)"
    train = train if train is not None else default_train_split(cls.data_target)
    requestable = requestable if requestable is not None else requestable_labels(cls, train)
    model = check_generator_contract(cls, config, train, requestable)

    with tempfile.TemporaryDirectory(prefix="cxrgan-check-generator-") as folder:
        if issubclass(cls, TrainableModel):  # the one loop: checkpoints, best.pt, exact resume
            check_resume_contract(cls, config, train, folder)
            run_dir = Path(folder) / "full"
        else:
            run_dir = Path(folder) / "run"
            fitted = cls(config, device="cpu", run_dir=run_dir, step_hook=None).fit(train, resume=False)
            resumed = cls(config, device="cpu", run_dir=run_dir).fit(train, resume=True)
            np.testing.assert_array_equal(resumed.sample(4, generator=torch.Generator().manual_seed(7))[0],
                                          fitted.sample(4, generator=torch.Generator().manual_seed(7))[0],
                                          err_msg="fit(resume=True) of a finished run must give the same model")
        assert (run_dir / "checkpoint.pt").is_file(), "fit with a run_dir must write run_dir/checkpoint.pt"
        state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
        assert state.get("method") == cls.name, f"the checkpoint's 'method' must be the registry name {cls.name!r}"
        for key in ("image_size", "label_names"):
            assert key in (state.get("data_info") or {}), f"the state's data_info must record {key!r}"
        if GENERATORS.get(cls.name) is cls:  # what `cxrgan sample RUN` and `cxrgan audit RUN` load
            loaded = load_run(run_dir, device="cpu")
            images, labels = loaded.sample(4, generator=torch.Generator().manual_seed(7))
            assert images.shape == (4, train.image_size, train.image_size) and labels.shape == (4, train.n_labels)
    return model


# ---- balancers ---------------------------------------------------------------------------------------------------
def row_keys(dataset: CXRDataset) -> list[bytes]:
    """One hash per row of image bytes and label vector (NaN-safe)."""
    labels = np.nan_to_num(dataset.labels, nan=-1.0)
    return [hashlib.sha1(np.ascontiguousarray(dataset.images[i]).tobytes() + labels[i].tobytes()).digest()
            for i in range(len(dataset))]


def _snapshot(dataset: CXRDataset) -> tuple:
    weights = None if dataset.class_weights is None else dataset.class_weights.copy()
    return (np.array(dataset.images), dataset.labels.copy(), dataset.meta.copy(deep=True), weights)


def assert_same_rows(a: CXRDataset, b: CXRDataset) -> None:
    """Same images, labels and metadata, row for row."""
    assert len(a) == len(b), f"{len(a)} rows vs {len(b)}"
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)  # NaN == NaN here
    assert a.meta.astype(str).equals(b.meta.astype(str)), "the metadata differ"


def check_balancer_contract(balancer: Balancer, dataset: CXRDataset, expect: str = "balanced",
                            reseeded: Balancer | None = None, new_label_vectors: bool = False) -> CXRDataset:
    """Assert the balancer contract on a training split; return the output for method-specific checks.

    Args:
        balancer: the balancer under test.
        dataset: a training split with at least two classes.
        expect: "balanced" (every label-powerset class has the same count), "weights" (rows unchanged,
            ``class_weights`` set), "identity" (rows unchanged) or "any" (only the generic checks).
        reseeded: the same method with a different random_state; when given and the method changes rows,
            its output must differ.
        new_label_vectors: synthetic rows may carry label vectors the input lacks (real rows never may).
    """
    assert expect in OUTCOMES, expect
    before = _snapshot(dataset)
    out = balancer.fit_resample(dataset)

    # the input is not modified
    np.testing.assert_array_equal(dataset.images, before[0], err_msg="fit_resample changed the input images")
    np.testing.assert_array_equal(dataset.labels, before[1], err_msg="fit_resample changed the input labels")
    assert dataset.meta.equals(before[2]), "fit_resample changed the input metadata"
    assert (dataset.class_weights is None) == (before[3] is None)

    # shape, dtype, label columns
    assert isinstance(out, CXRDataset), f"fit_resample returned a {type(out).__name__}, not a CXRDataset"
    assert out.images.dtype == np.uint8 and out.images.shape[1:] == dataset.images.shape[1:]
    assert out.label_names == dataset.label_names and out.class_names == dataset.class_names
    assert len(out.meta) == len(out) == len(out.labels)

    # labels valid: every output label vector is one the input has
    in_vectors = {tuple(v) for v in np.nan_to_num(dataset.labels, nan=-1.0)}
    checked = ~out.synthetic if new_label_vectors else np.ones(len(out), bool)
    out_vectors = {tuple(v) for v in np.nan_to_num(out.labels[checked], nan=-1.0)}
    assert out_vectors <= in_vectors, f"new label vectors {out_vectors - in_vectors}"

    # training split only; synthetic rows are named and real rows are real
    assert set(out.meta["split"]) == {"train"}, "rows outside the training split"
    real = ~out.synthetic
    in_keys = row_keys(dataset)
    out_keys = row_keys(out)
    assert {k for k, r in zip(out_keys, real) if r} <= set(in_keys), "a row flagged real is not an input row"
    assert all(out.meta.loc[out.synthetic, "source"].astype(str) != ""), "synthetic rows need a source"
    if len(out) >= len(dataset):  # rows added after the originals, which come first and unchanged
        assert_same_rows(out.subset(np.arange(len(dataset))), dataset)
    else:  # rows removed: the kept ones stay in their original relative order
        position: dict[bytes, list[int]] = {}
        for i, key in enumerate(in_keys):
            position.setdefault(key, []).append(i)
        order = [position[k].pop(0) if position[k] else -1 for k in out_keys]
        assert -1 not in order and order == sorted(order), "removing rows must keep the others in order"

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
            np.array_equal(other.images, out.images) and out.meta.astype(str).equals(other.meta.astype(str)))
        assert changed, "another random_state gave the identical output"
    return out


def check_rejects_single_class(balancer: Balancer, dataset: CXRDataset) -> None:
    """A training split with one class is refused with a CxrganError naming the class counts."""
    codes, names = label_powerset(dataset)
    assert len(names) == 1, "give a one-class dataset"
    _raises(CxrganError, lambda: balancer.fit_resample(dataset), "a one-class training split",
            match=f"{names[0]}: {len(dataset)}")


def check_balancer(factory: Callable[[BalanceContext], Balancer] | str, train: CXRDataset | None = None,
                   expect: str | None = None, context: BalanceContext | None = None) -> CXRDataset:
    """Check that a balancer fulfils the ``fit_resample`` contract (see the module docstring).

    Args:
        factory: ``factory(BalanceContext) -> Balancer`` (the form the ``cxrgan.balancers`` entry points and
            ``register_balancer`` take; a Balancer class whose constructor takes the context is one), or a
            registered method name.
        train: a real training split with two classes (default: 64 Kermany rows, 16 normal : 48 pneumonia).
        expect: "balanced", "weights", "identity" or "any" (default: ``EXPECTED_OUTCOME`` of a built-in name, else
            "balanced").
        context: the context of the run (random_state 0 and 1 are used; default: CPU, no work folder).

    Returns the balanced output of random_state 0.
    """
    name = factory if isinstance(factory, str) else getattr(factory, "__name__", repr(factory))
    make = BALANCERS[factory] if isinstance(factory, str) else factory
    expect = expect or EXPECTED_OUTCOME.get(name, "balanced")
    train = train if train is not None else default_train_split("labels")
    context = context or BalanceContext(random_state=0)
    balancer = make(dataclasses.replace(context, random_state=0))
    assert isinstance(balancer, Balancer), f"{name} made a {type(balancer).__name__}, not a Balancer"
    out = check_balancer_contract(balancer, train, expect,
                                  reseeded=make(dataclasses.replace(context, random_state=1)))
    stages = balancer.stages(TrainConfig().epochs)
    assert check_stages(tuple(stages), TrainConfig().epochs), "stages must return the classifier's training stages"
    codes, _ = label_powerset(train)
    one_class = train.subset(np.flatnonzero(codes == np.argmax(np.bincount(codes))))
    check_rejects_single_class(make(dataclasses.replace(context, random_state=0)), one_class)
    return out
