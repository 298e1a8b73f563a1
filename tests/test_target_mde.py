"""``--target-mde D``: flags and bad input, the stopping rule on synthetic scores (reach, floor, budget, max seeds,
blind to Δ), and a small real compare that adds a round, stops, says why per row, and resumes without retraining."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from cxrgan.cli import main
from cxrgan.data import save_npz
from cxrgan.engine.store import RECORDS_DIR, SCORES_DIR
from cxrgan.engine.target import (BUDGET, FLOOR, MAX_SEEDS, REACHED, decide, parse_duration, read_rounds,
                                  write_rounds)
from cxrgan.evaluate.inference import effect_from_parts, seed_level_test


# ---- flags --------------------------------------------------------------------------------------------------------
def test_durations_parse():
    assert [parse_duration(t) for t in ("60m", "1h30m", "45s", "2h", "1h 5m 3s", "1.5h")] == [
        3600, 5400, 45, 7200, 3903, 5400]
    for bad in ("", "60", "1x", "m", "0m", "-5m", "1h30"):
        with pytest.raises(ValueError):
            parse_duration(bad)


@pytest.fixture(scope="module")
def small_file(kermany_small, tmp_path_factory):
    return str(save_npz(kermany_small, tmp_path_factory.mktemp("data") / "kermany_small.npz"))


def _error(capsys, argv) -> str:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own checks
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cxrgan: error:") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("flags, named", [
    (["--budget", "1x", "--target-mde", "0.01"], "--budget"),
    (["--target-mde", "abc"], "--target-mde"),
    (["--target-mde", "2"], "--target-mde 2"),
    (["--target-mde", "0"], "--target-mde 0"),
    (["--budget", "60m"], "--target-mde too"),
    (["--max-seeds", "9"], "--target-mde too"),
    (["--target-mde", "0.01", "--seeds", "1"], "--seeds"),
    (["--target-mde", "0.01", "--seeds", "4", "--max-seeds", "3"], "--max-seeds 3"),
    (["--target-mde", "0.01", "--workers", "2"], "--target-mde"),
    (["--target-mde", "0.01", "--shard", "1/2"], "--target-mde"),
])
def test_bad_target_flags_are_one_line_errors(small_file, tmp_path, capsys, flags, named):
    err = _error(capsys, ["compare", small_file, "--methods", "none,oversample", "--model", "small-cnn",
                          "--out", str(tmp_path), "--dry-run", *flags])
    assert named in err
    assert not list(tmp_path.iterdir())  # nothing written


def test_every_recipe_takes_the_target_flags(capsys):
    for recipe in ("dcgan-alpha", "cyclegan-complement", "cgan-regimes", "dcgan-rare-findings", "sgan-scarcity",
                   "sgan-domain", "helps-map"):
        with pytest.raises(SystemExit):
            main(["recipe", recipe, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--target-mde D" in text and "--budget DURATION" in text and "--max-seeds N" in text, recipe
        assert "never at Δ or p" in text, recipe


# ---- the stopping rule on synthetic scores -----------------------------------------------------------------------
def _scores(n_images: int, n_seeds: int, seed_noise: float, seed: int = 0):
    """(labels, method scores, baseline scores): one fixed test set, each seed's models adding their own noise."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n_images) % 4 == 0).astype(float)
    signal = y + rng.normal(0, 1.0, n_images)  # what every model sees of an image (shared by all seeds)
    method = np.stack([signal + rng.normal(0, seed_noise, n_images) for _ in range(n_seeds)])
    baseline = np.stack([signal + rng.normal(0, seed_noise, n_images) for _ in range(n_seeds)])
    return y, method, baseline


def test_rule_reaches_the_target_or_stops_at_the_floor_the_ceiling_or_the_budget():
    big = seed_level_test(*_scores(4000, 3, 0.6))  # many test images: a low floor, three seeds still too few
    small = seed_level_test(*_scores(60, 3, 0.3))  # few test images: κ alone keeps the MDE above the target
    target = 0.01
    assert big.mde > target
    decision = decide({"big": big, "small": small, "untested": None}, target, max_seeds=30)
    assert set(decision) == {"big", "small"}
    assert decision["small"].stopped == FLOOR and decision["small"].floor > target
    assert decision["small"].next_seeds == 3
    grow = decision["big"]
    assert grow.stopped == "" and 3 < grow.next_seeds <= 6  # at most doubles per round
    assert big.mde_at(grow.next_seeds) < big.mde  # sized by the variance-only projection

    reached = decide({"big": big}, target=big.mde + 1e-6, max_seeds=30)["big"]
    assert reached.stopped == REACHED and reached.next_seeds == 3
    assert decide({"big": big}, target, max_seeds=3)["big"].stopped == MAX_SEEDS

    # a round costs 100 s per seed added: 250 s left buys two more seeds, 50 s none
    cost = lambda wanted: 100.0 * (wanted["big"] - 3)  # noqa: E731
    shrunk = decide({"big": big}, target, 30, round_seconds=cost, seconds_left=250)["big"]
    assert shrunk.stopped == "" and shrunk.next_seeds == 5
    assert decide({"big": big}, target, 30, round_seconds=cost, seconds_left=50)["big"].stopped == BUDGET


def test_rule_never_reads_delta_or_p():
    """The same per-seed spread and test-image term with every difference shifted by a constant: Δ and p change,
    the variances and therefore every decision do not."""
    rng, seen = np.random.default_rng(1), set()
    for kappa in (0.0, 2e-5, 4e-4):
        differences = rng.normal(0.0, 0.02, 4)
        plain, shifted = effect_from_parts(differences, kappa), effect_from_parts(differences + 0.05, kappa)
        assert shifted.delta != pytest.approx(plain.delta) and shifted.p != pytest.approx(plain.p)
        assert (shifted.seed_sd, shifted.floor) == pytest.approx((plain.seed_sd, plain.floor))
        for target in (0.005, 0.02, 0.05):
            for left in (np.inf, 150.0, 30.0):
                plain_row, shifted_row = (decide({"row": effect}, target, 12, lambda w: 60.0 * (w["row"] - 4),
                                                 left)["row"] for effect in (plain, shifted))
                seen.add(plain_row.stopped)
                assert (shifted_row.next_seeds, shifted_row.stopped) == (plain_row.next_seeds, plain_row.stopped)
                assert (shifted_row.mde, shifted_row.floor) == pytest.approx((plain_row.mde, plain_row.floor))
    assert seen == {"", REACHED, FLOOR, BUDGET}  # every kind of decision was met, shifted and not


# ---- a small real run ---------------------------------------------------------------------------------------------
def _target_compare(data, out, *extra):
    return main(["compare", data, "--methods", "none,oversample", "--seeds", "2", "--model", "small-cnn",
                 "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress", "--out", str(out),
                 "--target-mde", "0.3", "--max-seeds", "3", *extra])


@pytest.fixture(scope="module")
def target_run(small_file, tmp_path_factory):
    """A compare whose first round (2 seeds) cannot see 0.3 on 40 test images while its floor can: one more round
    (to the ceiling of 3 seeds), then it stops."""
    out = tmp_path_factory.mktemp("target")
    assert _target_compare(small_file, out) == 0
    return next(out.iterdir())


def _cells_run(printed: str) -> int:
    return len(re.findall(r"^\[\d+/\d+\] .* \.\.\.$", printed, flags=re.M))


def test_target_run_adds_a_round_then_says_why_each_row_stopped(target_run):
    rounds = read_rounds(target_run)
    assert [r["seeds_added"] for r in rounds] == [1, 0] and rounds[-1]["final"]
    first = rounds[0]["rows"][0]
    assert first["row"] == {"method": "oversample", "vs": "none"} and first["seeds"] == 2
    assert first["next_seeds"] == 3 and first["mde"] > 0.3 > first["floor"]
    assert {a["seeds"] for a in rounds[0]["arms"]} == {3}
    assert sorted(p.stem for p in (target_run / RECORDS_DIR).iterdir()) == [
        f"{m}-seed{s}" for m in ("none", "oversample") for s in range(3)]
    verdicts = (target_run / "verdicts.md").read_text()
    header = next(line for line in verdicts.splitlines() if line.startswith("| method"))
    assert re.search(r"\| seeds +\| stopped +\|", header)
    assert re.search(r"\| oversample \| none +\| 3 +\| max seeds +\|", verdicts)
    assert "never Δ or p" in verdicts
    config = json.loads((target_run / "config.json").read_text())
    assert config["config"]["run"]["target_mde"] == 0.3 and config["config"]["run"]["seeds"] == 2


def test_a_fixed_seed_run_keeps_todays_table(target_run):
    """`cxrgan report` on a copy without the rounds' log: the table of a run without --target-mde, no new column."""
    copy = target_run.parent / "fixed"
    shutil.copytree(target_run, copy)
    config = json.loads((copy / "config.json").read_text())
    del config["target_rounds"]
    (copy / "config.json").write_text(json.dumps(config))
    assert main(["report", str(copy)]) == 0
    assert "stopped" not in (copy / "verdicts.md").read_text()


def test_resumed_target_run_continues_its_rounds_without_retraining(target_run, small_file, capsys):
    """As if killed in round 2 after one of its two cells: the resumed run trains only the missing cell, then
    decides from the stored scores exactly as the uninterrupted run did."""
    run_dir = target_run.parent / "killed"
    shutil.copytree(target_run, run_dir)
    rounds = read_rounds(run_dir)
    write_rounds(run_dir, rounds[:1])
    (run_dir / RECORDS_DIR / "oversample-seed2.json").unlink()
    (run_dir / SCORES_DIR / "oversample-seed2.npz").unlink()
    kept = (run_dir / SCORES_DIR / "none-seed2.npz").read_bytes()
    capsys.readouterr()
    assert _target_compare(small_file, run_dir.parent, "--resume", str(run_dir)) == 0
    printed = capsys.readouterr().out
    assert _cells_run(printed) == 1 and "oversample seed 2 ..." in printed
    assert (run_dir / SCORES_DIR / "none-seed2.npz").read_bytes() == kept
    again = read_rounds(run_dir)
    strip = lambda r: {k: v for k, v in r.items() if k not in ("spent_seconds", "cell_seconds")}  # noqa: E731
    assert [strip(r) for r in again] == [strip(r) for r in rounds]
    finished_after_the_log = json.loads((run_dir / RECORDS_DIR / "none-seed2.json").read_text())["seconds"]
    assert again[1]["spent_seconds"] >= rounds[0]["spent_seconds"] + finished_after_the_log  # the killed time counts
    assert (run_dir / "verdicts.md").read_text() == (target_run / "verdicts.md").read_text()
    # a finished run resumed decides once more from its scores, to the same end, and trains nothing
    assert _target_compare(small_file, run_dir.parent, "--resume", str(run_dir)) == 0
    assert _cells_run(capsys.readouterr().out) == 0
    assert [strip(r) for r in read_rounds(run_dir)] == [strip(r) for r in rounds]


def test_dry_run_prints_the_first_round_and_says_later_ones_are_measured(small_file, tmp_path, capsys):
    assert _target_compare(small_file, tmp_path, "--dry-run", "--budget", "1h30m") == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "4 cells:" in printed and "oversample seed 1" in printed
    assert "round 1 (2 seeds)" in printed and "depends on the variances round 1 measures" in printed
    assert "1h30m" in printed or "90m00s" in printed
    assert not list(tmp_path.iterdir())


def test_resumed_with_a_higher_ceiling_but_no_budget_left_stops_for_the_budget(target_run, small_file, capsys):
    """--max-seeds and --budget may change on resume; the row that stopped at the ceiling would now get seeds, but
    the time already spent is over the new budget: no cell trains, and the row says why."""
    run_dir = target_run.parent / "budget"
    shutil.copytree(target_run, run_dir)
    capsys.readouterr()
    assert _target_compare(small_file, run_dir.parent, "--resume", str(run_dir), "--max-seeds", "6",
                           "--budget", "1s") == 0
    assert _cells_run(capsys.readouterr().out) == 0
    last = read_rounds(run_dir)[-1]
    assert last["final"] and last["round"] == 2 and last["rows"][0]["stopped"] == BUDGET
    assert re.search(r"\| oversample \| none +\| 3 +\| budget spent +\|", (run_dir / "verdicts.md").read_text())
    run = json.loads((run_dir / "config.json").read_text())["config"]["run"]
    assert (run["max_seeds"], run["budget_seconds"]) == (6, 1.0)
