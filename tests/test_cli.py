"""The command line: data tools on real files, clean error messages, help for every registered command."""

from __future__ import annotations

import pytest

from cxrgan.cli import COMMANDS, build_parser, main
from cxrgan.data import load_npz, save_npz


def test_every_command_and_group_has_help(capsys):
    groups = {name.split()[0] for name in COMMANDS if " " in name}
    for name in [*COMMANDS, *groups, ""]:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([*name.split(), "--help"])  # help text is %-formatted by argparse
        assert exit_info.value.code == 0
        assert ("usage: cxrgan " + name).strip() in capsys.readouterr().out


@pytest.mark.parametrize("name, module", [("compare", "cxrgan.balance.gan"),
                                          ("recipe cyclegan-complement", "cxrgan.balance.complement")])
def test_generator_flag_help_states_the_cpu_defaults_actually_used(name, module, capsys):
    import importlib

    defaults = importlib.import_module(module)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*name.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"GAN training steps (CPU default {defaults.CPU_TRAIN_STEPS})" in text
    assert f"ngf = ndf (CPU default {defaults.CPU_DEFAULTS['ngf']})" in text


def test_data_prepare_and_info_on_a_real_file(kermany_small, tmp_path, capsys):
    source = save_npz(kermany_small, tmp_path / "small64.npz")
    assert main(["data", "prepare", str(source), "--size", "32", "--out", str(tmp_path / "small32.npz")]) == 0
    resized = load_npz(tmp_path / "small32.npz")
    assert resized.images.shape == (240, 32, 32)
    assert resized.counts_table().equals(kermany_small.counts_table())
    capsys.readouterr()
    assert main(["data", "info", str(tmp_path / "small32.npz")]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "pneumonia" in out and "3.00:1" in out


def test_errors_are_one_clean_line(tmp_path, capsys):
    (tmp_path / "broken.npz").write_bytes(b"garbage")
    assert main(["data", "info", str(tmp_path / "broken.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cxrgan: error:") and "broken.npz" in err and "Traceback" not in err


def test_train_gan_then_sample(data_dir, tmp_path, capsys):
    data = data_dir / "covid_chestxray_ieee8023" / "covid_chestxray_ieee8023_64.npz"
    assert main(["train-gan", "--method", "dcgan", "--data", str(data), "--target", "abnormal", "--epochs", "1",
                 "--ngf", "8", "--ndf", "8", "--out", str(tmp_path), "--device", "cpu", "--no-progress"]) == 0
    run_dir = next(tmp_path.glob("00000-dcgan-*"))
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "config.json").exists()
    assert main(["sample", str(run_dir), "--n", "6", "--out", str(tmp_path / "s.npz"), "--device", "cpu"]) == 0
    samples = load_npz(tmp_path / "s.npz")
    assert samples.images.shape == (6, 64, 64) and samples.synthetic.all()
    assert (samples.labels == 1).all()  # the DCGAN models the abnormal class
    capsys.readouterr()
    # Too few images of the asked class: a clean error naming the class.
    assert main(["train-gan", "--method", "dcgan", "--data", str(data), "--target", "normal", "--epochs", "1",
                 "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "'normal' has 4 training images" in capsys.readouterr().err
