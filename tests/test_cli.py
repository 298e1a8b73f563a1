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


@pytest.mark.parametrize("name, balancer, generator", [("compare", "dcgan", "dcgan"),
                                                      ("recipe cyclegan-complement", "cyclegan-complement", "cyclegan")])
def test_generator_flag_help_states_the_cpu_defaults_actually_used(name, balancer, generator, capsys):
    from cxrgan.balance import BalanceContext, make_balancer
    from cxrgan.generators import generator_class

    preset = generator_class(generator).cpu_preset
    with pytest.raises(SystemExit):
        build_parser().parse_args([*name.split(), "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"GAN training steps (CPU default {preset['steps']})" in text
    assert f"ngf = ndf (CPU default {preset['ngf']})" in text
    config = make_balancer(balancer, BalanceContext(0)).config  # what the methods train without the flags
    assert (config.steps, config.ngf) == (preset["steps"], preset["ngf"])


def test_train_gan_help_lists_every_method_with_what_it_models(capsys):
    from cxrgan.generators import GENERATORS

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train-gan", "--help"])
    lines = capsys.readouterr().out.splitlines()
    for name, cls in GENERATORS.items():
        assert any(line.split()[:1] == [name] and cls.summary in " ".join(line.split()) for line in lines), name


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
    assert main(["train-gan", "--method", "dcgan", "--data", str(data), "--target", "abnormal", "--gan-steps", "3",
                 "--gan-width", "8", "--out", str(tmp_path), "--device", "cpu", "--no-progress"]) == 0
    run_dir = next(tmp_path.glob("00000-dcgan-*"))
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "config.json").exists()
    assert main(["sample", str(run_dir), "--n", "6", "--out", str(tmp_path / "s.npz"), "--device", "cpu"]) == 0
    samples = load_npz(tmp_path / "s.npz")
    assert samples.images.shape == (6, 64, 64) and samples.synthetic.all()
    assert (samples.labels == 1).all()  # the DCGAN models the abnormal class
    capsys.readouterr()
    # Too few images of the asked class: a clean error naming the class.
    assert main(["train-gan", "--method", "dcgan", "--data", str(data), "--target", "normal", "--gan-steps", "1",
                 "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "'normal' has 4 training images" in capsys.readouterr().err
    assert main(["train-gan", "--method", "cyclegan", "--data", str(data), "--d-norm", "spectral",
                 "--out", str(tmp_path), "--device", "cpu"]) == 2
    assert "cyclegan: unknown setting(s) ['d_norm']" in capsys.readouterr().err


@pytest.mark.parametrize("method, extra, label", [
    ("cyclegan", ["--gan-width", "4", "--batch-size", "4"], "pneumonia"),
    ("sgan", ["--gan-width", "8", "--batch-size", "16"], None),
    ("cgan-labelvec", ["--gan-width", "8", "--quality-every", "2"], "Nodule"),
])
def test_train_gan_sample_audit_resume_and_list_any_method(method, extra, label, kermany_small, nih_path, tmp_path, capsys):
    """Every kind of registered generator trains from the CLI, samples, is audited, resumes and is listed."""
    import json

    if method == "cgan-labelvec":
        nih = load_npz(nih_path, target="findings")
        data = save_npz(nih.subset([*range(0, len(nih), 4)]), tmp_path / "nih.npz")
    else:
        data = save_npz(kermany_small, tmp_path / "small.npz")
    flags = ["--data", str(data), "--gan-steps", "4", *extra, "--out", str(tmp_path / "runs"), "--device", "cpu",
             "--no-progress"]
    assert main(["train-gan", "--method", method, *flags]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    assert json.loads((run_dir / "status.json").read_text())["step"] == 4
    out = tmp_path / "samples.npz"
    assert main(["sample", str(run_dir), "--n", "6", "--out", str(out), "--device", "cpu",
                 *(["--label", label] if label else [])]) == 0
    samples = load_npz(out, target="findings" if method == "cgan-labelvec" else "labels")
    assert len(samples) == 6 and samples.synthetic.all()
    if label:
        assert (samples.labels[:, samples.label_names.index(label)] == 1).all()
    capsys.readouterr()
    assert main(["audit", str(run_dir), "--n", "20", "--feature-epochs", "1", "--no-tstr", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "Fréchet distance" in printed and (run_dir / "audit" / "audit.json").exists()
    audit = json.loads((run_dir / "audit" / "audit.json").read_text())
    if method == "cyclegan":
        assert audit["synthetic_images"].startswith("translations of real validation images")
    if method == "sgan":
        assert audit["image_size"] == 32  # audited at the size the SGAN draws, the real splits resized to it
    # a finished run resumes as it is; a longer one continues from its checkpoint
    assert main(["train-gan", "--method", method, *flags, "--resume", str(run_dir)]) == 0
    assert main(["generators", "list", str(tmp_path / "runs")]) == 0
    listing = capsys.readouterr().out
    assert method in listing and "4/4" in listing and "FD" in listing
