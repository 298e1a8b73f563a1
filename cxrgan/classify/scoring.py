"""A classifier's scores for a split, and their macro ROC AUC over labels."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from cxrgan import distributed
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.transforms import uint8_tensor
from cxrgan.device import autocast


def macro_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean ROC AUC over label columns that have both classes among known rows (NaN if none has)."""
    aucs = []
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j]
        if len(np.unique(y)) == 2:
            aucs.append(roc_auc_score(y, scores[known, j]))
    return float(np.mean(aucs)) if aucs else float("nan")


@torch.no_grad()
def predict(model: nn.Module, dataset: CXRDataset, device: torch.device | str = "cpu", batch_size: int = 256,
            bf16: bool = False, shared: bool = False, fp16: bool = False) -> np.ndarray:
    """Sigmoid probabilities (N, K) for every row, in order.

    ``shared``: under torchrun, every process scores its own block of rows and all receive every score (every
    process must call it together); otherwise one process scores all rows."""
    device = torch.device(device)
    model.eval()
    rows = range(len(dataset))
    if shared and distributed.active():
        block = -(-len(dataset) // distributed.world_size())
        rows = range(min(len(dataset), distributed.rank() * block), min(len(dataset), (distributed.rank() + 1) * block))
    outputs = []
    for start in range(rows.start, rows.stop, batch_size):
        x = to_input(dataset.images[start:min(start + batch_size, rows.stop)], device)
        with autocast(device, bf16, fp16):
            outputs.append(torch.sigmoid(model(x).float()).cpu())
    scores = torch.cat(outputs).numpy() if outputs else np.zeros((0, dataset.n_labels), np.float32)
    if shared and distributed.active():
        scores = np.concatenate(distributed.gather_objects(scores))
    return scores


def to_input(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N,H,W) -> float (N,1,H,W) in [-1, 1], channels_last (the faster conv layout on CPU and GPU)."""
    if isinstance(images, np.ndarray):
        images = uint8_tensor(images)
    x = images.to(device, non_blocking=True).unsqueeze(1).float().div_(127.5).sub_(1.0)
    return x.contiguous(memory_format=torch.channels_last)
