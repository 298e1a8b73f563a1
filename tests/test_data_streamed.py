"""``cxrgan data prepare`` on an NIH-layout CSV streams a few thousand real images into a compact file five times
larger than a hard memory budget, loaders read it lazily within that budget, and a killed prepare resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxrgan.cli import main
from cxrgan.data import load_npz

N_IMAGES = 3000
SIZE = 330  # 3000 images of 330 x 330 = 313 MB of pixels
BUDGET_MB = 60  # the file is more than 5x this
PROBE = Path(__file__).with_name("_memory_probe.py")


@pytest.fixture(scope="module")
def nih_layout(data_dir, tmp_path_factory) -> Path:
    """``Data_Entry_2017.csv`` with the first 3000 rows of NIH's real label table (798 patients), each row's image a
    128 px real radiograph from the Kermany set saved as PNG under ``images/``."""
    root = tmp_path_factory.mktemp("nih_layout")
    table = pd.read_csv(data_dir / "nih_labels" / "Data_Entry_2017_v2020.csv.gz", nrows=N_IMAGES)
    with np.load(data_dir / "kermany_pneumonia" / "kermany_pneumonia_128.npz") as archive:
        images = archive["images"][:N_IMAGES]
    (root / "images").mkdir()
    for name, image in zip(table["Image Index"], images):
        Image.fromarray(image).save(root / "images" / name, compress_level=1)
    table.to_csv(root / "Data_Entry_2017.csv", index=False)
    return root / "Data_Entry_2017.csv"


def _environment() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def test_streamed_prepare_and_lazy_loading_within_a_budget_five_times_smaller_than_the_data(nih_layout, tmp_path):
    out = tmp_path / "nih.npz"
    probe = subprocess.run([sys.executable, str(PROBE), str(nih_layout), str(out), "--size", str(SIZE),
                            "--budget-mb", str(BUDGET_MB)], env=_environment(), capture_output=True, text=True,
                           timeout=600)
    assert probe.returncode == 0, probe.stderr[-3000:]
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    print("\nstreamed prepare + lazy load under RLIMIT_DATA:", json.dumps(measured))
    assert measured["images"] == N_IMAGES and measured["file_mb"] >= 5 * BUDGET_MB
    assert measured["control_memory_error"]  # the budget is real: the whole image array does not fit in it
    assert measured["lazy"] and measured["train_rows"] > 0
    assert measured["peak_private_rss_mb"] - measured["private_rss_after_imports_mb"] < BUDGET_MB

    stored = load_npz(out, target="findings")
    assert isinstance(stored.images, np.memmap) and stored.images.shape == (N_IMAGES, SIZE, SIZE)
    splits = stored.meta["split"].to_numpy()
    assert (np.diff([["train", "val", "test"].index(s) for s in splits]) >= 0).all()  # grouped by split
    assert isinstance(stored.split("val").images, np.memmap)  # a split stays on disk
    assert not list(tmp_path.glob(".*partial*"))  # work files removed

    # a prepare killed while decoding continues where it stopped, and writes the same file
    killed = tmp_path / "killed.npz"
    state = tmp_path / ".killed.npz.partial.json"
    process = subprocess.Popen([sys.executable, "-m", "cxrgan", "data", "prepare", str(nih_layout), "--size",
                                str(SIZE), "--out", str(killed), "--workers", "1"], env=_environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, done = time.time() + 300, 0
    while time.time() < deadline and process.poll() is None:
        if state.exists() and (done := json.loads(state.read_text())["rows_done"]) > 0:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert 0 < done < N_IMAGES and not killed.exists()
    assert main(["data", "prepare", str(nih_layout), "--size", str(SIZE), "--out", str(killed), "--workers", "2"]) == 0
    resumed = load_npz(killed, target="findings")
    assert np.array_equal(resumed.images, stored.images) and np.array_equal(resumed.labels, stored.labels, equal_nan=True)
    assert resumed.meta.equals(stored.meta)
    assert not list(tmp_path.glob(".killed*"))
