"""Peak device memory of a generator's training steps and sampling, traced on ``meta`` tensors (``cxrgan.memory``):
what a GPU run of a spec will hold, known before it starts, for any size of network and image.

The trace runs the model's own code: its networks, built on the meta device, take one step of the one training
loop at the first step of every phase (``TrainableModel.phases``: the latent diffusion models' autoencoder, its
patch adversary and the UNet), then sample one batch, on stand-in rows of the real image size and labels (blank
images: shapes are all a trace needs). Precision is fp32 (bf16 autocast would hold about half the activations), so
the figures hold on any GPU, with or without bf16.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from cxrgan.data.dataset import CXRDataset, from_arrays
from cxrgan.generators.base import MIN_TRAIN_IMAGES
from cxrgan.generators.settings import GeneratorSpec
from cxrgan.generators.trainable import dataset_facts
from cxrgan.generators.training import Trainer
from cxrgan.memory import PeakMemory, gib, module_tensors

SAMPLE_BATCH = 256  # images a sampling call draws at once (``sample``'s default batch size)


@dataclass(frozen=True)
class GeneratorMemory:
    """Peak device bytes of one generator run (allocated tensors, as ``torch.cuda.max_memory_allocated`` counts)."""

    name: str  # registry name of the generator
    image_size: int  # side of the training images
    weights: int  # networks, buffers and EMA copies
    steps: dict[str, int]  # phase -> peak of one training step (weights, gradients, optimiser state, activations)
    sampling: int  # peak while sampling one batch mid-run (the training state stays allocated)

    @property
    def peak(self) -> int:
        return max([*self.steps.values(), self.sampling])

    def describe(self) -> str:
        steps = ", ".join(f"{phase} step {gib(size)}" for phase, size in self.steps.items())
        return f"{self.name} at {self.image_size} px: {steps}, sampling {gib(self.sampling)}"


def stand_in_rows(image_size: int, label_names: tuple[str, ...], class_names: tuple[str, ...] | None,
                  rows_per_class: int) -> CXRDataset:
    """Blank training rows of ``image_size`` with every label column half positive and every binary class
    ``rows_per_class`` strong (row i carries the bits of i: all label patterns occur)."""
    n = 2 * rows_per_class
    labels = ((np.arange(n)[:, None] >> np.arange(len(label_names))[None, :]) & 1).astype(np.float32)
    return from_arrays(np.zeros((n, image_size, image_size), np.uint8), labels, label_names, split="train",
                       class_names=class_names)


def traced_memory(spec: GeneratorSpec, image_size: int, label_names: tuple[str, ...] = ("pneumonia",),
                  class_names: tuple[str, ...] | None = ("normal", "pneumonia"),
                  sample_batch: int = SAMPLE_BATCH) -> GeneratorMemory:
    """Trace one training step of every phase of ``spec`` and one sampling batch at ``image_size`` (see the module
    docstring); ``label_names`` / ``class_names`` are those of the training rows (a one-class spec's target among
    them)."""
    rows = stand_in_rows(image_size, tuple(label_names), class_names,
                         max(spec.config.batch_size, 2 * MIN_TRAIN_IMAGES))
    once = {name: 1 for name in type(spec.config).REPEAT_FIELDS}  # repeated work has the memory of its first time
    model = GeneratorSpec(spec.name, replace(spec.config, **once)).build(device="meta")
    streams, info = model._training_streams(rows)
    model.data_info_ = {**dataset_facts(rows), **info, "fingerprint": "traced"}
    model._initialise(streams)  # on the meta device: weights are shapes only
    trainer = Trainer(model, streams)
    steps: dict[str, int] = {}
    with PeakMemory("meta") as memory:
        weights = module_tensors([*model.networks_.values(), *(model.ema_ or {}).values()])
        memory.hold(weights)
        held = memory.current
        for phase, step in model.phases().items():
            memory.reset_peak()
            trainer.step = step
            trainer.advance()
            steps[phase] = memory.peak
        trainer._window.clear()  # statistics of a traced step have no values to read
        memory.reset_peak()
        model.sample(sample_batch)
        sampling = memory.peak
    return GeneratorMemory(spec.name, image_size, held, steps, sampling)
