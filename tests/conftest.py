"""Shared fixtures: the real-data folder (CXRGAN_DATA, default ../shared/data) and small real subsets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    return Path(os.environ.get("CXRGAN_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests run tiny networks: one thread for torch, OpenMP and BLAS. With two, a thread that loses its core to
    another process makes every small kernel wait at a barrier (measured here: BatchNorm on a 16 x 8 x 32 x 32
    batch 0.4 ms -> ~40 ms; audit tests 3-4x slower)."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


def missing_data_message(path: Path) -> str:
    return f"real CXR data folder {path} is absent (set CXRGAN_DATA to the shared/data folder)"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real-data folder. Missing in CI (CI=true) it fails every test that needs it, so a green run always
    tested real data; on a developer machine those tests skip with the reason."""
    path = _data_dir()
    if not path.is_dir():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(missing_data_message(path) + "; CI must run the real-data tests", pytrace=False)
        pytest.skip(missing_data_message(path))
    return path


@pytest.fixture(scope="session")
def kermany_path(data_dir: Path) -> Path:
    return data_dir / "kermany_pneumonia" / "kermany_pneumonia_64.npz"


@pytest.fixture(scope="session")
def nih_path(data_dir: Path) -> Path:
    return data_dir / "nih_chestxray14_subset" / "nih_chestxray14_subset_64.npz"


@pytest.fixture(scope="session")
def kermany(kermany_path: Path):
    from cxrgan.data import load_npz

    return load_npz(kermany_path)


@pytest.fixture(scope="session")
def kermany_small(kermany):
    """A fixed, class-stratified 240-image real subset (160 train / 40 val / 40 test), 1:3 normal:pneumonia."""
    import numpy as np

    from cxrgan.data import CXRDataset

    rng = np.random.default_rng(0)
    parts = []
    for split_name, n in (("train", 160), ("val", 40), ("test", 40)):
        part = kermany.split(split_name)
        y = part.binary_targets()
        idx = np.concatenate(
            [rng.choice(np.flatnonzero(y == 0), n // 4, replace=False), rng.choice(np.flatnonzero(y == 1), 3 * n // 4, replace=False)]
        )
        parts.append(part.subset(np.sort(idx)))
    return CXRDataset.concat(parts)
