"""Decoupled classifier re-training (cRT): class-aware row sampling and a fresh head over a frozen backbone.

Kang, Xie, Rohrbach, Yan, Gordo, Feng and Kalantidis (2020), "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR, classifier re-training (cRT): train the whole network on the natural (instance-balanced)
distribution, then re-initialise the classifier and train it alone, with the representation fixed, on
class-balanced sampling. Holste et al. (2022) found cRT the best of the long-tail fixes on NIH-CXR-LT.

Class-balanced sampling for multi-label rows. A row can carry several findings, so "pick a class, then a row of
it" is defined on the labels of :func:`cxrgan.data.label_imbalance.label_sets`, the findings plus "no finding":
each draw picks one of these labels uniformly, then a row carrying it uniformly (class-aware sampling, Shen, Lin
and Huang 2016, "Relay Backpropagation for Effective Learning of Deep Convolutional Neural Networks", ECCV; used
for multi-label long-tailed data by Wu, Huang, Zhang, Li and Lin 2020, "Distribution-Balanced Loss for Multi-Label
Classification in Long-Tailed Datasets", ECCV). For a binary task the two labels are the two classes, which is
Kang et al.'s class-balanced sampling exactly. Rows of co-occurring findings are still drawn more often than
their rarest finding alone would warrant, a known limit of re-sampling multi-label data (Wu et al. 2020).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from cxrgan.classify.losses import output_layer
from cxrgan.data.label_imbalance import as_columns, label_sets
from cxrgan.device import seeded


def class_aware_rows(labels: np.ndarray, n_rows: int, generator: torch.Generator) -> np.ndarray:
    """``n_rows`` row indices drawn by class-aware sampling (a label uniformly, then a row carrying it uniformly).

    Args:
        labels: (N, K) training labels (1 / 0 / NaN; NaN counts as not carried).
        n_rows: how many rows to draw (with replacement).
        generator: the run's random generator.
    """
    labels = as_columns(labels)
    matrix, _ = label_sets(labels, range(labels.shape[1]))
    bags = [torch.from_numpy(np.flatnonzero(matrix[:, j])) for j in range(matrix.shape[1]) if matrix[:, j].any()]
    chosen = torch.randint(len(bags), (n_rows,), generator=generator)
    rows = torch.empty(n_rows, dtype=torch.int64)
    for b, bag in enumerate(bags):
        slots = torch.nonzero(chosen == b).flatten()
        rows[slots] = bag[torch.randint(len(bag), (len(slots),), generator=generator)]
    return rows.numpy()


def reset_head(model: nn.Module, generator: torch.Generator) -> list[nn.Parameter]:
    """Freeze ``model.features`` and re-initialise the head's final linear layer; return the head's parameters.

    The new weights use PyTorch's default initialisation seeded from ``generator`` (the global RNG is restored).

    Raises:
        CxrganError: the model has no separable head (see :func:`cxrgan.classify.losses.output_layer`).
    """
    layer = output_layer(model, "crt")
    for parameter in model.features.parameters():
        parameter.requires_grad_(False)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    fresh = copy.deepcopy(layer).cpu()  # drawn on the CPU: the same head whatever device the model is on
    with seeded(seed):
        fresh.reset_parameters()
    layer.load_state_dict(fresh.state_dict())
    return [p for p in model.head.parameters() if p.requires_grad]
