"""``torchrun --nproc_per_node 2`` on the CPU (gloo, one thread per process): a tiny ``compare`` gives the numbers of
one process with the same global batch, only rank 0 writes files, and bad input stops every process with one line.

Tolerance. With the global batch split over two processes, the gradient is summed in another order (two partial
sums, then an all-reduce) and BatchNorm statistics are combined from two halves (``GlobalBatchNorm``): each step
differs from one process's at about 1e-7 relative. Adam's first steps move every weight by about lr whatever the
size of its gradient, so a weight whose gradient is near zero may step the other way: after ten steps at lr 1e-3
weights agree to 0.01, the per-epoch training loss to 1e-3 (relative) and every AUC to 0.02 (on 40 images one
swapped positive/negative pair moves an AUC by 1/300). Early stopping keeps the epoch with the best validation
AUC; when two epochs are within that tolerance of each other the two runs may keep different ones, and then only
their per-epoch numbers are compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrgan.cli import main
from cxrgan.data import CXRDataset, save_npz
from cxrgan.io import read_jsonl

ENTRY = Path(__file__).with_name("_torchrun_entry.py")
BASE = ["--seeds", "1", "--model", "small-cnn", "--epochs", "2", "--batch-size", "32", "--lr", "1e-3",
        "--precision", "fp32", "--augment", "flip", "--no-progress", "--no-external"]
FLAGS = [*BASE, "--device", "cpu"]
CLASSIC = "none,class-weights"


@pytest.fixture(scope="module")
def small_file(kermany_small, tmp_path_factory):
    return str(save_npz(kermany_small, tmp_path_factory.mktemp("data") / "kermany_small.npz"))


def torchrun(args: list[str], tmp_path: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2`` of the cxrgan CLI (through the write-recording entry point)."""
    root = str(Path(__file__).resolve().parents[1])
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "CXRGAN_TEST_WRITES": str(tmp_path),
                   "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), **env}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(ENTRY), *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)


def test_torchrun_compare_matches_one_process_and_only_rank_0_writes(small_file, tmp_path):
    methods = CLASSIC + ",dcgan"
    gan = ["--gan-steps", "4", "--gan-width", "8"]
    assert main(["compare", small_file, "--methods", methods, *gan, *FLAGS, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(["compare", small_file, "--methods", methods, *gan, *FLAGS, "--out", str(tmp_path / "two")],
                    tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = next((tmp_path / "one").iterdir()), next((tmp_path / "two").iterdir())

    # only rank 0 wrote anything under the output folder; rank 1 wrote nowhere near it
    written = {rank: json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    out = str(tmp_path / "two")
    assert any(p.startswith(out) for p in written[0])
    assert not [p for p in written[1] if p.startswith(out)]
    assert done.stdout.count("[1/3] none seed 0 ...") == 1  # one process prints

    records = {name: {r["cell"]: r for r in read_jsonl(run / "results.jsonl")} for name, run in (("one", one), ("two", two))}
    assert sorted(records["two"]) == sorted(records["one"]) == ["class_weights-seed0", "dcgan-seed0", "none-seed0"]
    for cell in ("none-seed0", "class_weights-seed0"):  # the dcgan row draws other noise per process: not compared
        a, b = records["one"][cell], records["two"][cell]
        assert a["train_rows"] == b["train_rows"] == 160
        for epoch_a, epoch_b in zip(a["history"], b["history"], strict=True):
            assert epoch_b["train_loss"] == pytest.approx(epoch_a["train_loss"], rel=1e-3)
            assert epoch_b["val_auc"] == pytest.approx(epoch_a["val_auc"], abs=0.02)
        if a["best_epoch"] != b["best_epoch"]:  # a near tie of validation AUCs, decided either way
            assert all(abs(h[0]["val_auc"] - h[1]["val_auc"]) <= 0.02 for h in (a["history"], b["history"]))
            continue
        for key in ("roc_auc", "pr_auc"):
            assert b["metrics"][key] == pytest.approx(a["metrics"][key], abs=0.02)
        weights = [torch.load(run / "models" / f"{cell}.pt", weights_only=True)["model"] for run in (one, two)]
        assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]
                   if weights[0][k].is_floating_point()) < 0.01
    for run in (one, two):
        assert (run / "report.html").is_file() and (run / "generators").is_dir()


def test_torchrun_bad_input_stops_every_process_with_one_line(small_file, kermany_small, tmp_path):
    # a data file missing on one machine (simulated: rank 1 looks for another path)
    missing = torchrun(["compare", small_file, "--methods", "none", *FLAGS, "--out", str(tmp_path / "a")], tmp_path,
                       timeout=180, CXRGAN_TEST_HIDE_ON_RANK=f"1:{small_file}")
    ours = [line for line in missing.stderr.splitlines() if line.startswith("cxrgan: error:")]
    assert missing.returncode != 0 and ours == [
        f"cxrgan: error: process 1 (of 2): {small_file}.missing-on-this-machine: no such file"]
    assert not (tmp_path / "a").exists()

    # more processes than training rows of a class: one positive training row, two processes
    train = kermany_small.split("train")
    y = train.binary_targets()
    keep = np.sort(np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[:1]]))
    one_positive = str(save_npz(CXRDataset.concat([train.subset(keep), kermany_small.split("val"),
                                                   kermany_small.split("test")]), tmp_path / "one_positive.npz"))
    few = torchrun(["compare", one_positive, "--methods", "none", *FLAGS, "--out", str(tmp_path / "b")], tmp_path,
                   timeout=180)
    ours = [line for line in few.stderr.splitlines() if line.startswith("cxrgan: error:")]
    assert few.returncode != 0 and ours == [
        "cxrgan: error: 2 processes (--nproc_per_node x nodes) but the training split has only 1 'pneumonia' row(s); "
        "use at most 1 processes, or more training data"]


@pytest.mark.parametrize("rank, printed", [("0", True), ("1", False)])
def test_cuda_requested_without_cuda_under_torchrun_is_one_line_on_rank_0(small_file, tmp_path, capsys, monkeypatch,
                                                                          rank, printed):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("LOCAL_RANK", rank)
    assert main(["compare", small_file, "--methods", "none", *BASE, "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == ("cxrgan: error: device 'cuda' requested but CUDA is not available\n" if printed else "")


def test_torchrun_dry_run_of_a_recipe_with_generators_probes_as_one_process(small_file, tmp_path):
    """Rank 0 probes alone after the processes have agreed on the plan: its probes (a data-parallel DCGAN among
    them) run as one process instead of waiting in collectives for processes that are not there; with --full it
    also prints the traced peak memory. About 40 s on 2 cores, most of it two processes starting and the probes."""
    out = tmp_path / "out"
    done = torchrun(["compare", small_file, "--methods", "none,dcgan", "--gan-steps", "4", "--gan-width", "8", "--full",
                     *FLAGS, "--dry-run", "--out", str(out)], tmp_path, timeout=300, CXRGAN_DIST_TIMEOUT="60")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("estimated wall time") == 1 and "dcgan seed 0  (~" in done.stdout
    assert "probed as one process; the 2 torchrun processes share each batch" in done.stdout
    assert "peak device memory (fp32" in done.stdout and "dcgan at 64 px: training step" in done.stdout
    assert not out.exists()


def test_non_finite_loss_on_one_process_stops_every_process_at_the_same_step(small_file, tmp_path):
    """Rank 1's discriminator loss is NaN from the first step: the loop reads every process's losses in one
    all-reduce, so both stop with one line at step 1 instead of rank 0 waiting out the collective timeout."""
    done = torchrun(["train-gan", "--method", "dcgan", "--data", small_file, "--gan-steps", "6", "--gan-width", "8",
                     "--batch-size", "16", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "runs")],
                    tmp_path, timeout=300, CXRGAN_DIST_TIMEOUT="60", CXRGAN_TEST_NAN_ON_RANK="1")
    ours = [line for line in done.stderr.splitlines() if line.startswith("cxrgan: error:")]
    assert done.returncode != 0 and len(ours) == 1, done.stderr[-3000:]
    assert ours[0].startswith("cxrgan: error: dcgan training diverged at step 1 (the discriminator loss is nan); "
                              "no checkpoint was written yet")


def _global_std_on_rank(rank: int, path: str, shares: list[list[float]]) -> None:
    """One process of a two-process gloo group: save ``global_std`` of its share to ``path.<rank>``."""
    import torch.distributed as dist

    from cxrgan import distributed

    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=len(shares))
    try:
        value = float(distributed.global_std(torch.tensor(shares[rank])))
    finally:
        dist.destroy_process_group()
    torch.save(value, f"{path}.{rank}")


def test_latent_scale_is_the_std_of_the_global_batch(tmp_path):
    """Data-parallel latent diffusion scales its latents by the standard deviation of the global first batch, the
    one number a single process would compute, not each process's own share's."""
    import torch.multiprocessing as mp

    shares = [[0.0, 1.0, 2.0, 3.0], [10.0, 12.0, 14.0, 16.0]]
    mp.start_processes(_global_std_on_rank, args=(str(tmp_path / "group"), shares), nprocs=2, start_method="fork")
    got = [torch.load(tmp_path / f"group.{rank}") for rank in (0, 1)]
    expected = float(torch.tensor(shares[0] + shares[1]).std())
    assert got == pytest.approx([expected, expected], rel=1e-6)
    assert float(torch.tensor(shares[0]).std()) != pytest.approx(expected)
