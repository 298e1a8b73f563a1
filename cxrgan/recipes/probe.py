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
from cxrgan.classify.train import masked_bce
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


def training_seconds(config: TrainConfig, train_rows: int, eval_rows: int, image_size: int, n_outputs: int,
                     trace_memory: bool = False) -> float:
    """A classifier run: every epoch trains on ``train_rows`` and scores the validation rows (``eval_rows`` counts
    validation plus the final test and validation predictions); early stopping can only make it shorter.
    ``trace_memory``: also trace its peak device memory (:func:`memory_lines`)."""
    if trace_memory:
        from cxrgan.classify.memory import classifier_memory

        remember_memory(("classifier", config.model, config.batch_size, image_size, n_outputs, config.eval_batch_size),
                        lambda: classifier_memory(config.model, n_outputs, config.batch_size, image_size,
                                                  config.eval_batch_size))
    train, predict = classifier_seconds(config.model, config.batch_size, image_size, n_outputs, config.bf16,
                                        config.device)
    return config.epochs * (train_rows * train + eval_rows * predict) + 2 * eval_rows * predict


# Which registered generator a generator-backed method trains, per seed (method-name prefix -> generator).
GENERATOR_OF = {"cdcgan": "cdcgan", "dcgan": "dcgan", "cyclegan": "cyclegan", "cgan-labelvec": "cgan-labelvec"}
_STEP_SECONDS: dict[tuple, float] = {}


def generator_of(method: str) -> str | None:
    return next((g for prefix, g in GENERATOR_OF.items() if method.startswith(prefix)), None)


def step_seconds(key: tuple, fit) -> float:
    """Seconds per optimisation step of a model: ``fit(step_hook)`` trains a few steps and calls the hook after each;
    the median gap after the first (warm-up) step, cached under ``key``."""
    if key not in _STEP_SECONDS:
        times: list[float] = []

        def tick(step: int) -> None:
            synchronize()  # the step's CUDA work is done, not just queued
            times.append(time.perf_counter())

        fit(tick)
        _STEP_SECONDS[key] = float(np.median(np.diff(times)[1:])) if len(times) > 2 else float("nan")
    return _STEP_SECONDS[key]


def probe_config(config):
    """A copy of a trainer config that trains PROBE_STEPS + 2 steps and writes nothing on the way."""
    quiet = {k: 0 for k in ("quality_every", "grid_every", "checkpoint_every") if hasattr(config, k)}
    return dataclasses.replace(config, steps=PROBE_STEPS + 2, progress=False, **quiet)


def generator_seconds(name: str, settings, dataset, device: str = "cpu", **fixed) -> float:
    """Training time of generator ``name`` under ``settings`` on ``dataset``: its steps x a probed step time; with
    the full presets (``settings.full``) also its traced peak device memory (:func:`memory_lines`)."""
    from cxrgan.generators import GeneratorSpec

    spec = GeneratorSpec.resolve(name, settings, **fixed)
    if settings.full:
        from cxrgan.generators.memory import traced_memory

        remember_memory(("generator", name, _timing_fields(spec.config), dataset.image_size),
                        lambda: traced_memory(spec, dataset.image_size, dataset.label_names, dataset.class_names))
    return spec_seconds(spec, dataset, device)


def spec_seconds(spec, dataset, device: str = "cpu") -> float:
    """Training time of the generator ``spec`` (a ``GeneratorSpec``) on ``dataset``: its steps x a probed step
    time (one probe per network, image size and batch, whatever the steps, seed or class)."""
    return generator_probe(spec, dataset, device)[0] * spec.config.steps


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
        times: list[float] = []

        def tick(step: int) -> None:
            synchronize()  # the step's CUDA work is done, not just queued
            times.append(time.perf_counter())

        model = probe.build(device=device, step_hook=tick).fit(dataset)
        step = float(np.median(np.diff(times)[1:])) if len(times) > 2 else float("nan")
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
    """A config's fields that can change its step time: not the seed or the modelled finding / class (one probe
    serves every seed and finding of a recipe; the rows a step draws are a batch, see ``_rows_key``)."""
    return tuple((k, repr(v)) for k, v in sorted(dataclasses.asdict(config).items()) if k not in ("seed", "target"))


def compare_estimates(recipe, plan) -> dict[str, float]:
    """Seconds per (method, seed) cell of a comparison: the balanced row count of each method (computed by the
    balancer itself for the ones that train no generator) times the probed classifier speed."""
    from cxrgan.balance import BalanceContext, make_balancer
    from cxrgan.recipes.compare import uses_generator

    config = recipe.compare_config
    train, val, test = recipe.train_, recipe.val_, recipe.test_
    rows = {}
    for method in config.methods:
        if uses_generator(method):
            # a generator method adds about the oversampled deficit; complement methods double the rows
            proxy = "repeat" if "complement" in method else "oversample"
            rows[method] = len(make_balancer(proxy, BalanceContext(random_state=0)).fit_resample(train))
        else:
            context = BalanceContext(random_state=0, synthetic=config.synthetic)
            rows[method] = len(make_balancer(method, context).fit_resample(train))
    eval_rows = len(val) + len(test) + sum(len(site) for site in recipe.sites_.values())
    device = str(config.train.device if config.train.device != "auto" else "cpu")
    generator_time = {g: generator_seconds(g, config.generators, train, device)
                      for g in {generator_of(m) for m in config.methods} - {None}}
    estimates, trained = {}, set()
    for cell in plan.cells:
        method, seconds = cell["method"], 0.0
        generator = generator_of(method)
        if generator and (generator, cell["seed"], method.endswith("-extra")) not in trained:  # alphas share one
            trained.add((generator, cell["seed"], method.endswith("-extra")))
            seconds += generator_time[generator]
        estimates[cell.name] = seconds + training_seconds(config.train, rows[method], eval_rows, train.image_size,
                                                          train.n_labels, trace_memory=config.generators.full)
    return estimates


def sgan_estimates(recipe, plan, labeled_rows) -> dict[str, float]:
    """Seconds per SGAN-recipe cell: steps x the probed step time of the SGAN or of its matched CNN (controls that
    train the CNN twice, such as pseudo-labelling, count twice)."""
    from cxrgan.classify.sgan import MatchedCNN, SemiSupervisedGAN

    config = recipe.config.sgan
    labeled = labeled_rows
    cnn = step_seconds(("cnn", probe_config(config)),
                       lambda hook: MatchedCNN(probe_config(config), step_hook=hook).fit(labeled, random_state=0))
    sgan = step_seconds(("sgan", probe_config(config)),
                        lambda hook: SemiSupervisedGAN(probe_config(config), step_hook=hook).fit(labeled, (),
                                                                                                 random_state=0))
    estimates = {}
    for cell in plan.cells:
        kind = cell.coords[-1][1]  # the method (sgan-scarcity) or row (sgan-domain)
        per_step = sgan if "SGAN" in str(kind).upper() else cnn * (2 if "pseudo" in str(kind) else 1)
        estimates[cell.name] = per_step * config.steps
    return estimates



def findings_estimates(recipe, plan, rows_of, generators_of) -> dict[str, float]:
    """Seconds per multi-label cell: the probed classifier on the cell's real rows (``rows_of(cell)``, the
    synthetic rows counted by the plan's rule are left out) plus the generators it trains first
    (``generators_of(cell)`` -> [(generator name, rows, fixed config fields), ...], each trained once)."""
    config = recipe.config
    device = str(config.train.device if config.train.device != "auto" else "cpu")
    eval_rows = len(recipe.val_) + len(recipe.test_)
    estimates, trained = {}, set()
    for cell in plan.cells:
        rows = rows_of(cell)
        seconds = training_seconds(config.train, len(rows), eval_rows, rows.image_size, rows.n_labels,
                                   trace_memory=config.generators.full)
        for name, gan_rows, fixed in generators_of(cell):
            key = (name, len(gan_rows), tuple(sorted(fixed.items())))
            if key not in trained:
                trained.add(key)
                seconds += generator_seconds(name, config.generators, gan_rows, device, **fixed)
        estimates[cell.name] = seconds
    return estimates
