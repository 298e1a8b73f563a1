"""Recipe helps-map end to end on a small real Kermany subset: the map's shape, answers that follow the verdicts,
audits, the figure, the rebuilt report, the dry run and the shared-generator plan."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cxrgan.cli import main
from cxrgan.data import load_npz, save_npz
from cxrgan.evaluate.inference import effect_from_parts
from cxrgan.engine import RunSpec
from cxrgan.recipes.helps_map import HelpsMap
from cxrgan.recipes.helps_map_config import map_config
from cxrgan.recipes.helps_map_report import answer_sentence

COUNTS = (16, 30)
TINY = ["--minority", ",".join(map(str, COUNTS)), "--methods", "none,oversample,fastgan", "--seeds", "2",
        "--model", "small-cnn", "--epochs", "1", "--gan-steps", "3", "--gan-width", "8", "--device", "cpu",
        "--no-progress"]
PHRASES = {"better": "better than {b}", "worse": "worse than {b}",
           "no detectable difference": "no detectable difference from {b}"}


@pytest.fixture(scope="module")
def files(kermany_small, data_dir, tmp_path_factory):
    """The 240-image Kermany subset (120 pneumonia, 40 normal training rows) and 40 rows of NIH pneumonia as the
    external site."""
    folder = tmp_path_factory.mktemp("helps_map")
    site = load_npz(data_dir / "nih_pneumonia" / "nih_pneumonia_64.npz")
    site = site.subset(np.sort(np.concatenate([np.flatnonzero(site.labels[:, 0] == c)[:20] for c in (0, 1)])))
    return str(save_npz(kermany_small, folder / "small.npz")), str(save_npz(site, folder / "nih_site.npz"))


def _segments(sentence: str) -> dict[str, str]:
    """The answer sentence split by site: "" (internal test) and every "at SITE:" part."""
    body = sentence.split(": ", 1)[1].rstrip(".")
    parts = body.split("; at ")
    out = {"": parts[0]}
    out.update({part.split(": ", 1)[0]: part.split(": ", 1)[1] for part in parts[1:]})
    return out


def test_tiny_map_has_its_shape_and_answers_follow_the_verdicts(files, tmp_path, capsys):
    data, site = files
    assert main(["recipe", "helps-map", "--data", data, "--external", site, *TINY, "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    run_dir = next(tmp_path.iterdir())
    assert "where does each method help?" in printed
    # one row per minority count, the headroom beside it, every method's columns on both evaluation sets
    table = pd.read_csv(run_dir / "map.csv", dtype=str, keep_default_na=False)
    assert list(table["minority rows"]) == [str(n) for n in COUNTS] and set(table["seeds"]) == {"2"}
    for at in ("", " @ nih_site"):
        for column in ("none ROC AUC", "full ROC AUC", "headroom (full - none)", "oversample Δ vs none",
                       "fastgan Δ vs none", "fastgan Δ vs oversample", "fastgan p (Holm)", "fastgan verdict",
                       "fastgan min. detectable Δ"):
            assert column + at in table.columns, column + at
    assert all(" / " in v for v in table["fastgan verdict"])  # vs none / vs oversample
    # the same map at a glance: one row per evaluation set and point, the Δs of the map table
    summary = pd.read_csv(run_dir / "map_summary.csv", dtype=str, keep_default_na=False)
    assert list(zip(summary["site"], summary["minority rows"])) == [
        (site_name, str(n)) for site_name in ("internal test", "nih_site") for n in COUNTS]
    internal = summary[summary["site"] == "internal test"].reset_index(drop=True)
    for column in ("none ROC AUC", "full ROC AUC", "oversample Δ vs none", "fastgan Δ vs none",
                   "fastgan Δ vs oversample"):
        assert list(internal[column]) == list(table[column]), column
    assert "oversample Δ vs oversample" not in summary.columns and set(summary["detectable differences (Holm)"]) <= {
        "none", *(f"{m} {v} than {b}" for m in ("oversample", "fastgan") for v in ("better", "worse")
                  for b in ("none", "oversample"))}
    # every cell trained on its point's rows: the majority fixed, the minority cut to the count, one draw per seed
    stored = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    records = [r for r in stored if "analysis" not in r]
    assert len(records) == 2 * (len(COUNTS) * 3 + 1)
    for r in records:
        assert r["majority_rows"] == 39 and r["draw"] == r["seed"]
        assert r["minority_rows"] == (120 if r["minority"] == "full" else r["minority"])
    assert {r["generator_steps"].get("fastgan") for r in records if r["method"] == "fastgan"} == {3}
    # one Holm family over the whole map: 2 sets x 2 counts x (2 vs none + 1 vs oversample)
    verdicts = pd.read_csv(run_dir / "map_verdicts.csv", dtype=str, keep_default_na=False)
    assert len(verdicts) == 12 and set(verdicts["site"]) == {"internal test", "nih_site"}
    # the answer: one sentence per method, each verdict of the map in it, grouped by minority count
    answers = pd.read_csv(run_dir / "answer.csv", dtype=str, keep_default_na=False).set_index("method")["answer"]
    assert list(answers.index) == ["(headroom)", "oversample", "fastgan"]
    for method in ("oversample", "fastgan"):
        segments = _segments(answers[method])
        assert set(segments) == {"", "nih_site"}
        for (vs, where), rows in verdicts[verdicts["method"] == method].groupby(["vs", "site"]):
            segment = segments["" if where == "internal test" else where]
            name = "duplication (oversample)" if vs == "oversample" else vs
            by_count = dict(zip(rows["minority"], rows["verdict"]))
            if len(set(by_count.values())) == 1:
                verdict = by_count[str(COUNTS[0])]
                assert f"{PHRASES[verdict].format(b=name)} at every minority count from 16 to 30" in segment
            else:
                for count, verdict in by_count.items():
                    assert f"{PHRASES[verdict].format(b=name)} at {count} minority images" in segment
    # each point's generator audited against the minority rows it saw: one per count and draw
    audit = pd.read_csv(run_dir / "map_audit.csv", dtype=str, keep_default_na=False)
    assert sorted(zip(audit["minority rows"], audit["draw"])) == [(str(n), str(d)) for n in COUNTS for d in (0, 1)]
    assert {"FD", "recall", "coverage", "real-vs-synthetic AUC", "memorised (features)"} <= set(audit.columns)
    audited = [json.loads(p.read_text()) for p in (run_dir / "generators").rglob("audit/audit.json")]
    assert sorted(a["n_train"] for a in audited) == sorted([*COUNTS, *COUNTS])  # its own minority rows only
    assert (run_dir / "map.png").stat().st_size > 10_000
    assert "where does each method help?" in (run_dir / "report.html").read_text()
    # `cxrgan report` rebuilds the same map from the stored scores
    before = (run_dir / "map.md").read_text()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "map.md").read_text() == before


def test_answer_sentence_groups_counts_by_verdict():
    grid = [16, 25, 50, 100, 400]
    better = effect_from_parts([0.05, 0.05, 0.05 + 1e-3], kappa=1e-5)  # a large, consistent gain
    same = effect_from_parts([-0.01, 0.02, -0.01], kappa=1e-5)  # no consistent difference
    assert better.verdict == "better" and same.verdict == "no detectable difference"
    points = [(n, better if n <= 25 else same, "") for n in grid]
    sentence = answer_sentence("fastgan", [("oversample", "", points), ("none", "nih", [(n, same, "") for n in grid])],
                               conditional=True)
    assert sentence.startswith("fastgan: better than duplication (oversample) up to 25 minority images (Δ +0.050 [")
    assert ("no detectable difference from duplication (oversample) from 50 minority images on (min. detectable Δ"
            in sentence)
    assert "; at nih: no detectable difference from none at every minority count from 16 to 400" in sentence
    assert sentence.endswith("conditional on one generator per point shared by the classifier seeds.")
    scattered = answer_sentence("x", [("none", "", [(16, same, ""), (25, better, ""), (50, same, ""),
                                                    (100, None, "no seed finished by both")])])
    assert "no detectable difference from none at 16 and 50 minority images" in scattered
    assert "better than none at 25 minority images" in scattered
    assert "not tested against none (no seed finished by both) at 100 minority images" in scattered


def test_dry_run_and_shared_generators(files, tmp_path, capsys, monkeypatch):
    from cxrgan.engine import probes as probe

    data, _ = files
    probes = {}
    monkeypatch.setattr(probe, "_GENERATOR_PROBES", probes)
    assert main(["recipe", "helps-map", "--data", data, "--no-external", *TINY, "--dry-run",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "18 cells:" in printed and "fastgan minority 30 seed 1" in printed and "none minority full seed 1" in printed
    assert "audit minority 30 draw 1 generator fastgan-" in printed  # an audit cell per point and draw
    assert "estimated wall time" in printed and not list(tmp_path.iterdir())
    # FastGAN's batch is capped at its 16 or 30 images: one probe per point, shared by the seeds
    assert sorted(key[2][1] for key in probes) == [16, 30]
    # --generator-seeds 1: every classifier seed trains on the first draw (and its generator)
    recipe = HelpsMap(map_config(RunSpec(data, seeds=3), ("none", "fastgan"), minority=COUNTS, generator_seeds=1))
    recipe.plan()
    assert [recipe.draw_of(s) for s in range(3)] == [0, 0, 0] and list(recipe.draws) == [0]
    per_seed = HelpsMap(map_config(RunSpec(data, seeds=3), ("none", "fastgan"), minority=COUNTS))
    per_seed.plan()
    assert [per_seed.draw_of(s) for s in range(3)] == [0, 1, 2]
    assert [len(recipe.trained_generators()), len(per_seed.trained_generators())] == [2, 6]
