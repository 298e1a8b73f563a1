"""In CI a missing real-data folder fails the tests that need it instead of skipping them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pytest(tmp_path: Path, ci: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CXRGAN_DATA": str(tmp_path / "nowhere"), "CI": ci}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_data_splits.py::test_nested_fractions_are_nested_stratified_and_patient_level"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_missing_data_fails_in_ci_and_skips_locally(tmp_path):
    ci = _pytest(tmp_path, "true")
    assert ci.returncode != 0 and "1 error" in ci.stdout and "nowhere" in ci.stdout
    local = _pytest(tmp_path, "")
    assert local.returncode == 0 and "1 skipped" in local.stdout
