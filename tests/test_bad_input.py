"""Every bad input ends with one line ``cxrgan: error: ...`` naming the file, flag or value, exit code 2, and leaves
no result file behind (nothing that looks complete). One table of cases, all on small real Kermany / NIH files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cxrgan.cli import main
from cxrgan.data import CXRDataset, load_npz, save_npz

RESULT_FILES = ("results.jsonl", "results.md", "results.csv", "summary.json", "verdicts.md", "report.html")
COMPARE = ["--methods", "none,oversample", "--seeds", "1", "--model", "small-cnn", "--epochs", "1", "--device", "cpu",
           "--no-progress"]


def _save(arrays: dict, path: Path) -> str:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return str(path)


@pytest.fixture(scope="module")
def files(kermany_small, nih_path, tmp_path_factory):
    """Good and broken compact files built from real images."""
    folder = tmp_path_factory.mktemp("bad_input")
    good = save_npz(kermany_small, folder / "good.npz")
    with np.load(good) as archive:
        arrays = {k: archive[k] for k in archive.files}
    n = len(arrays["images"])
    out = {"good": str(good), "folder": folder}
    out["split_length"] = _save({**arrays, "split": arrays["split"][:-3]}, folder / "split_length.npz")
    out["labels_length"] = _save({**arrays, "labels": arrays["labels"][:-1]}, folder / "labels_length.npz")
    out["split_name"] = _save({**arrays, "split": np.where(arrays["split"] == "val", "valid", arrays["split"])},
                              folder / "split_name.npz")
    out["float_images"] = _save({**arrays, "images": arrays["images"].astype(np.float32)}, folder / "float_images.npz")
    out["no_labels"] = _save({k: v for k, v in arrays.items() if k != "labels"}, folder / "no_labels.npz")
    leaky_ids = arrays["patient_id"].copy()
    leaky_ids[np.flatnonzero(arrays["split"] == "test")[:2]] = leaky_ids[np.flatnonzero(arrays["split"] == "train")[:2]]
    # two test rows carry training patients' ids (namespaced ids, so no per-folder renaming can separate them)
    out["leaky"] = _save({**{k: v for k, v in arrays.items() if k != "official_split"}, "patient_id": leaky_ids},
                         folder / "leaky.npz")
    one_class = kermany_small.subset(np.flatnonzero(~((kermany_small.meta["split"] == "test").to_numpy()
                                                      & (kermany_small.labels[:, 0] == 0))))
    out["one_class_test"] = str(save_npz(one_class, folder / "one_class_test.npz"))
    wide = np.zeros((n, 64, 48), np.uint8)
    wide[:] = arrays["images"][:, :, 8:56]
    out["non_square"] = _save({**arrays, "images": wide}, folder / "non_square.npz")
    test_rows = kermany_small.split("test")
    extra = CXRDataset.concat([kermany_small.split("train").subset(np.arange(10)), test_rows.with_split("train")])
    out["extra_with_test"] = str(save_npz(extra, folder / "extra_with_test.npz"))
    nih = load_npz(nih_path)
    nih = nih.subset(np.sort(np.concatenate([np.flatnonzero(nih.labels[:, 0] == c)[:20] for c in (0, 1)])))
    out["external_nih"] = str(save_npz(nih, folder / "external_nih.npz"))
    out["external_shared_images"] = str(save_npz(kermany_small.split("test").subset(np.arange(20)),
                                                 folder / "external_shared_images.npz"))
    stolen_ids = nih.meta.assign(patient_id=kermany_small.meta["patient_id"].to_numpy()[:40])
    out["external_shared_patients"] = str(save_npz(CXRDataset(nih.images, nih.labels, nih.label_names, stolen_ids,
                                                              class_names=("normal", "pneumonia")),
                                                   folder / "external_shared_patients.npz"))
    findings = load_npz(nih_path, target="findings")
    renamed = CXRDataset(findings.images[:50], findings.labels[:50, :13], findings.label_names[:13],
                         findings.meta.iloc[:50])
    out["findings_13"] = str(save_npz(renamed, folder / "findings_13.npz"))
    out["findings_same_patients"] = str(save_npz(findings.subset(np.arange(60)), folder / "findings_same.npz"))
    (folder / "text.npz").write_text("not an archive")
    out["text"] = str(folder / "text.npz")
    (folder / "a_file").write_text("x")
    out["a_file"] = str(folder / "a_file")
    out["nih"] = str(nih_path)
    return out


def _compare(data: str, *extra: str) -> list[str]:
    return ["compare", data, *COMPARE, *extra]


CASES = {
    # ---- output and resume paths
    "out is a file": (lambda f, out: _compare(f["good"], "--out", f["a_file"]), "is a file, not a folder"),
    "out under a file": (lambda f, out: _compare(f["good"], "--out", f["a_file"] + "/runs"), "cannot create"),
    "resume not a run": (lambda f, out: _compare(f["good"], "--out", out, "--resume", str(f["folder"])),
                         "not a cxrgan run directory"),
    "report not a run": (lambda f, out: ["report", str(f["folder"])], "not a cxrgan run directory"),
    # ---- data files
    "missing data file": (lambda f, out: _compare(out + "/missing.npz", "--out", out), "missing.npz: no such file"),
    "not an npz": (lambda f, out: _compare(f["text"], "--out", out), "not a readable .npz"),
    "split length": (lambda f, out: _compare(f["split_length"], "--out", out), "'split' has shape"),
    "labels length": (lambda f, out: _compare(f["labels_length"], "--out", out), "'labels' has shape"),
    "unknown split name": (lambda f, out: _compare(f["split_name"], "--out", out), "unknown split name(s) ['valid']"),
    "float images": (lambda f, out: _compare(f["float_images"], "--out", out), "uint8"),
    "missing labels array": (lambda f, out: _compare(f["no_labels"], "--out", out), "missing array(s) ['labels']"),
    "patient in two splits": (lambda f, out: _compare(f["leaky"], "--out", out), "appear in more than one split"),
    "test split one class": (lambda f, out: _compare(f["one_class_test"], "--out", out),
                             "the test split has no 'normal' rows"),
    "non-square with a GAN": (lambda f, out: ["compare", f["non_square"], "--methods", "none,dcgan", "--out", out],
                              "need square images"),
    "findings target on binary file": (lambda f, out: _compare(f["good"], "--target", "findings", "--out", out),
                                       "needs 'findings'"),
    "extra data holds test images": (
        lambda f, out: ["compare", f["good"], "--methods", "none,cyclegan-complement-extra", "--gan-extra-data",
                        f["extra_with_test"], "--out", out], "pixel-identical to images of the test split"),
    "extra method without extra data": (
        lambda f, out: ["compare", f["good"], "--methods", "none,cyclegan-complement-extra", "--out", out],
        "need --gan-extra-data"),
    # ---- external sites
    "external classes differ": (lambda f, out: _compare(f["good"], "--external", f["external_nih"], "--out", out),
                                "map them with --external-labels"),
    "external shares images": (lambda f, out: _compare(f["good"], "--external", f["external_shared_images"],
                                                       "--out", out), "pixel-identical"),
    "external shares patients": (lambda f, out: _compare(f["good"], "--external", f["external_shared_patients"],
                                                         "--out", out), "patient id(s) also in"),
    "external labels malformed": (lambda f, out: _compare(f["good"], "--external", f["external_nih"],
                                                          "--external-labels", "abnormal", "--out", out),
                                  "expected EXTERNAL=OURS pairs"),
    # ---- methods, seeds, splits
    "unknown method": (lambda f, out: ["compare", f["good"], "--methods", "none,nonexistent", "--out", out],
                       "unknown method(s) ['nonexistent']"),
    "empty methods": (lambda f, out: ["compare", f["good"], "--methods", ",", "--out", out], "--methods is empty"),
    "duplicated method": (lambda f, out: ["compare", f["good"], "--methods", "none,none", "--out", out],
                          "more than once"),
    "baseline not among methods": (lambda f, out: ["compare", f["good"], "--methods", "oversample", "--out", out],
                                   "baseline 'none'"),
    "zero seeds": (lambda f, out: _compare(f["good"], "--seeds", "0", "--out", out), "--seeds 0: must be at least 1"),
    "negative seeds": (lambda f, out: _compare(f["good"], "--seeds", "-2", "--out", out), "--seeds -2: must be at least 1"),
    "imbalance zero": (lambda f, out: _compare(f["good"], "--imbalance", "0:1", "--out", out), "both parts"),
    "imbalance text": (lambda f, out: _compare(f["good"], "--imbalance", "three", "--out", out), "expected NEG:POS"),
    "train fraction zero": (lambda f, out: _compare(f["good"], "--train-fraction", "0", "--out", out),
                            "--train-fraction 0.0: must be above 0"),
    "train fraction above one": (lambda f, out: _compare(f["good"], "--train-fraction", "1.5", "--out", out),
                                 "--train-fraction 1.5: must be at most 1"),
    # ---- classifier settings
    "unknown model": (lambda f, out: _compare(f["good"], "--model", "vgg99", "--out", out), "--model 'vgg99'"),
    "zero epochs": (lambda f, out: _compare(f["good"], "--epochs", "0", "--out", out), "--epochs 0"),
    "negative lr": (lambda f, out: _compare(f["good"], "--lr", "-1", "--out", out), "--lr -1.0: must be above 0"),
    "missing weights": (lambda f, out: _compare(f["good"], "--weights", out + "/w.pt", "--out", out),
                        "--weights"),
    "cuda without cuda": (lambda f, out: _compare(f["good"], "--device", "cuda", "--out", out),
                          "CUDA is not available"),
    "unknown augmentation": (lambda f, out: _compare(f["good"], "--augment", "rotate", "--out", out),
                             "argument --augment"),
    # ---- recipes and tools
    "regimes text": (lambda f, out: ["recipe", "cgan-regimes", "--data", f["nih"], "--regimes", "half", "--out", out],
                     "--regimes 'half'"),
    "regime above one": (lambda f, out: ["recipe", "cgan-regimes", "--data", f["nih"], "--regimes", "0.5,2",
                                         "--out", out], "--regimes must be shares in (0, 1]"),
    "unknown finding": (lambda f, out: ["recipe", "dcgan-rare-findings", "--data", f["nih"], "--findings", "Flu",
                                        "--out", out], "unknown finding(s) ['Flu']"),
    "joined files with other findings": (lambda f, out: ["recipe", "cgan-regimes", "--data", f["nih"], "--data",
                                                         f["findings_13"], "--out", out], "joined files need the same"),
    "joined files share patients": (lambda f, out: ["recipe", "dcgan-rare-findings", "--data", f["nih"], "--data",
                                                    f["findings_same_patients"], "--out", out],
                                    "joined files must hold different patients"),
    "per-class zero": (lambda f, out: ["recipe", "sgan-scarcity", "--data", f["good"], "--per-class", "0,10",
                                       "--out", out], "--per-class needs positive sizes"),
    "recipe zero seeds": (lambda f, out: ["recipe", "sgan-domain", "--data", f["good"], "--second-data", f["good"],
                                          "--seeds", "0", "--out", out], "--seeds 0: must be at least 1"),
    "info of a leaky file": (lambda f, out: ["data", "info", f["leaky"]], "appear in more than one split"),
    "prepare size zero": (lambda f, out: ["data", "prepare", f["good"], "--size", "0", "--out", out + "/x.npz"],
                          "--size 0: must be at least 1"),
}


def _result_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name in RESULT_FILES or p.name.endswith(".tmp")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, files, tmp_path, capsys):
    build, expected = CASES[case]
    out = tmp_path / "out"
    code = _run(build(files, str(out)))
    err = capsys.readouterr().err
    assert code == 2, (case, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxrgan: error:"), (case, err)
    assert expected in lines[0], (case, lines[0])
    assert "Traceback" not in err
    assert not _result_files(tmp_path), (case, _result_files(tmp_path))
    assert not [p for p in Path(files["folder"]).rglob("*") if p.name in RESULT_FILES]


def _run(argv: list[str]) -> int:
    """The exit code of ``cxrgan ARGV``, also when argparse exits on a malformed flag."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_changed_settings_on_resume_are_refused_and_keep_the_run(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_compare(files["good"], "--out", str(out))) == 0
    run_dir = next(out.iterdir())
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(_compare(files["good"], "--out", str(out), "--resume", str(run_dir), "--epochs", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.epochs: 1 -> 3" in err[0]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_leaky_data_is_accepted_with_the_override(files, tmp_path, capsys):
    assert main(["data", "info", files["leaky"], "--allow-patient-overlap"]) == 0
    captured = capsys.readouterr()
    assert "patients in more than one split: 2" in captured.out and "accepted by --allow-patient-overlap" in captured.err
    dataset = load_npz(files["leaky"], allow_patient_overlap=True)
    assert len(dataset) == 240
    assert os.path.exists(files["leaky"])
