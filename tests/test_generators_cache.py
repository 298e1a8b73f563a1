"""The one generator cache on real images: what its key holds, reuse across callers, resume, and its listing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from cxrgan.cli import main
from cxrgan.generators import CDCGANConfig, DCGANConfig, GeneratorSettings, GeneratorSpec, cache_entries, fit_or_load
from cxrgan.generators.cache import cache_dir
from cxrgan.errors import CxrganError
from generator_contract import TINY, small_train_split

SPEC = GeneratorSpec("dcgan", DCGANConfig(**TINY, target="pneumonia", quality_every=2))


@pytest.fixture(scope="module")
def train64(kermany_small):
    return small_train_split(kermany_small)


def test_key_holds_what_decides_the_trained_model(train64):
    def key(spec, data=train64):
        return cache_dir("w", spec, data).name

    same = dataclasses.replace(SPEC.config, progress=True, log_every=1, checkpoint_every=1, grid_every=1)
    assert key(GeneratorSpec("dcgan", same)) == key(SPEC)  # run-only fields do not change what is trained
    for changes in ({"seed": 1}, {"steps": 5}, {"ngf": 16}, {"quality_every": 0}, {"target": "normal"}):
        assert key(GeneratorSpec("dcgan", dataclasses.replace(SPEC.config, **changes))) != key(SPEC), changes
    relabelled = dataclasses.replace(train64, labels=1 - train64.labels)
    assert key(SPEC, relabelled) != key(SPEC)
    alphas = {key(GeneratorSpec("cdcgan", CDCGANConfig(**TINY, alpha=a))) for a in (0.25, 0.5, 0.75)}
    assert len(alphas) == 1  # alpha only chooses labels at sampling time
    with pytest.raises(CxrganError, match="takes a CycleGANConfig, got DCGANConfig"):
        GeneratorSpec("cyclegan", SPEC.config)


def test_fit_or_load_trains_once_then_loads_the_same_model(train64, tmp_path):
    first = fit_or_load(SPEC, train64, tmp_path)
    (entry,) = (tmp_path / "gan").iterdir()
    stamp = (entry / "checkpoint.pt").stat().st_mtime_ns
    second = fit_or_load(dataclasses.replace(SPEC, config=dataclasses.replace(SPEC.config, progress=True)), train64,
                         tmp_path)
    assert (entry / "checkpoint.pt").stat().st_mtime_ns == stamp, "loaded, not retrained"
    assert second.config.progress  # the caller's run-only settings, the cached weights
    a, _ = first.sample(8, generator=torch.Generator().manual_seed(0))
    b, _ = second.sample(8, generator=torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(a, b)  # both the best-scoring model (best.pt)
    in_memory = fit_or_load(SPEC, train64, None)
    np.testing.assert_array_equal(in_memory.sample(8, generator=torch.Generator().manual_seed(0))[0], a)


def test_an_interrupted_entry_resumes(train64, tmp_path):
    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    spec = dataclasses.replace(SPEC, config=dataclasses.replace(SPEC.config, checkpoint_every=2))
    with pytest.raises(KeyboardInterrupt):
        fit_or_load(spec, train64, tmp_path, step_hook=interrupt)
    steps = []
    fit_or_load(spec, train64, tmp_path, step_hook=steps.append)
    assert steps == [3, 4]  # continued from the step-2 checkpoint
    (row,) = cache_entries(tmp_path)
    assert row["steps"] == "4/4" and row["method"] == "dcgan"


def test_generators_list_shows_config_steps_quality(train64, tmp_path, capsys):
    fit_or_load(SPEC, train64, tmp_path)
    fit_or_load(GeneratorSpec.resolve("cdcgan", GeneratorSettings(steps=3, width=8), seed=4, batch_size=16,
                                      quality_every=0, progress=False), train64, tmp_path)
    rows = {r["method"]: r for r in cache_entries(tmp_path)}
    assert set(rows) == {"dcgan", "cdcgan"}
    assert rows["dcgan"]["quality FD (best @ step)"].endswith(("@ 2", "@ 4"))
    assert rows["cdcgan"]["quality FD (best @ step)"] == "" and rows["cdcgan"]["steps"] == "3/3"
    assert "seed=4" in rows["cdcgan"]["config"] and "ngf=8" in rows["cdcgan"]["config"]
    assert rows["dcgan"]["training rows"] == 48
    assert main(["generators", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| entry" in out and "gan/dcgan-" in out and "target=pneumonia" in out
    (tmp_path / "empty").mkdir()
    assert main(["generators", "list", str(tmp_path / "empty")]) == 0
    assert "no trained generator" in capsys.readouterr().out
    assert main(["generators", "list", str(tmp_path / "missing")]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
