"""Datasets, loaders for the common CXR layouts, label policies and splits."""

from cxrgan.data.dataset import CXRDataset, from_arrays
from cxrgan.data.labels import apply_uncertainty_policy
from cxrgan.data.npz import load_npz, save_npz

__all__ = ["CXRDataset", "from_arrays", "apply_uncertainty_policy", "load_npz", "save_npz"]
