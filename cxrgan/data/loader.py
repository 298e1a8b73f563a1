"""Training batches read lazily from a (memory-mapped) image array: DataLoader worker processes read the rows of each
batch, pinned for a fast copy to CUDA, while the training loop alone decides which rows form a batch, so results do
not depend on the number of workers."""

from __future__ import annotations

import mmap
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def file_region(images: np.ndarray) -> tuple[str, int, tuple[int, ...], str] | None:
    """(file, byte offset, shape, dtype) of a C-contiguous view into a ``np.memmap``, else None.

    A slice of a memory map keeps its parent's ``offset`` attribute, so the offset is found from the data
    addresses of the view and of the map that owns the file mapping."""
    root = images
    while isinstance(root, np.memmap) and not isinstance(root.base, mmap.mmap) and isinstance(root.base, np.ndarray):
        root = root.base
    if not (isinstance(root, np.memmap) and isinstance(root.base, mmap.mmap) and images.flags.c_contiguous):
        return None
    offset = root.offset + (images.__array_interface__["data"][0] - root.__array_interface__["data"][0])
    return str(root.filename), int(offset), tuple(images.shape), images.dtype.str


class BatchRows(Dataset):
    """Item ``rows`` (a sorted index array) is that batch: (uint8 images (B, H, W), float32 labels (B, K)).

    Sent to a worker process started by ``spawn`` (not ``fork``), a memory-mapped image array travels as its
    file region and is mapped again there, never copied."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __getitem__(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # sorted rows: sequential reads from the file
        return (torch.from_numpy(np.ascontiguousarray(self.images[rows])),
                torch.from_numpy(np.ascontiguousarray(self.labels[rows])))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        region = file_region(self.images)
        if region is not None:
            state["images"] = region
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["images"], tuple):
            filename, offset, shape, dtype = state["images"]
            state["images"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
        self.__dict__.update(state)


class _EpochBatches(Sampler):
    """The batches (row arrays) of the epoch being read; the feed replaces them before each epoch."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class BatchFeed:
    """One loader for every epoch of a training run: ``epoch(batches)`` yields the batches of the given rows, in
    order, read in this process (``workers`` = 0) or by ``workers`` processes started once and kept for the next
    epochs (starting a process that imports torch takes seconds, which every epoch paid when a loader was made per
    epoch), each a few batches ahead; ``pin_memory`` for a non-blocking copy to a CUDA device."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, workers: int = 0, pin_memory: bool = False):
        self._batches = _EpochBatches()
        self._loader = DataLoader(BatchRows(images, labels), batch_size=None, sampler=self._batches,
                                  num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
                                  prefetch_factor=4 if workers else None)

    def epoch(self, batches: Sequence[np.ndarray]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self._batches.batches = list(batches)
        return iter(self._loader)


def batch_loader(images: np.ndarray, labels: np.ndarray, batches: Sequence[np.ndarray], workers: int = 0,
                 pin_memory: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of ``rows`` in order, for one pass (see :class:`BatchFeed` for a loader kept across epochs)."""
    return BatchFeed(images, labels, workers, pin_memory).epoch(batches)
