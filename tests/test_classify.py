"""Classifier backbones (shape tests) and the training loop on real Kermany images."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from cxrgan.classify import CLASSIFIERS, TrainConfig, build_classifier, masked_bce, predict, train_classifier
from cxrgan.classify.checkpoint import CheckpointSchedule, load_checkpoint, save_checkpoint
from cxrgan.classify.small_maps import SmallMapConv2d, use_small_map_convolutions
from cxrgan.classify.scoring import macro_auc
from cxrgan.errors import CxrganError

FAST = TrainConfig(model="small-cnn", epochs=5, batch_size=16, lr=1e-3, progress=False, device="cpu")


@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("size,n_outputs", [(64, 1), (32, 14)])
def test_backbone_shapes(name, size, n_outputs):
    model = build_classifier(name, n_outputs).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)
    assert features.ndim == 4 and features.shape[0] == 2
    assert logits.shape == (2, n_outputs)


def test_resnet18_uses_standard_stride2_stem():
    model = build_classifier("resnet18", 1)
    assert model.features[0].stride == (2, 2)
    assert 11.0e6 < sum(p.numel() for p in model.parameters()) < 11.3e6  # He et al. ResNet-18, 1 input channel


@pytest.mark.parametrize("bf16", [False, True])
def test_resnet18_stem_pools_before_its_relu_with_the_same_numbers(bf16):
    """ReLU after the stem's max-pool (a quarter of the elements): outputs and every gradient equal the textbook
    order's bit for bit, ties and all-negative windows included."""
    model = build_classifier("resnet18", 1).to(memory_format=torch.channels_last)
    assert [type(m).__name__ for m in model.features[:4]] == ["SmallMapConv2d", "BatchNorm2d", "MaxPool2d", "ReLU"]
    textbook = copy.deepcopy(model)
    textbook.features[2], textbook.features[3] = textbook.features[3], textbook.features[2]
    x = torch.randn(4, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    x[0, :, :16, :16] = -3.0  # windows whose values are all negative after BatchNorm, and ties
    results = []
    for net in (textbook, model):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        (out.float() * torch.tensor([[1.0], [-2.0], [0.5], [3.0]])).sum().backward()
        results.append([out.detach(), *(p.grad for p in net.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("kernel,stride,padding,size,bias", [
    (3, 1, 1, 2, False), (3, 2, 1, 4, False), (1, 2, 0, 4, True), (3, 1, 0, 3, True),  # one matrix product
    (3, 1, 1, 4, False), (3, 2, 1, 8, True), (1, 2, 0, 8, False)])  # oneDNN, weight gradient by a product
@pytest.mark.parametrize("channels_last", [True, False])
def test_small_map_convolution_matches_the_direct_one(kernel, stride, padding, size, bias, channels_last):
    """Outputs and both gradients of a small-map convolution (one matrix product) are the direct convolution's up to
    rounding, in fp32 and under bf16 autocast, for channels-last and contiguous weights."""
    generator = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(16, 24, kernel, stride, padding, bias=bias)
    small = use_small_map_convolutions(copy.deepcopy(conv))
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    conv, small = conv.to(memory_format=memory_format), small.to(memory_format=memory_format)
    x = torch.randn(6, 16, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
    for bf16, tolerance in ((False, 1e-5), (True, 3e-2)):
        outputs = []
        for layer in (conv, small):
            layer.zero_grad()
            inputs = x.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = layer(inputs)
            (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            outputs.append((out.float(), inputs.grad, layer.weight.grad))
        assert outputs[1][0].shape == outputs[0][0].shape
        for direct, matmul in zip(*outputs):
            torch.testing.assert_close(matmul, direct, rtol=tolerance, atol=tolerance * direct.abs().max().item())


def test_small_map_convolution_forms_only_for_small_maps_on_the_cpu():
    layer = use_small_map_convolutions(torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1)))[0]
    assert type(layer) is SmallMapConv2d
    assert [layer._output_positions(torch.zeros(1, 4, side, side)) for side in (2, 4, 5)] == [4, 16, 25]
    assert layer._output_positions(torch.zeros(1, 4, 2, 2, device="meta")) == float("inf")  # other devices: their own
    model = build_classifier("resnet18", 1)
    assert sum(type(m) is SmallMapConv2d for m in model.modules()) == 20  # every convolution, same state dict keys
    assert list(model.state_dict()) == list(CLASSIFIERS["resnet18"](1).state_dict())  # checkpoints load as before


def test_masked_bce_ignores_unknown_and_applies_class_weights():
    logits = torch.tensor([[0.3, -1.0], [2.0, 0.5]])
    targets = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([0.3, 2.0, 0.5]), torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(masked_bce(logits, targets), expected)
    weights = torch.tensor([[1.0, 3.0], [1.0, 3.0]])  # positives weighted 3x
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([0.3, 2.0, 0.5]), torch.tensor([1.0, 0.0, 1.0]), reduction="none")
    assert torch.allclose(masked_bce(logits, targets, weights), (per * torch.tensor([3.0, 1.0, 3.0])).mean())


def test_macro_auc_skips_single_class_columns():
    labels = np.array([[0, 1], [1, 1], [0, np.nan], [1, 1]], dtype=np.float32)
    scores = np.array([[0.1, 0.5], [0.9, 0.5], [0.2, 0.5], [0.8, 0.5]], dtype=np.float32)
    assert macro_auc(labels, scores) == 1.0


def test_training_learns_and_is_reproducible(kermany_small):
    train, val, test = (kermany_small.split(s) for s in ("train", "val", "test"))
    first = train_classifier(train, val, FAST, seed=3)
    second = train_classifier(train, val, FAST, seed=3)
    s1, s2 = predict(first.model, test), predict(second.model, test)
    np.testing.assert_array_equal(s1, s2)
    assert first.history == [{**h, "seconds": first.history[i]["seconds"]} for i, h in enumerate(second.history)]
    assert macro_auc(test.labels, s1) > 0.7  # real pneumonia signal on 160 training images
    other = predict(train_classifier(train, val, FAST, seed=4).model, test)
    assert not np.array_equal(s1, other)


@pytest.mark.parametrize("model,bf16", [("small-cnn", False), ("resnet18", True)])
def test_resume_matches_uninterrupted_run(kermany_small, tmp_path, model, bf16):
    """Killed after the last of 2 epochs with a checkpoint every epoch (none after the last): the resumed run
    repeats epoch 2 from the epoch-1 checkpoint and ends bit-identical to the uninterrupted run (ResNet-18 in bf16:
    the default path, small-map convolutions and fused Adam included)."""
    train, val = kermany_small.split("train"), kermany_small.split("val")
    config = TrainConfig(model=model, epochs=2, batch_size=32, lr=1e-3, patience=10, progress=False, bf16=bf16,
                         device="cpu", augment="flip-affine", lr_schedule="cosine", checkpoint_seconds=0,
                         checkpoint_epochs=1)
    full = train_classifier(train, val, config, seed=1)
    checkpoint = tmp_path / "clf.pt"

    class Stop(Exception):
        pass

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train_classifier(train, val, config, seed=1, checkpoint_path=checkpoint, on_epoch=stop_after_two)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    # The checkpoint is refused for another scientific setting; the checkpoint cadence may change.
    with pytest.raises(CxrganError, match="different config"):
        train_classifier(train, val, TrainConfig(**{**config.__dict__, "epochs": 3}), seed=1,
                         checkpoint_path=checkpoint, resume=True)
    resumed = train_classifier(train, val, TrainConfig(**{**config.__dict__, "checkpoint_epochs": 3}), seed=1,
                               checkpoint_path=checkpoint, resume=True)
    assert [h["val_auc"] for h in resumed.history] == [h["val_auc"] for h in full.history]
    assert resumed.best_epoch == full.best_epoch
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_schedule_by_time_and_epochs():
    now = [0.0]
    by_time = CheckpointSchedule(seconds=60, epochs=0, first_epoch=0, clock=lambda: now[0])
    now[0] = 59.0
    assert not by_time.due(1, last=False)
    now[0] = 61.0
    assert by_time.due(2, last=False) and not by_time.due(2, last=True)  # never after the last epoch
    by_time.written(2)
    now[0] = 100.0
    assert not by_time.due(3, last=False)  # 39 s since the write
    by_epochs = CheckpointSchedule(seconds=0, epochs=3, first_epoch=2, clock=lambda: now[0])  # resumed at epoch 2
    assert [by_epochs.due(e, last=False) for e in (3, 4, 5)] == [False, False, True]
    assert not CheckpointSchedule(seconds=0, epochs=0, first_epoch=0).due(7, last=False)  # both off: never


@pytest.mark.parametrize("best_epoch", [1, 2])
def test_checkpoint_keeps_best_weights_once_or_apart(tmp_path, best_epoch):
    """The best weights are stored beside the current ones, or (best = current epoch) once, and load back exactly."""
    config = TrainConfig(model="small-cnn", progress=False, device="cpu")
    model, best = build_classifier("small-cnn", 1), build_classifier("small-cnn", 1)
    best_state = {k: v.clone() for k, v in (model if best_epoch == 2 else best).state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler, generator = torch.amp.GradScaler("cpu", enabled=False), torch.Generator().manual_seed(0)
    state = {"epoch": 2, "best_val_auc": 0.9, "best_epoch": best_epoch, "best_model": best_state, "history": []}
    save_checkpoint(tmp_path / "c.pt", model, optimizer, scheduler, scaler, generator, config, state)
    saved = torch.load(tmp_path / "c.pt", weights_only=True)
    assert (saved["best_model"] is None) == (best_epoch == 2)
    fresh = build_classifier("small-cnn", 1)
    optimizer = torch.optim.Adam(fresh.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loaded = load_checkpoint(tmp_path / "c.pt", fresh, optimizer, scheduler, scaler, generator, config)
    assert loaded["best_epoch"] == best_epoch and loaded["best_model"].keys() == best_state.keys()
    fresh.load_state_dict(build_classifier("small-cnn", 1).state_dict())  # the kept best weights are a copy
    for key, value in best_state.items():
        torch.testing.assert_close(loaded["best_model"][key], value, rtol=0, atol=0)


def test_single_class_training_split_is_refused(kermany_small):
    train, val = kermany_small.split("train"), kermany_small.split("val")
    only_pneumonia = train.subset(train.binary_targets() == 1)
    with pytest.raises(CxrganError, match="only class value"):
        train_classifier(only_pneumonia, val, FAST, seed=0)


def test_local_weights_file_loads_matching_tensors(tmp_path):
    source = build_classifier("small-cnn", 3)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    target = build_classifier("small-cnn", 1, weights_path=path)  # head differs in shape and is skipped
    torch.testing.assert_close(target.features[0].weight, source.features[0].weight)
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CxrganError, match="bad.pt"):
        build_classifier("small-cnn", 1, weights_path=tmp_path / "bad.pt")


def test_data_workers_read_every_epoch_from_one_loader_and_change_nothing(kermany_small, monkeypatch):
    """One worker process kept across epochs (one feed, persistent workers) trains exactly as the training process
    reading its own batches."""
    import cxrgan.classify.train as train_module

    feeds = []

    class CountedFeed(train_module.BatchFeed):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            feeds.append(self)

    monkeypatch.setattr(train_module, "BatchFeed", CountedFeed)
    train, val, test = (kermany_small.split(s) for s in ("train", "val", "test"))
    config = TrainConfig(**{**FAST.__dict__, "epochs": 2, "patience": 5})
    alone = train_classifier(train, val, config, seed=2)
    workers = train_classifier(train, val, TrainConfig(**{**config.__dict__, "data_workers": 1}), seed=2)
    assert len(feeds) == 2 and feeds[1]._loader.persistent_workers  # one feed per run, not one per epoch
    np.testing.assert_array_equal(predict(alone.model, test), predict(workers.model, test))
    assert [h["train_loss"] for h in alone.history] == [h["train_loss"] for h in workers.history]
