"""A third-party package's generator and method, registered through entry points (the example plugin under
examples/, made visible through a temporary .dist-info on sys.path, which importlib.metadata reads as an installed
distribution): listed by the commands, passing the public contract checks, and run in a tiny comparison."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from cxrgan import plugins
from cxrgan.balance import BALANCERS, BalanceContext
from cxrgan.cli import main
from cxrgan.data import save_npz
from cxrgan.generators import GENERATORS, GeneratorSettings
from cxrgan.io import read_jsonl
from cxrgan.testing import check_balancer, check_generator

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "cxrgan-vae-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The example package "installed": its source on sys.path and a .dist-info with the entry points its
    pyproject.toml declares."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("site")
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items()) + "\n"
        for group, points in project["entry-points"].items()))
    sys.path[:0] = [str(site), str(EXAMPLE / "src")]
    try:
        yield plugins.load_plugins()
    finally:
        plugins.unload_plugins()
        for path in (str(site), str(EXAMPLE / "src")):
            sys.path.remove(path)


def test_entry_points_register_a_generator_and_methods(installed, capsys):
    assert installed == {"vae": "generator and method", "vae-half": "method"}
    assert "vae" in GENERATORS and {"vae", "vae-half"} <= set(BALANCERS)
    assert plugins.load_plugins() == {}  # loading again adds nothing
    with pytest.raises(SystemExit):
        main(["train-gan", "--help"])
    assert "vae" in capsys.readouterr().out and "Kingma & Welling" in GENERATORS["vae"].summary
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    assert "vae-half" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


def test_plugin_generator_passes_the_contract_check(installed):
    check_generator(GENERATORS["vae"])


def test_plugin_method_passes_the_balancer_check(installed):
    from cxrgan_vae.balancers import vae_half

    out = check_balancer(vae_half, expect="any", context=BalanceContext(0, generators=GeneratorSettings(4, 8)))
    normal = int((out.labels[:, 0] == 0).sum())
    assert normal == 24 and out.synthetic.sum() == 8  # 16 normal rows grown to half the 48 pneumonia rows


def test_plugin_generator_runs_in_compare(installed, kermany_small, tmp_path, capsys):
    data = save_npz(kermany_small, tmp_path / "kermany_small.npz")
    assert main(["compare", str(data), "--methods", "none,vae", "--seeds", "1", "--gan-steps", "3", "--gan-width", "8",
                 "--model", "small-cnn", "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--no-progress",
                 "--out", str(tmp_path / "runs")]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    records = {r["method"]: r for r in read_jsonl(run_dir / "results.jsonl")}
    assert records["vae"]["train_synthetic"] == 80  # the VAE of the 40 normal rows fills them up to 120
    assert list((run_dir / "generators" / "gan").glob("vae-*/checkpoint.pt"))  # trained through the cache
