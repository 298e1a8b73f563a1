"""One grid spread over processes: ``--shard K/N`` jobs and ``--workers N`` fill one run directory, never run a cell
twice, and give the tables a single process gives; claims on cells and generator cache entries."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cxrgan.claims import owner_id, release, try_claim
from cxrgan.cli import main
from cxrgan.data import save_npz
from cxrgan.io import read_jsonl

GRID = ["--methods", "none,oversample,class-weights", "--seeds", "1", "--model", "small-cnn", "--epochs", "1", "--batch-size", "16",
        "--lr", "1e-3", "--device", "cpu", "--precision", "bf16", "--no-progress"]


@pytest.fixture(scope="module")
def small_file(kermany_small, tmp_path_factory):
    return str(save_npz(kermany_small, tmp_path_factory.mktemp("data") / "kermany_small.npz"))


def _environment() -> dict[str, str]:
    """A subprocess that runs this checkout's cxrgan with one thread (as the in-process runs of the suite)."""
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _tables(run_dir: Path) -> dict[str, str]:
    return {name: (run_dir / name).read_text() for name in ("results.csv", "verdicts.csv")}


def _cells_started(text: str) -> list[str]:
    return re.findall(r"\[\d+/\d+\] (.*) \.\.\.$", text, flags=re.M)


def test_two_shards_in_parallel_and_two_workers_give_the_single_process_tables(small_file, tmp_path, capsys):
    assert main(["compare", small_file, *GRID, "--out", str(tmp_path / "single")]) == 0
    single = next((tmp_path / "single").iterdir())
    capsys.readouterr()

    shards = [subprocess.Popen([sys.executable, "-m", "cxrgan", "compare", small_file, *GRID, "--shard", f"{k}/2",
                                "--out", str(tmp_path / "sharded")], env=_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for k in (1, 2)]
    outputs = [shard.communicate(timeout=600) for shard in shards]
    assert [shard.returncode for shard in shards] == [0, 0], [err for _, err in outputs]
    run_dir = tmp_path / "sharded" / "compare-kermany_small-shared"
    started = [_cells_started(out) for out, _ in outputs]
    assert sorted(started[0] + started[1]) == sorted(["none seed 0", "oversample seed 0", "class-weights seed 0"])
    assert started[0] == ["none seed 0", "class-weights seed 0"] and started[1] == ["oversample seed 0"]  # every 2nd
    assert sum("report: " in out for out, _ in outputs) == 1  # the shard that saw the last cell built the report
    assert _tables(run_dir) == _tables(single)
    assert [r["cell"] for r in read_jsonl(run_dir / "results.jsonl")] == [r["cell"] for r in read_jsonl(single / "results.jsonl")]
    assert not list((run_dir / "claims").iterdir())  # every claim released

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = _environment()["PYTHONPATH"]
    try:
        assert main(["compare", small_file, *GRID, "--workers", "2", "--out", str(tmp_path / "workers")]) == 0
    finally:
        os.environ.pop("PYTHONPATH") if old is None else os.environ.__setitem__("PYTHONPATH", old)
    workers_dir = next((tmp_path / "workers").iterdir())
    assert _tables(workers_dir) == _tables(single)
    assert len(list((workers_dir / "records").glob("*.json"))) == 3

    # `cxrgan report` rebuilds the same tables from the files; a shard run again finds nothing to do
    assert main(["report", str(run_dir)]) == 0
    assert _tables(run_dir) == _tables(single)
    capsys.readouterr()
    assert main(["compare", small_file, *GRID, "--shard", "2/2", "--out", str(tmp_path / "sharded")]) == 0
    assert _cells_started(capsys.readouterr().out) == []


def test_claims_are_exclusive_and_a_dead_owner_is_taken_over(tmp_path):
    path = tmp_path / "claims" / "cell"
    assert try_claim(path) is None and try_claim(path) is None  # ours, and ours again
    release(path)
    assert not path.exists()
    path.write_text(f"{socket.gethostname()} {os.getpid()}0\n")  # a process of this host that does not exist
    assert try_claim(path) is None and path.read_text().strip() == owner_id()
    release(path)
    path.write_text("another-host 123\n")  # whether it lives cannot be known from here: the claim stands
    assert try_claim(path) == "another-host 123"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.write_text(f"{socket.gethostname()} {sleeper.pid}\n")  # a live process of this host
        assert try_claim(path) == f"{socket.gethostname()} {sleeper.pid}"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert try_claim(path) is None  # its owner has gone


@pytest.mark.parametrize("flags, message", [
    (["--shard", "3/2"], "--shard 3/2: K must lie in 1..N"),
    (["--shard", "x"], "--shard 'x': expected K/N such as 1/4"),
    (["--workers", "0"], "--workers 0: must be at least 1"),
    (["--workers", "2", "--shard", "1/2"], "combine it neither with torchrun nor with --shard"),
])
def test_bad_grid_flags_are_one_line_errors(small_file, tmp_path, capsys, flags, message):
    assert main(["compare", small_file, *GRID, *flags, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrgan: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing written
