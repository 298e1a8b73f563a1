"""Datasets, loaders for the common CXR layouts, label policies and splits."""

from cxrgan.data.chexpert import CHEXPERT_FINDINGS, load_chexpert, load_chexpert_raw, read_chexpert_table
from cxrgan.data.dataset import CXRDataset, from_arrays
from cxrgan.data.folders import KERMANY_PATIENT_REGEX, load_image_folder
from cxrgan.data.info import info
from cxrgan.data.leakage import check_no_shared_images, check_patient_disjoint, namespace_patients
from cxrgan.data.labels import apply_uncertainty_policy
from cxrgan.data.medmnist import download_medmnist, load_medmnist
from cxrgan.data.nih import NIH_FINDINGS, load_nih, read_nih_table
from cxrgan.data.npz import load_npz, save_npz
from cxrgan.data.prepare import detect_layout, prepare
from cxrgan.data.splits import (
    assign_splits,
    fraction_subset,
    induce_imbalance,
    nested_class_subsets,
    nested_fractions,
    resplit_rows,
)

__all__ = [
    "CXRDataset",
    "from_arrays",
    "apply_uncertainty_policy",
    "load_npz",
    "save_npz",
    "load_medmnist",
    "download_medmnist",
    "load_image_folder",
    "KERMANY_PATIENT_REGEX",
    "load_nih",
    "read_nih_table",
    "NIH_FINDINGS",
    "load_chexpert",
    "load_chexpert_raw",
    "read_chexpert_table",
    "CHEXPERT_FINDINGS",
    "prepare",
    "detect_layout",
    "info",
    "assign_splits",
    "resplit_rows",
    "fraction_subset",
    "nested_fractions",
    "nested_class_subsets",
    "induce_imbalance",
    "check_patient_disjoint",
    "check_no_shared_images",
    "namespace_patients",
]
