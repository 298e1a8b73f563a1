"""Nothing lost, nothing silently wrong: ``cxrgan report`` writes only into cxrgan's own folders, a run refuses input
files that changed since it began, a cell whose scores were lost runs again, and an .npz whose members claim far
more than the file holds is refused before anything is decompressed. One small real compare run (Kermany, small
CNN, one epoch) serves the run tests."""

from __future__ import annotations

import json
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _data_helpers import write_bomb
from cxrgan.cli import main
from cxrgan.data import save_npz
from cxrgan.data.info import info
from cxrgan.data.npz import load_npz
from cxrgan.errors import CxrganError
from cxrgan.runs import RUN_MARKER, shared_run_dir

SMALL = ["--seeds", "1", "--model", "small-cnn", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
         "--no-progress"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cxrgan: error:"), err
    return err[0]


@pytest.fixture(scope="module")
def finished(kermany_small, tmp_path_factory):
    """A finished compare run (none, one seed) and its data file."""
    root = tmp_path_factory.mktemp("integrity")
    data = save_npz(kermany_small, root / "data.npz")
    assert main(["compare", str(data), "--methods", "none", *SMALL, "--out", str(root / "runs")]) == 0
    return next((root / "runs").iterdir()), data


def _copy_run(finished, tmp_path) -> tuple[Path, Path]:
    """A copy of the finished run whose config names a copy of its data file (so tests may change either)."""
    run, data = finished
    data_copy = tmp_path / "data.npz"
    shutil.copy(data, data_copy)
    run_copy = tmp_path / "runs" / run.name
    shutil.copytree(run, run_copy)
    config = json.loads((run_copy / "config.json").read_text())
    spec = config["config"]["run"]  # the RunSpec of the run: its data file(s)
    spec["data"] = [str(data_copy)] if isinstance(spec["data"], list) else str(data_copy)
    config["inputs"] = {str(data_copy): config["inputs"][str(data)]}
    (run_copy / "config.json").write_text(json.dumps(config))
    return run_copy, data_copy


# ---- 1. report writes only into cxrgan's folders --------------------------------------------------------------
def _png(path: Path) -> None:
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path)


def test_report_never_replaces_a_users_page(tmp_path, capsys):
    folder = tmp_path / "my_figures"
    folder.mkdir()
    _png(folder / "roc.png")  # a figure cxrgan also makes
    (folder / "report.html").write_text("<html>my own notes</html>")
    assert main(["report", str(folder)]) == 2
    assert "not a cxrgan run directory" in _one_line_error(capsys)
    assert (folder / "report.html").read_text() == "<html>my own notes</html>"
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "roc.png"]

    (folder / RUN_MARKER).write_text("{}")  # even inside a folder cxrgan made, a page it did not write stays
    assert main(["report", str(folder)]) == 2
    assert "report.html: was not written by cxrgan" in _one_line_error(capsys)
    assert (folder / "report.html").read_text() == "<html>my own notes</html>"


def test_run_directories_of_earlier_versions_are_recognised_by_their_config(tmp_path, capsys):
    old_run = tmp_path / "00000-dcgan-old"  # a train-gan run made before the marker existed
    old_run.mkdir()
    (old_run / "config.json").write_text(json.dumps({"kind": "gan-dcgan", "config": {"method": "dcgan"}}))
    _png(old_run / "roc.png")
    assert main(["report", str(old_run)]) == 0
    first = (old_run / "report.html").read_text()
    assert "<h1>cxrgan report" in first
    assert main(["report", str(old_run)]) == 0  # its own page is rebuilt
    not_ours = tmp_path / "other"
    not_ours.mkdir()
    (not_ours / "config.json").write_text(json.dumps({"kind": "model", "config": {}, "author": "someone else"}))
    _png(not_ours / "roc.png")
    assert main(["report", str(not_ours)]) == 2 and not (not_ours / "report.html").exists()


def test_new_run_directories_are_marked(finished):
    run, _ = finished
    assert (run / RUN_MARKER).is_file() and (run / "report.html").is_file()


def test_shards_starting_together_never_see_the_shared_folder_unmarked(tmp_path):
    """Shards create ``<run>-shared`` at the same moment: each gets the marked folder, neither meets it half made
    (it appears with its marker inside), and no staging folder is left behind."""
    for attempt in range(20):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        barrier = threading.Barrier(4)

        def start() -> Path:
            barrier.wait()
            return shared_run_dir(out, "compare-kermany")

        with ThreadPoolExecutor(4) as pool:
            folders = list(pool.map(lambda _: start(), range(4)))
        assert set(folders) == {out / "compare-kermany-shared"} and (folders[0] / RUN_MARKER).is_file()
        assert [p.name for p in out.iterdir()] == ["compare-kermany-shared"]


# ---- 2. changed inputs are refused on resume and report ---------------------------------------------------------
def test_a_changed_data_file_is_refused_by_resume_and_report(finished, tmp_path, capsys):
    run, data = _copy_run(finished, tmp_path)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with np.load(data) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["images"] = 255 - arrays["images"]  # every image altered; labels, splits and ids unchanged
    with open(data, "wb") as f:
        np.savez(f, **arrays)
    resume = ["compare", str(data), "--methods", "none,oversample", *SMALL, "--resume", str(run)]
    assert main(resume) == 2
    assert f"{data}: this input file changed since the run began" in _one_line_error(capsys)
    assert main(["report", str(run)]) == 2
    assert f"{data}: this input file changed" in _one_line_error(capsys)
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_run_written_before_fingerprints_still_reports_and_resumes(finished, tmp_path, capsys):
    run, data = _copy_run(finished, tmp_path)
    config = json.loads((run / "config.json").read_text())
    del config["inputs"]
    (run / "config.json").write_text(json.dumps(config))
    (run / RUN_MARKER).unlink()  # and before the marker
    assert main(["report", str(run)]) == 0
    assert main(["compare", str(data), "--methods", "none", *SMALL, "--resume", str(run)]) == 0
    assert "written before cxrgan kept input fingerprints" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["inputs"].keys() == {str(data)}


# ---- 3. a lost scores file re-runs its cell -------------------------------------------------------------------
def test_a_cell_whose_scores_were_lost_runs_again(finished, tmp_path, capsys):
    run, data = _copy_run(finished, tmp_path)
    scores = run / "scores" / "none-seed0.npz"
    kept = np.load(scores)["test"]
    scores.unlink()
    capsys.readouterr()
    assert main(["compare", str(data), "--methods", "none", *SMALL, "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "1 cells, 0 done, 1 to run" in out
    np.testing.assert_array_equal(np.load(scores)["test"], kept)  # the same cell, the same seed: the same scores
    assert main(["report", str(run)]) == 0


# ---- 4. a small file claiming a huge member is refused before decompression -----------------------------------
def test_a_member_inflating_far_beyond_the_file_is_refused_before_decompression(tmp_path, monkeypatch, capsys):
    rows = 80_000  # 328 MB of pixels in a file of 1.4 MB (the issue: 4 GB in 18 MB, about the same ratio)
    bomb = tmp_path / "bomb.npz"
    write_bomb(bomb, rows)
    assert bomb.stat().st_size < 2 << 20

    def no_data_read(*args, **kwargs):
        raise AssertionError("array data was read before the headers were checked")

    monkeypatch.setattr(np, "load", no_data_read)
    for call in (load_npz, info):
        with pytest.raises(CxrganError, match=r"bomb.npz: its compressed arrays claim 329.\d MB from a 1.\d MB file"):
            call(bomb)
    monkeypatch.undo()
    assert main(["data", "info", str(bomb)]) == 2
    assert "refused before decompressing" in _one_line_error(capsys)
