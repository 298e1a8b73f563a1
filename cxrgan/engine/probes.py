"""Wall-time estimates for --dry-run from a short measured probe: a few timed steps of each model on this machine;
with --full, the peak device memory of each model's steps, traced on meta tensors (``cxrgan.memory``)."""

from __future__ import annotations

import dataclasses
import time
from functools import lru_cache

import numpy as np
import torch

from cxrgan.classify import TrainConfig
from cxrgan.classify.networks import build_classifier
from cxrgan.classify.losses import masked_bce
from cxrgan.device import autocast, resolve_device, synchronize
from cxrgan.memory import gib

PROBE_STEPS = 3  # timed steps after one warm-up step
PROBE_SAMPLES = 64  # images of the timed sampling batch
MEMORY_WARNING_GIB = 20  # a traced peak above this does not fit a 24 GB GPU once its context and caches are added
_MEMORY: dict[tuple, object] = {}  # traced peak memory of every model probed since the last memory_lines()


def remember_memory(key: tuple, trace) -> None:
    """Trace a model's peak memory once per ``key`` (``trace()`` returns a ``GeneratorMemory`` / ``ClassifierMemory``)."""
    if key not in _MEMORY:
        _MEMORY[key] = trace()


def memory_lines() -> list[str]:
    """The dry run's lines on the traced peak device memory of the models probed since the last call."""
    traced = list(_MEMORY.values())
    _MEMORY.clear()
    if not traced:
        return []
    lines = ["peak device memory (fp32; allocated tensors, as torch.cuda.max_memory_allocated counts; traced on meta "
             "tensors, the CUDA context and allocator caches come on top):"]
    for memory in traced:
        warning = f"  MORE THAN {MEMORY_WARNING_GIB} GiB" if memory.peak > MEMORY_WARNING_GIB * 2 ** 30 else ""
        lines.append(f"  {memory.describe()}{warning}")
    lines.append(f"  largest: {gib(max(m.peak for m in traced))}")
    return lines


@lru_cache(maxsize=None)
def classifier_seconds(model: str, batch_size: int, image_size: int, n_outputs: int, bf16: bool,
                       device: str) -> tuple[float, float]:
    """(seconds per training image, seconds per predicted image) of a classifier, timed on random images."""
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    net = build_classifier(model, n_outputs).to(dev, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch_size, 1, image_size, image_size, generator=generator).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)
    y = (torch.rand(batch_size, n_outputs, generator=generator) < 0.5).float().to(dev)

    def step() -> None:
        with autocast(dev, bf16):
            logits = net(x)
        loss = masked_bce(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    net.train()
    step()
    synchronize(dev)  # CUDA runs kernels asynchronously: time their work, not their launches
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    synchronize(dev)
    train = (time.perf_counter() - started) / (PROBE_STEPS * batch_size)
    net.eval()
    with torch.no_grad(), autocast(dev, bf16):
        net(x)
        synchronize(dev)
        started = time.perf_counter()
        for _ in range(PROBE_STEPS):
            net(x)
        synchronize(dev)
    predict = (time.perf_counter() - started) / (PROBE_STEPS * batch_size)
    return train, predict


def training_seconds(config: TrainConfig, train_images: int, eval_rows: int, image_size: int, n_outputs: int,
                     trace_memory: bool = False) -> float:
    """A classifier run: ``train_images`` training images over all its stages, and every epoch of its main stage
    scores the validation rows (``eval_rows`` counts validation plus the final test and validation predictions);
    early stopping can only make it shorter. ``trace_memory``: also trace its peak device memory
    (:func:`memory_lines`)."""
    if trace_memory:
        from cxrgan.classify.memory import classifier_memory

        remember_memory(("classifier", config.model, config.batch_size, image_size, n_outputs, config.eval_batch_size),
                        lambda: classifier_memory(config.model, n_outputs, config.batch_size, image_size,
                                                  config.eval_batch_size))
    train, predict = classifier_seconds(config.model, config.batch_size, image_size, n_outputs, config.bf16,
                                        config.device)
    return train_images * train + (config.epochs + 2) * eval_rows * predict


_STEP_SECONDS: dict[tuple, float] = {}


def step_seconds(key: tuple, fit) -> float:
    """Seconds per optimisation step of a model: ``fit(step_hook)`` trains a few steps and calls the hook after each;
    the median gap after the first (warm-up) step, cached under ``key``."""
    if key not in _STEP_SECONDS:
        _STEP_SECONDS[key] = _timed_steps(fit)[0]
    return _STEP_SECONDS[key]


def _timed_steps(fit) -> tuple[float, object]:
    """(median seconds between the steps after the first, what ``fit(step_hook)`` returned)."""
    times: list[float] = []

    def tick(step: int) -> None:
        synchronize()  # the step's CUDA work is done, not just queued
        times.append(time.perf_counter())

    fitted = fit(tick)
    return (float(np.median(np.diff(times)[1:])) if len(times) > 2 else float("nan")), fitted


def probe_config(config):
    """A copy of a trainer config that trains PROBE_STEPS + 2 steps and writes nothing on the way."""
    quiet = {k: 0 for k in ("quality_every", "grid_every", "checkpoint_every") if hasattr(config, k)}
    return dataclasses.replace(config, steps=PROBE_STEPS + 2, progress=False, **quiet)


def generator_seconds(spec, dataset, device: str = "cpu", trace_memory: bool = False) -> float:
    """Training time of the generator ``spec`` (a ``GeneratorSpec``) on ``dataset``: its steps x a probed step
    time, plus the samples of its fidelity scores (``quality_every``) at the probed sampling speed. One probe serves
    every spec that differs only in fields that cannot change a step's time (the seed, the modelled class or
    finding, settings used only at sampling time such as alpha) and every training set whose batches are alike
    (``_rows_key``). ``trace_memory`` (the full presets): also its traced peak device memory (:func:`memory_lines`)."""
    if trace_memory:
        from cxrgan.generators.memory import traced_memory

        remember_memory(("generator", spec.name, _timing_fields(spec.config), dataset.image_size),
                        lambda: traced_memory(spec, dataset.image_size, dataset.label_names, dataset.class_names))
    step, per_image = generator_probe(spec, dataset, device)
    every = getattr(spec.config, "quality_every", 0)
    scores = spec.config.steps // every if every else 0
    return step * spec.config.steps + scores * getattr(spec.config, "quality_images", 0) * per_image


def sample_seconds(spec, dataset, device: str = "cpu") -> float:
    """Seconds per image drawn from the generator ``spec`` trained on ``dataset`` (probed with its step time)."""
    return generator_probe(spec, dataset, device)[1]


_GENERATOR_PROBES: dict[tuple, tuple[float, float]] = {}


def generator_probe(spec, dataset, device: str = "cpu") -> tuple[float, float]:
    """(seconds per training step, seconds per sampled image) of the generator ``spec`` on ``dataset``: a probe
    model trains PROBE_STEPS + 2 steps (the median gap after the first), then draws one timed batch of
    PROBE_SAMPLES images after a warm-up draw. Cached per network, image size and batch."""
    from cxrgan.generators import GeneratorSpec

    probe = GeneratorSpec(spec.name, probe_config(spec.config))
    key = (spec.name, _timing_fields(probe.config), _rows_key(probe.config, dataset), device)
    if key not in _GENERATOR_PROBES:
        step, model = _timed_steps(lambda hook: probe.build(device=device, step_hook=hook).fit(dataset))
        generator = torch.Generator().manual_seed(0)
        model.sample(4, generator=generator)
        synchronize()
        started = time.perf_counter()
        model.sample(PROBE_SAMPLES, generator=generator)
        synchronize()
        _GENERATOR_PROBES[key] = (step, (time.perf_counter() - started) / PROBE_SAMPLES)
    return _GENERATOR_PROBES[key]


def _rows_key(config, dataset) -> tuple:
    """What of a training set can change a generator's step time: the image size and, for a binary task, a batch
    smaller than the configured one (a batch is capped at a stream's rows: a one-class generator of 25 minority
    images takes batches of 25). Sets whose smaller class fills a batch share one probe."""
    if not dataset.is_binary:
        return (dataset.images.shape[1:],)
    smaller = int(np.bincount(dataset.binary_targets(), minlength=2).min())
    return dataset.images.shape[1:], min(getattr(config, "batch_size", smaller), smaller)


def _timing_fields(config) -> tuple:
    """A config's fields that can change its step time or memory: those training depends on, but not the seed or
    the modelled finding / class (one probe serves every seed, finding and alpha of a recipe; the rows a step draws
    are a batch, see ``_rows_key``)."""
    from cxrgan.generators.trainer_config import training_record

    return tuple((k, repr(v)) for k, v in sorted(training_record(config).items()) if k not in ("seed", "target"))
