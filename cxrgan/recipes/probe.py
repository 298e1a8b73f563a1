"""Wall-time estimates for --dry-run from a short measured probe: a few timed steps of each model on this machine."""

from __future__ import annotations

import time
from functools import lru_cache

import torch

from cxrgan.classify import TrainConfig
from cxrgan.classify.networks import build_classifier
from cxrgan.classify.train import masked_bce
from cxrgan.device import autocast, resolve_device

PROBE_STEPS = 3  # timed steps after one warm-up step


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
    started = time.perf_counter()
    for _ in range(PROBE_STEPS):
        step()
    train = (time.perf_counter() - started) / (PROBE_STEPS * batch_size)
    net.eval()
    with torch.no_grad(), autocast(dev, bf16):
        net(x)
        started = time.perf_counter()
        for _ in range(PROBE_STEPS):
            net(x)
    predict = (time.perf_counter() - started) / (PROBE_STEPS * batch_size)
    return train, predict


def training_seconds(config: TrainConfig, train_rows: int, eval_rows: int, image_size: int, n_outputs: int) -> float:
    """A classifier run: every epoch trains on ``train_rows`` and scores the validation rows (``eval_rows`` counts
    validation plus the final test and validation predictions); early stopping can only make it shorter."""
    train, predict = classifier_seconds(config.model, config.batch_size, image_size, n_outputs, config.bf16,
                                        config.device)
    return config.epochs * (train_rows * train + eval_rows * predict) + 2 * eval_rows * predict


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
            rows[method] = len(make_balancer(method, BalanceContext(random_state=0)).fit_resample(train))
    eval_rows = len(val) + len(test)
    estimates = {}
    for cell in plan.cells:
        estimates[cell.name] = training_seconds(config.train, rows[cell["method"]], eval_rows, train.image_size,
                                                train.n_labels)
    return estimates

