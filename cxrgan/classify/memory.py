"""Peak device memory of a classifier's training step and prediction batch, traced on ``meta`` tensors
(``cxrgan.memory``) as the training loop runs them: channels-last input, the masked BCE loss, Adam, fp32."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxrgan.classify.losses import masked_bce
from cxrgan.classify.networks import build_classifier
from cxrgan.memory import PeakMemory, gib, module_tensors


@dataclass(frozen=True)
class ClassifierMemory:
    """Peak device bytes of a classifier run (allocated tensors, as ``torch.cuda.max_memory_allocated`` counts)."""

    model: str  # backbone name
    image_size: int  # side of the input images
    training: int  # one optimisation step of ``batch_size`` images (weights, gradients, Adam state, activations)
    prediction: int  # one batch of ``eval_batch_size`` images scored without gradients, the training state allocated

    @property
    def peak(self) -> int:
        return max(self.training, self.prediction)

    def describe(self) -> str:
        return f"{self.model} at {self.image_size} px: training step {gib(self.training)}, " \
               f"prediction {gib(self.prediction)}"


def classifier_memory(model: str, n_outputs: int, batch_size: int, image_size: int,
                      eval_batch_size: int = 256) -> ClassifierMemory:
    """Trace one training step and one prediction batch of backbone ``model`` (fp32)."""
    with torch.device("meta"):
        net = build_classifier(model, n_outputs).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters())
    with PeakMemory("meta") as memory:
        memory.hold(module_tensors(net))
        net.train()
        x = torch.empty(batch_size, 1, image_size, image_size, device="meta").contiguous(
            memory_format=torch.channels_last)
        loss = masked_bce(net(x), torch.empty(batch_size, n_outputs, device="meta"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        del x, loss
        training = memory.peak
        memory.reset_peak()
        net.eval()
        with torch.no_grad():
            net(torch.empty(eval_batch_size, 1, image_size, image_size, device="meta").contiguous(
                memory_format=torch.channels_last))
        prediction = memory.peak
    return ClassifierMemory(model, image_size, training, prediction)
