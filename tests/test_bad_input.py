"""Every bad input ends with one line ``cxrgan: error: ...`` naming the file, flag or value, exit code 2, and leaves
no result file behind (nothing that looks complete) and every run directory it was pointed at as it was. One table
of cases, all on small real Kermany / NIH files and on a small finished compare run and GAN run made from them; a
second table holds damaged inputs cxrgan recovers from (a warning line, then the work is done)."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from _data_helpers import RunsCode, write_bomb, write_members
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
    train = kermany_small.split("train")
    both = np.concatenate([np.flatnonzero(train.labels[:, 0] == c)[:10] for c in (0, 1)])
    site = train.subset(both)  # ten training images of each class, every pixel + 1, under other patient ids
    site = CXRDataset(np.clip(site.images.astype(np.int16) + 1, 0, 255).astype(np.uint8), site.labels,
                      site.label_names, site.meta.assign(patient_id=[f"site-{i}" for i in range(20)]),
                      class_names=site.class_names)
    out["external_shifted_train"] = str(save_npz(site, folder / "external_shifted_train.npz"))
    # --synthetic files, all from real training images (the checks come before any use of the pixels)
    synthetic = {"images": train.images[:30], "labels": train.labels[:30, 0].astype(np.int8),
                 "label_names": np.array(["normal", "pneumonia"])}
    out["synthetic_names"] = _save({**synthetic, "label_names": np.array(["healthy", "sick"])},
                                   folder / "synthetic_names.npz")
    out["synthetic_rgb"] = _save({**synthetic, "images": np.repeat(train.images[:30, :, :, None], 3, axis=3)},
                                 folder / "synthetic_rgb.npz")
    out["synthetic_empty"] = _save({**synthetic, "images": train.images[:0], "labels": synthetic["labels"][:0]},
                                   folder / "synthetic_empty.npz")
    pneumonia = np.flatnonzero(train.labels[:, 0] == 1)[:30]  # the majority class of good.npz's training split
    out["synthetic_one_class"] = _save({**synthetic, "images": train.images[pneumonia],
                                        "labels": np.ones(30, np.int8)}, folder / "synthetic_one_class.npz")
    test = kermany_small.split("test")
    out["synthetic_mirrored_test"] = _save({**synthetic, "images": np.ascontiguousarray(test.images[:30, :, ::-1]),
                                            "labels": test.labels[:30, 0].astype(np.int8)},
                                           folder / "synthetic_mirrored_test.npz")
    for name in ("normal", "pneumonia"):
        (folder / "synthetic_folder" / name).mkdir(parents=True)
    (folder / "synthetic_folder" / "normal" / "notes.txt").write_text("no images here")
    out["synthetic_folder"] = str(folder / "synthetic_folder")
    (folder / "text.npz").write_text("not an archive")
    out["text"] = str(folder / "text.npz")
    (folder / "a_file").write_text("x")
    out["a_file"] = str(folder / "a_file")
    out["nih"] = str(nih_path)
    _hostile_files(arrays, folder, out)
    _finished_runs(out, tmp_path_factory.mktemp("finished_runs"))
    return out


def _hostile_files(arrays: dict, folder: Path, out: dict) -> None:
    """Data and weight files that break the loaders' assumptions: text or pickled arrays, headers claiming more than
    is stored, compression bombs, unknown evaluation labels, weights that are no state dict."""
    n = len(arrays["images"])
    names = np.asarray(arrays["label_names"])
    out["string_labels"] = _save({**arrays, "labels": names[arrays["labels"]]}, folder / "string_labels.npz")
    with open(folder / "object_labels.npz", "wb") as f:  # numpy pickles an object array
        np.savez(f, **{**arrays, "labels": arrays["labels"].astype(object)})
    out["object_labels"] = str(folder / "object_labels.npz")
    out["more_rows_claimed"] = write_members(folder / "more_rows.npz", arrays, {"images": (n + 50, 64, 64)})
    out["bomb"] = write_bomb(folder / "bomb.npz", 80_000)  # 328 MB of pixels in 1.4 MB
    test_rows = np.flatnonzero(arrays["split"] == "test")
    unknown = arrays["labels"].copy()
    unknown[test_rows[:3]] = -1
    out["test_unknown"] = _save({**arrays, "labels": unknown}, folder / "test_unknown.npz")
    val_nan = arrays["labels"].astype(np.float32)
    val_nan[np.flatnonzero(arrays["split"] == "val")[:2]] = np.nan
    out["val_nan"] = _save({**arrays, "labels": val_nan}, folder / "val_nan.npz")
    with np.load(out["external_nih"]) as site:
        site_arrays = {k: site[k] for k in site.files}
    site_arrays["labels"][:2] = -1
    out["external_unknown"] = _save(site_arrays, folder / "external_unknown.npz")
    out["per_image_split"] = _save({**arrays, "split_method": np.array("image")}, folder / "per_image_split.npz")
    torch.save(torch.ones(3), folder / "bare_tensor.pt")
    torch.save([torch.ones(3)], folder / "list.pt")
    from cxrgan.classify.networks import build_classifier

    state = build_classifier("small-cnn", 1).state_dict()
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               folder / "nan_weights.pt")
    with open(folder / "hostile.pt", "wb") as f:
        pickle.dump({"model": RunsCode(folder / "PWNED")}, f)
    (folder / "weights_dir").mkdir()
    out.update({name: str(folder / f"{name}.pt") for name in ("bare_tensor", "list", "nan_weights", "hostile")})
    out["weights_dir"] = str(folder / "weights_dir")


def _finished_runs(out: dict, home: Path) -> None:
    """A finished compare run (none, one seed, small CNN) and a finished tiny DCGAN run with best.pt."""
    assert main(["compare", out["good"], "--methods", "none", *COMPARE[2:], "--out", str(home / "compare")]) == 0
    out["run"] = str(next((home / "compare").iterdir()))
    assert main(["train-gan", "--method", "dcgan", "--data", out["good"], "--gan-steps", "4", "--gan-width", "8",
                 "--batch-size", "16", "--quality-every", "2", "--no-progress", "--device", "cpu",
                 "--out", str(home / "gan")]) == 0
    out["gan"] = str(next((home / "gan").iterdir()))
    out["runs_home"] = home


SNAPSHOTS: dict[Path, dict] = {}  # run directories a case was pointed at -> their files before the command


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _copy(f: dict, key: str, name: str, damage=None) -> str:
    """A copy of the finished run ``f[key]``, damaged by ``damage(copy)``; the test checks nothing in it changes."""
    target = Path(f["runs_home"]) / "copies" / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(f[key], target)
    if damage is not None:
        damage(target)
    SNAPSHOTS[target] = _snapshot(target)
    return str(target)


def _write(relative: str, content: bytes):
    def damage(run: Path) -> None:
        (run / relative).write_bytes(content)
    return damage


def _hostile_pickle(folder: Path) -> bytes:
    return pickle.dumps({"method": "dcgan", "networks": RunsCode(folder / "PWNED")})


def _legacy_results(broken: bytes):
    """A run directory as written before records/ existed (results.jsonl only), whose results.jsonl is damaged."""
    def damage(run: Path) -> None:
        shutil.rmtree(run / "records")
        (run / "results.jsonl").write_bytes(broken)
    return damage


def _users_folder(f: dict) -> str:
    folder = Path(f["runs_home"]) / "copies" / "users_figures"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    shutil.copy(Path(f["run"]) / "roc.png", folder / "roc.png")
    (folder / "report.html").write_text("<html>the user's own page</html>")
    SNAPSHOTS[folder] = _snapshot(folder)
    return str(folder)


def _changed_data_run(f: dict) -> tuple[str, str]:
    """A copy of the finished run and of its data file, every image of the data altered (labels, splits, ids kept)."""
    run = Path(_copy(f, "run", "changed_data"))
    data = Path(f["runs_home"]) / "copies" / "changed_data.npz"
    with np.load(f["good"]) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["images"] = 255 - arrays["images"]
    _save(arrays, data)
    config = (run / "config.json").read_text().replace(f["good"], str(data))
    (run / "config.json").write_text(config)
    SNAPSHOTS[run] = _snapshot(run)
    return str(data), str(run)


@contextlib.contextmanager
def _file_size_limit(limit: int):
    """Writes beyond ``limit`` bytes fail (EFBIG), as on a full disk (ENOSPC): the same error path."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


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
                        f["extra_with_test"], "--out", out], "near-duplicates of images of the test split"),
    "extra method without extra data": (
        lambda f, out: ["compare", f["good"], "--methods", "none,cyclegan-complement-extra", "--out", out],
        "need --gan-extra-data"),
    # ---- external sites
    "external classes differ": (lambda f, out: _compare(f["good"], "--external", f["external_nih"], "--out", out),
                                "map them with --external-labels"),
    "external shares images": (lambda f, out: _compare(f["good"], "--external", f["external_shared_images"],
                                                       "--out", out), "near-duplicates of images of"),
    "external is the training images + 1": (
        lambda f, out: _compare(f["good"], "--external", f["external_shifted_train"], "--out", out),
        "20 of its 20 images are near-duplicates of images of"),
    # ---- synthetic files
    "synthetic label names differ": (
        lambda f, out: _compare(f["good"], "--synthetic", f["synthetic_names"], "--out", out),
        "its label names ['healthy', 'sick'] differ from the data's ['normal', 'pneumonia']"),
    "synthetic images not (N, H, W)": (
        lambda f, out: _compare(f["good"], "--synthetic", f["synthetic_rgb"], "--out", out),
        "'images' must be an (N, H, W) uint8 array, got (30, 64, 64, 3)"),
    "synthetic file empty": (lambda f, out: _compare(f["good"], "--synthetic", f["synthetic_empty"], "--out", out),
                             "synthetic_empty.npz: holds no images"),
    "synthetic majority class only": (
        lambda f, out: _compare(f["good"], "--synthetic", f["synthetic_one_class"], "--out", out),
        "holds ['pneumonia'] images only; balance adds 80 'normal' images per seed"),
    "synthetic folder without images": (
        lambda f, out: _compare(f["good"], "--synthetic", f["synthetic_folder"], "--out", out),
        "no .png/.jpg/.jpeg/.dcm/.dicom images"),
    "synthetic copies test images": (
        lambda f, out: _compare(f["good"], "--synthetic", f["synthetic_mirrored_test"], "--out", out),
        "30 of its 30 images are near-duplicates of images of the test split of"),
    "synthetic row without its file": (
        lambda f, out: ["compare", f["good"], "--methods", "none,synthetic:x", "--out", out],
        "unknown method(s) ['synthetic:x']"),
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
    "map minority above the class": (lambda f, out: ["recipe", "helps-map", "--data", f["good"], "--minority",
                                                     "16,500", "--no-external", "--out", out],
                                     "--minority 500: larger than the 120 'pneumonia' training rows"),
    "map minority below a generator's need": (lambda f, out: ["recipe", "helps-map", "--data", f["good"],
                                                              "--minority", "10,30", "--methods", "none,fastgan",
                                                              "--no-external", "--out", out],
                                              "--minority 10: fastgan trains a fastgan, which needs at least 16"),
    "map minority not below the majority": (lambda f, out: ["recipe", "helps-map", "--data", f["good"], "--minority",
                                                            "39", "--methods", "none", "--no-external", "--out", out],
                                            "--minority 39: not below the 39 fixed 'normal' rows (the limit is 38"),
    "map majority above the class": (lambda f, out: ["recipe", "helps-map", "--data", f["good"], "--majority", "41",
                                                     "--no-external", "--out", out],
                                     "--majority 41: the training split holds 40 'normal' rows"),
    "map generator seeds above the seeds": (lambda f, out: ["recipe", "helps-map", "--data", f["good"], "--seeds", "2",
                                                            "--generator-seeds", "3", "--out", out],
                                            "--generator-seeds 3: must lie in 1..--seeds (2)"),
    "info of a leaky file": (lambda f, out: ["data", "info", f["leaky"]], "appear in more than one split"),
    "prepare size zero": (lambda f, out: ["data", "prepare", f["good"], "--size", "0", "--out", out + "/x.npz"],
                          "--size 0: must be at least 1"),
    # ---- the loaders validate before they cast or map (root cause: casts and memory maps came first)
    "text labels": (lambda f, out: _compare(f["string_labels"], "--out", out), "'labels' must hold numbers"),
    "pickled labels": (lambda f, out: _compare(f["object_labels"], "--out", out), "holds Python objects"),
    "images header claims more rows": (lambda f, out: _compare(f["more_rows_claimed"], "--out", out),
                                       "its header claims shape (290, 64, 64)"),
    "compression bomb": (lambda f, out: _compare(f["bomb"], "--out", out), "refused before decompressing"),
    # ---- data info runs the loaders' checks
    "info of float images": (lambda f, out: ["data", "info", f["float_images"]], "uint8"),
    "info of text labels": (lambda f, out: ["data", "info", f["string_labels"]], "'labels' must hold numbers"),
    "info of a compression bomb": (lambda f, out: ["data", "info", f["bomb"]], "refused before decompressing"),
    "prepare from a compression bomb": (lambda f, out: ["data", "prepare", f["bomb"], "--out", out + "/x.npz"],
                                        "refused before decompressing"),
    # ---- unknown labels in evaluation sets are refused up front, naming file, split and count
    "unknown test labels": (lambda f, out: _compare(f["test_unknown"], "--out", out),
                            "test_unknown.npz: the test split has 3 row(s) with an unknown label"),
    "NaN validation labels": (lambda f, out: _compare(f["val_nan"], "--out", out),
                              "val_nan.npz: the val split has 2 row(s) with an unknown label"),
    "unknown external labels": (lambda f, out: _compare(f["good"], "--external", f["external_unknown"],
                                                        "--external-labels", "abnormal=pneumonia", "--out", out),
                                "external_unknown.npz has 2 row(s) with an unknown label"),
    # ---- --weights is read and checked before anything is written
    "weights a bare tensor": (lambda f, out: _compare(f["good"], "--weights", f["bare_tensor"], "--out", out),
                              "bare_tensor.pt: holds a Tensor, not a weights file"),
    "weights a list": (lambda f, out: _compare(f["good"], "--weights", f["list"], "--out", out),
                       "list.pt: holds a list"),
    "weights NaN": (lambda f, out: _compare(f["good"], "--weights", f["nan_weights"], "--out", out),
                    "holds NaN or infinite values"),
    "weights a hostile pickle": (lambda f, out: _compare(f["good"], "--weights", f["hostile"], "--out", out),
                                 "hostile.pt: not a readable weights file (refused"),
    "weights a folder": (lambda f, out: _compare(f["good"], "--weights", f["weights_dir"], "--out", out),
                         "weights_dir: is a folder, not a weights file"),
    # ---- run files are loaded through guards
    "sample a truncated best.pt": (lambda f, out: ["sample", _copy(f, "gan", "truncated", _write("best.pt", b"PK\x03")),
                                                   "--n", "4", "--out", out + "/grid.png"],
                                   "best.pt: not a readable generator checkpoint"),
    "sample a hostile best.pt": (
        lambda f, out: ["sample", _copy(f, "gan", "hostile", _write("best.pt", _hostile_pickle(Path(out).parent))),
                        "--n", "4", "--out", out + "/grid.png"], "refused by torch's weights-only loader"),
    # ---- numeric flags are range-checked before anything runs
    "first seed negative": (lambda f, out: _compare(f["good"], "--first-seed", "-1", "--out", out),
                            "--first-seed -1: must be at least 0"),
    "first seed 1e20": (lambda f, out: _compare(f["good"], "--first-seed", str(10**20), "--out", out),
                        "--first-seed 100000000000000000000: must be at most"),
    "lr inf": (lambda f, out: _compare(f["good"], "--lr", "inf", "--out", out), "--lr inf: must be a finite number"),
    "batch size huge": (lambda f, out: _compare(f["good"], "--batch-size", str(10**12), "--out", out),
                        "--batch-size 1000000000000: must be at most"),
    "gan steps zero": (lambda f, out: ["train-gan", "--method", "dcgan", "--data", f["good"], "--gan-steps", "0",
                                       "--out", out], "--gan-steps 0: must be at least 1"),
    "ema decay above one": (lambda f, out: ["train-gan", "--method", "dcgan", "--data", f["good"], "--ema-decay", "2",
                                            "--out", out], "--ema-decay 2.0: must be below 1"),
    "prepare workers zero": (lambda f, out: ["data", "prepare", f["good"], "--workers", "0", "--out", out + "/x.npz"],
                             "--workers 0: must be at least 1"),
    "sample seed negative": (lambda f, out: ["sample", f["gan"], "--n", "4", "--seed", "-5", "--out", out + "/g.png"],
                             "--seed -5: must be at least 0"),
    "recipe threshold above one": (lambda f, out: ["recipe", "cgan-regimes", "--data", f["nih"], "--threshold", "3",
                                                   "--out", out], "--threshold 3.0: must be at most 1"),
    # ---- a full disk inside torch.save: one line naming the file, nothing half-written
    # (2 epochs, a checkpoint after each but the last: after the first)
    "disk full while saving a checkpoint": (lambda f, out: _compare(f["good"], "--out", out, "--epochs", "2",
                                                                    "--checkpoint-epochs", "1"),
                                            "checkpoints/none-seed0.pt: File too large", lambda: _file_size_limit(1 << 20)),
    # ---- damaged run directories: one reader names the file (and how to re-run a cell); nothing is written first
    "report with a damaged record": (lambda f, out: ["report", _copy(f, "run", "record", _write(
        "records/none-seed0.json", b'{"cell": "none-se'))], "none-seed0.json: not valid JSON"),
    "resume with a damaged config.json": (
        lambda f, out: _compare(f["good"], "--methods", "none", "--resume",
                                _copy(f, "run", "config", _write("config.json", b"{\xff"))), "config.json: not a text file"),
    "resume with a damaged old results.jsonl": (
        lambda f, out: _compare(f["good"], "--methods", "none", "--resume",
                                _copy(f, "run", "legacy", _legacy_results(b'{"cell": "none-seed0", \n'))),
        "results.jsonl, line 1: not valid JSON"),
    "resume a GAN run as a comparison": (
        lambda f, out: _compare(f["good"], "--resume", _copy(f, "gan", "as_compare")), "is a 'gan-dcgan' run"),
    # ---- the four that lost data or gave a wrong answer
    "report into a user's folder": (lambda f, out: ["report", _users_folder(f)], "not a cxrgan run directory"),
    "resume with a changed data file": (
        lambda f, out: (lambda data, run: _compare(data, "--methods", "none,oversample", "--resume", run))(
            *_changed_data_run(f)), "this input file changed since the run began"),
    # ---- refusals name the file and its kind
    "data is a folder": (lambda f, out: _compare(str(f["folder"]), "--out", out), "is a folder, not an .npz file"),
    "external is a folder": (lambda f, out: _compare(f["good"], "--external", f["weights_dir"], "--out", out),
                             "weights_dir: is a folder, not an .npz file"),
    # ---- patients: a split made per image is refused unless told
    "split made per image": (lambda f, out: _compare(f["per_image_split"], "--out", out),
                             "its split was made per image with unknown patients"),
}


def _result_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name in RESULT_FILES or p.name.endswith(".tmp")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, files, tmp_path, capsys):
    build, expected, *context = CASES[case]
    out = tmp_path / "out"
    SNAPSHOTS.clear()
    argv = build(files, str(out))
    capsys.readouterr()
    with (context[0]() if context else contextlib.nullcontext()):
        code = _run(argv)
    err = capsys.readouterr().err
    assert code == 2, (case, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxrgan: error:"), (case, err)
    assert expected in lines[0], (case, lines[0])
    assert "Traceback" not in err
    assert not _result_files(tmp_path), (case, _result_files(tmp_path))
    assert not [p for p in Path(files["folder"]).rglob("*") if p.name in RESULT_FILES]
    for folder, before in SNAPSHOTS.items():  # the run directory it was pointed at is as it was
        assert _snapshot(folder) == before, (case, folder)
    assert not (Path(files["folder"]) / "PWNED").exists() and not (tmp_path / "PWNED").exists()


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


# ---- damaged inputs cxrgan recovers from: a warning line at most, then the work is done -----------------------------
def _numbered_folders(f: dict, out: str) -> list[str]:
    """An --out folder holding a user's 99999-* folder and the 100000-* run an earlier version made next to it."""
    for name in ("99999-my_notes", "100000-compare-good"):
        (Path(out) / name).mkdir(parents=True)
    return _compare(f["good"], "--methods", "none", "--out", out)


def _interrupted_cell(f: dict, damage: bytes) -> list[str]:
    """A run whose only cell was interrupted, leaving a damaged transient checkpoint."""
    def interrupt(run: Path) -> None:
        (run / "records" / "none-seed0.json").unlink()
        (run / "scores" / "none-seed0.npz").unlink()
        (run / "checkpoints").mkdir(exist_ok=True)
        (run / "checkpoints" / "none-seed0.pt").write_bytes(damage)
    run = _copy(f, "run", f"interrupted_{len(damage)}", interrupt)
    return _compare(f["good"], "--methods", "none", "--resume", run)


RECOVERED = {
    "a folder 99999-* in --out": (_numbered_folders, None,
                                  lambda out: {p.name for p in Path(out).iterdir()} == {
                                      "99999-my_notes", "100000-compare-good", "100001-compare-good"}),
    "a truncated transient checkpoint on --resume": (
        lambda f, out: _interrupted_cell(f, b"PK\x03\x04 cut short"),
        "none-seed0.pt: not a readable classifier checkpoint", None),
    "a hostile transient checkpoint on --resume": (
        lambda f, out: _interrupted_cell(f, _hostile_pickle(Path(out).parent)),
        "none-seed0.pt: not a readable classifier checkpoint (refused by torch's weights-only loader", None),
}


@pytest.mark.parametrize("case", sorted(RECOVERED))
def test_damaged_input_is_recovered_with_at_most_a_warning(case, files, tmp_path, capsys):
    build, warning, check = RECOVERED[case]
    out = tmp_path / "out"
    SNAPSHOTS.clear()
    argv = build(files, str(out))
    assert _run(argv) == 0, case
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cxrgan:")]
    if warning is None:
        assert not err, err
    else:
        assert len(err) == 1 and err[0].startswith("cxrgan: warning:") and warning in err[0], err
        assert "discarded, its work starts again" in err[0]
    if check is not None:
        assert check(str(out)), case
    for run in SNAPSHOTS:  # a resumed cell ran again and is done
        assert (run / "records" / "none-seed0.json").is_file() and not (run / "checkpoints" / "none-seed0.pt").exists()
    assert not (tmp_path / "PWNED").exists()
