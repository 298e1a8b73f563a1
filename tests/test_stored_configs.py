"""Run directories made before the recipe configs nested a ``RunSpec`` (and paper recipes a ``CompareConfig``) stay
readable: their config.json loads into today's configs, equals what today's command line builds from the same flags,
and a resume with those flags is accepted (so ``cxrgan report`` and ``--resume`` work on them).

``stored_configs/*.json`` are config.json files written by main at 3d586b1 (helps-map: at 4ec4db7, where it
arrived; ``{DATA}`` stands for the data folder): compare and dcgan-alpha from real runs, the other recipes from
their command lines.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cxrgan.recipes.all  # noqa: F401  (registers every recipe)
from cxrgan.cli import main
from cxrgan.engine import RECIPES
from cxrgan.engine import run as engine_run
from cxrgan.recipes import DATA_ROOT
from cxrgan.runs import config_changes, config_dict, from_dict, write_config

STORED = Path(__file__).with_name("stored_configs")
KERMANY = "{DATA}/kermany_pneumonia/kermany_pneumonia_64.npz"
# the command line each stored config was made with
COMMANDS = {
    "compare": ["compare", KERMANY, "--imbalance", "3:1", "--methods", "none,oversample", "--seeds", "2", "--model",
                "small-cnn", "--epochs", "1", "--no-progress"],
    "dcgan-alpha": ["recipe", "dcgan-alpha", "--data", KERMANY, "--methods", "none,oversample,dcgan,cdcgan-a0.5",
                    "--seeds", "2", "--epochs", "1", "--gan-steps", "30", "--tstr-images", "60", "--no-progress"],
    "cyclegan-complement": ["recipe", "cyclegan-complement", "--seeds", "2", "--epochs", "1"],
    "cgan-regimes": ["recipe", "cgan-regimes", "--seeds", "2", "--regimes", "0.1,1"],
    "dcgan-rare-findings": ["recipe", "dcgan-rare-findings", "--seeds", "2", "--findings", "Fibrosis"],
    "sgan-scarcity": ["recipe", "sgan-scarcity", "--seeds", "2", "--per-class", "10,25"],
    "sgan-domain": ["recipe", "sgan-domain", "--seeds", "2"],
    "helps-map": ["recipe", "helps-map", "--quick", "--seeds", "2"],
}


def built_by_today(argv: list[str], monkeypatch) -> object:
    """The config today's command line builds from ``argv`` (the engine is not started)."""
    built = []
    monkeypatch.setattr(engine_run, "run_recipe", lambda recipe, *args, **kwargs: built.append(recipe.config))
    assert main([a.replace("{DATA}", str(DATA_ROOT)) for a in argv]) == 0
    return built[0]


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_a_config_written_by_main_loads_and_resumes(kind, data_dir, tmp_path, monkeypatch):
    stored = json.loads((STORED / f"{kind}.json").read_text().replace("{DATA}", str(DATA_ROOT)))
    assert stored["kind"] == kind
    loaded = from_dict(RECIPES[kind].config_class, stored["config"])
    today = built_by_today(COMMANDS[kind], monkeypatch)
    assert config_changes(config_dict(loaded), config_dict(today)) == []
    spec = getattr(loaded, "compare", loaded).run  # the run fields, nested into the RunSpec
    assert (spec.seeds, spec.first_seed, spec.allow_patient_overlap) == (2, 0, False)
    assert spec.data[0].endswith(".npz") and spec.device == "auto"
    (tmp_path / "config.json").write_text(json.dumps(stored))
    write_config(tmp_path, today, kind=kind)  # --resume with the same flags is accepted ...
    assert json.loads((tmp_path / "config.json").read_text())["config"] == config_dict(today)  # ... and upgrades it


def test_a_resumed_run_may_raise_its_seeds_but_not_a_target_runs():
    assert config_changes({"run": {"seeds": 3, "target_mde": None}}, {"run": {"seeds": 5, "target_mde": None}}) == []
    assert config_changes({"run": {"seeds": 5}}, {"run": {"seeds": 3}}) == ["run.seeds: 5 -> 3"]
    # a --target-mde run's seeds after the first round are the rounds' to decide
    assert config_changes({"run": {"seeds": 3, "target_mde": 0.01}}, {"run": {"seeds": 5, "target_mde": 0.01}}) == [
        "run.seeds: 3 -> 5"]
