"""Generator quality against CPU time: train a generator once, audit its best-by-quality checkpoint along the way.

Issue 13's targets, held by every row (Kermany 64 px; reference = real training rows vs real test rows):
feature-space FD <= 2 x reference; recall and coverage >= 0.95; two-sample classifier AUC <= 0.85; train-on-synthetic
/ test-on-real AUC >= 0.90 for class-conditional generators; memorised fraction (feature space) <= reference.

A *case* names a generator and the rows it trains on:

* ``minority``: the training split of dcgan-alpha's 3:1 subset (1,206 normal : 402 pneumonia, built with
  ``cxrgan.recipes.compare_setup.prepare_splits``); a one-class generator trains on its 402 pneumonias, a conditional
  one on all 1,608 rows;
* ``full``: the whole Kermany training split (1,208 normal : 3,475 pneumonia);
* ``nih``: the NIH subset's 463 multi-label training rows (label-vector generators);
* ``m25``, ``m100``: a point of ``cxrgan recipe helps-map`` (its first draw): the 3:1 subset's 1,206 normals with
  25 or 100 pneumonias, nested and grouped by patient; a one-class generator trains on those few pneumonias.

A CycleGAN (``cyclegan-minority``, ``cyclegan-full``) trains on both classes of its rows and makes images by
translating real ones: it is audited on translations of the real validation rows into the other class (as ``cxrgan
audit`` does), against all training rows, and also by *classifier fidelity*: the share of translations that the
audit's feature model (a classifier trained on the real rows, at its validation Youden threshold) puts in their
target class, averaged over the two directions, beside the same balanced share for the real test rows.

``--train`` runs the generator's CPU preset for ``--steps`` steps through the one trainer (``run_dir`` under
``--out``); at every multiple of ``--snapshot-every`` it copies ``best.pt`` -- the checkpoint a run of that many
steps returns, the best by the trainer's fidelity score so far -- with the process CPU time spent so far. A run is
a prefix of a longer run except for settings decided from the total length (the DCGAN family switches DiffAugment
on from 50 passes over the rows): the row says which settings the run had. Then every snapshot is audited
(``cxrgan.evaluate.audit.audit_images``) against exactly the training rows of the case: for Kermany, samples of the
pneumonia class against the pneumonia rows the generator saw (the images a balancer adds); for NIH, samples with
training label vectors against all rows. The audit's feature model is trained once per row set on those rows.
A conditional generator is also scored by TSTR: a small CNN trained on ``--tstr-images`` synthetic images per class
and tested on the real test split, beside the same classifier trained on as many real training rows per class.

    OMP_NUM_THREADS=1 python benchmarks/generator_quality.py --case dcgan-minority --steps 6000 --out OUT
    python benchmarks/generator_quality.py --out OUT            # print the table of every audited snapshot

CPU minutes are ``time.process_time`` of the training process (all its threads), quality scoring included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from cxrgan.classify.scoring import predict
from cxrgan.data import CXRDataset, from_arrays, load_npz
from cxrgan.evaluate.audit import AuditConfig, audit_images, train_feature_model, train_on_synthetic
from cxrgan.evaluate.metrics import youden_threshold
from cxrgan.generators import GeneratorSettings, GeneratorSpec, generator_class
from cxrgan.generators.base import ImageTranslator
from cxrgan.io import append_jsonl, read_jsonl, save_torch, write_json
from cxrgan.engine.spec import RunSpec
from cxrgan.recipes.compare_setup import CompareConfig, prepare_splits

DATA = Path(os.environ.get("CXRGAN_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
KERMANY = DATA / "kermany_pneumonia" / "kermany_pneumonia_64.npz"
NIH = DATA / "nih_chestxray14_subset" / "nih_chestxray14_subset_64.npz"


@dataclass(frozen=True)
class Case:
    """One generator on one row set."""

    generator: str  # registry name
    rows: str  # "minority", "full" or "nih"
    fixed: tuple[tuple[str, object], ...] = ()  # config fields the case sets (a one-class model's target)

    @property
    def conditional(self) -> bool:
        """True when the generator draws several classes (scored by TSTR too)."""
        return not generator_class(self.generator).models_one_class


CASES = {f"{g}-{rows}": Case(g, rows, (("target", "pneumonia"),) if one_class else ())
         for g, one_class in (("dcgan", True), ("cdcgan", False), ("ldm", True), ("cldm", False),
                              ("fastgan", True))
         for rows in ("minority", "full")}
CASES.update({f"{g}-m{n}": Case(g, f"m{n}", (("target", "pneumonia"),) if one_class else ())
              for g, one_class in (("fastgan", True), ("cldm", False)) for n in (25, 100)})
CASES.update({"cgan-labelvec-nih": Case("cgan-labelvec", "nih"), "ldm-labelvec-nih": Case("ldm-labelvec", "nih")})
CASES.update({f"cyclegan-{rows}": Case("cyclegan", rows) for rows in ("minority", "full")})
PNEUMONIA = 1.0  # the class the Kermany rows audit (the minority of dcgan-alpha's split)


def row_sets(rows: str) -> tuple[CXRDataset, CXRDataset, CXRDataset]:
    """(train, val, test) of a row set; train is what the generator trains on (one-class models take their class)."""
    if rows == "nih":
        data = load_npz(NIH, target="findings")
        return data.split("train"), data.split("val"), data.split("test")
    if rows.startswith("m") and rows[1:].isdigit():  # a point of the helps-map recipe (its first draw)
        from cxrgan.recipes.helps_map import HelpsMap
        from cxrgan.recipes.helps_map_config import map_config

        recipe = HelpsMap(map_config(RunSpec(str(KERMANY), seeds=1), ("none",), minority=(int(rows[1:]),)))
        recipe.plan()
        return recipe.points(0)[int(rows[1:])], recipe.val_, recipe.test_
    imbalance = (3, 1) if rows == "minority" else None
    return prepare_splits(CompareConfig(run=RunSpec(str(KERMANY)), imbalance=imbalance))


def parse_settings(pairs: list[str], config_class: type) -> dict:
    """``["ngf=48", "bf16=false"]`` -> typed config fields."""
    types = {f.name: f.type for f in dataclasses.fields(config_class)}
    out = {}
    for pair in pairs:
        key, _, text = pair.partition("=")
        kind = str(types[key])
        out[key] = (text.lower() in ("1", "true", "yes") if "bool" in kind else int(text) if kind == "int"
                    else float(text) if kind == "float" else text)
    return out


# ---- training -------------------------------------------------------------------------------------------------
def train(name: str, steps: int, snapshot_every: int, settings: list[str], out: Path) -> Path:
    """Train case ``name`` to ``steps`` steps, keeping the best-by-quality checkpoint at every snapshot step."""
    case = CASES[name]
    cls = generator_class(case.generator)
    fixed = dict(case.fixed) | parse_settings(settings, cls.config_class)
    config = cls.resolve_config(GeneratorSettings(steps=steps), progress=False, **fixed)
    if snapshot_every % config.quality_every:
        raise SystemExit(f"--snapshot-every must be a multiple of the preset's quality_every ({config.quality_every})")
    run_dir = out / name
    (run_dir / "snapshots").mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "case.json", {"case": name, "generator": case.generator, "rows": case.rows,
                                       "config": dataclasses.asdict(config), "settings": settings})
    train_rows = row_sets(case.rows)[0]
    log = run_dir / "snapshots.jsonl"
    taken = read_jsonl(log)
    cpu_before = taken[-1]["cpu_seconds"] if taken else 0.0  # a resumed run counts from its last snapshot
    started = time.process_time()

    def snapshot(step: int) -> None:
        if (step % snapshot_every and step != steps) or not (run_dir / "run" / "best.pt").exists():
            return  # not a snapshot step, or nothing scored yet (a latent diffusion model's autoencoder phase)
        target = run_dir / "snapshots" / f"step{step:06d}.pt"
        shutil.copyfile(run_dir / "run" / "best.pt", target)
        best = torch.load(target, map_location="cpu", weights_only=True)["best"]
        append_jsonl(log, {"step": step, "cpu_seconds": cpu_before + time.process_time() - started,
                           "best_step": best["step"], "quality_fd": best["quality_fd"]})
        print(f"{name}: step {step}, best {best['step']} (quality FD {best['quality_fd']:.4f}), "
              f"{(cpu_before + time.process_time() - started) / 60:.1f} CPU-min", flush=True)

    model = GeneratorSpec(case.generator, config).build(run_dir=run_dir / "run", step_hook=snapshot)
    model.fit(train_rows, resume=True)
    return run_dir


# ---- auditing -------------------------------------------------------------------------------------------------
def feature_model(rows: str, train_rows: CXRDataset, val: CXRDataset, out: Path, config: AuditConfig):
    """The audit's feature model of a row set, trained once and kept in ``out``."""
    from cxrgan.classify.networks import build_classifier

    path = out / f"feature_model-{rows}.pt"
    if path.exists():
        model = build_classifier(config.feature_model, train_rows.n_labels)
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    model = train_feature_model(train_rows, val, config)
    save_torch(path, model.state_dict())
    return model


def tstr_reference(rows: str, train_rows: CXRDataset, val: CXRDataset, test: CXRDataset, n: int, out: Path,
                   config: AuditConfig) -> float:
    """TSTR's real-data reference: the same classifier trained on ``n`` real training rows per class (with
    replacement, as dcgan-alpha's reference), or on every row of a multi-label set."""
    path = out / f"tstr_reference-{rows}-{n}.json"
    if path.exists():
        return json.loads(path.read_text())["tstr_auc"]
    if train_rows.is_binary:
        y = train_rows.binary_targets()
        rng = np.random.default_rng(config.seed)
        index = np.concatenate([rng.choice(np.flatnonzero(y == c), n, replace=True) for c in (0, 1)])
        images, labels = train_rows.images[index], train_rows.labels[index]
    else:
        images, labels = train_rows.images, train_rows.labels
    value = train_on_synthetic(images, labels, val, test, config)
    write_json(path, {"tstr_auc": value})
    return value


def audit_snapshots(name: str, out: Path, tstr_images: int) -> None:
    """Audit every snapshot of case ``name`` not audited yet (results appended to audits.jsonl)."""
    case, run_dir = CASES[name], out / name
    config = AuditConfig(seed=0, tstr=False)
    train_rows, val, test = row_sets(case.rows)
    features = feature_model(case.rows, train_rows, val, out, config)
    done = {r["step"] for r in read_jsonl(run_dir / "audits.jsonl")}
    cls = generator_class(case.generator)
    binary = train_rows.is_binary
    n = int((test.labels[:, 0] == PNEUMONIA).sum()) if binary else len(test)
    for record in read_jsonl(run_dir / "snapshots.jsonl"):
        if record["step"] in done:
            continue
        state = torch.load(run_dir / "snapshots" / f"step{record['step']:06d}.pt", map_location="cpu",
                           weights_only=True)
        model = cls().load_state_dict(state)
        rng = torch.Generator().manual_seed(0)
        started = time.process_time()
        if isinstance(model, ImageTranslator):  # translations of held-out rows, both directions
            images, labels = model.translations(val, len(test), rng)
        else:
            requested = np.full((n, 1), PNEUMONIA, np.float32) if binary else None
            images, labels = model.sample(n, labels=requested, generator=rng)
        sample_seconds = time.process_time() - started
        result = audit_images(images, labels, train_rows, val, test, None, config, features)
        row = {**record, "sample_cpu_seconds_per_image": sample_seconds / len(images),
               **{k: v for k, v in result["metrics"].items()}, "real_rows": result["real_rows"],
               "n_synthetic": len(images), "n_train": result["n_train"]}
        if isinstance(model, ImageTranslator):
            row["fidelity"] = classifier_fidelity(features, images, labels, val, test)
        if case.conditional:
            if binary:
                wanted = np.repeat(np.array([[0.0], [1.0]], np.float32), tstr_images, axis=0)
                syn, syn_labels = model.sample(len(wanted), labels=wanted, generator=rng)
            else:
                syn, syn_labels = model.sample(max(tstr_images, len(train_rows)), generator=rng)
            row["tstr_auc"] = {"synthetic": train_on_synthetic(syn, syn_labels, val, test, config),
                               "reference": tstr_reference(case.rows, train_rows, val, test, tstr_images, out, config)}
        append_jsonl(run_dir / "audits.jsonl", row)
        print(f"{name}: audited step {record['step']}", flush=True)


def classifier_fidelity(classifier: torch.nn.Module, images: np.ndarray, labels: np.ndarray, val: CXRDataset,
                        test: CXRDataset) -> dict[str, float]:
    """Share of translated images that ``classifier`` (trained on real rows) puts in their target class, at its
    Youden threshold on the real validation rows, averaged over the two directions (the validation split's
    classes are unbalanced); reference: the same balanced share for the real test rows. Per direction too."""
    threshold = youden_threshold(val.labels[:, 0], predict(classifier, val)[:, 0])

    def rates(scores: np.ndarray, y: np.ndarray) -> list[float]:
        return [float(np.mean((scores[y == c] >= threshold) == bool(c))) for c in (0, 1)]

    translated = from_arrays(images, labels, test.label_names, class_names=test.class_names)
    synthetic = rates(predict(classifier, translated)[:, 0], labels[:, 0])
    real = rates(predict(classifier, test)[:, 0], test.labels[:, 0])
    return {"synthetic": float(np.mean(synthetic)), "reference": float(np.mean(real)),
            "into_class": synthetic, "real_class": real}


# ---- the table ------------------------------------------------------------------------------------------------
TARGETS = {  # metric -> (column, held-to text, test on (synthetic, reference))
    "frechet_distance": ("FD", "<= 2x ref", lambda s, r: s <= 2 * r),
    "recall": ("recall", ">= 0.95", lambda s, r: s >= 0.95),
    "coverage": ("coverage", ">= 0.95", lambda s, r: s >= 0.95),
    "two_sample_auc": ("2-sample AUC", "<= 0.85", lambda s, r: s <= 0.85),
    "tstr_auc": ("TSTR AUC", ">= 0.90", lambda s, r: s >= 0.90),
    "memorised_feature": ("memorised", "<= ref", lambda s, r: s <= r),
}
SHOWN = ("fidelity", "precision", "density", "kid", "memorised_pixel")  # the other metrics, beside their reference


def table(out: Path) -> pd.DataFrame:
    """One row per audited snapshot of every case in ``out``: steps, CPU minutes, metrics (ref), targets met."""
    rows = []
    for path in sorted(out.glob("*/audits.jsonl")):
        case = json.loads((path.parent / "case.json").read_text())
        for record in read_jsonl(path):
            row = {"case": case["case"], "steps": record["step"], "best step": record["best_step"],
                   "CPU min": round(record["cpu_seconds"] / 60, 1)}
            met, held = [], []
            for key, (column, target, test) in TARGETS.items():
                if key not in record:
                    continue
                s, r = record[key]["synthetic"], record[key]["reference"]
                ok = bool(test(s, r))
                row[column] = f"{s:.3f} ({r:.3f}) {'ok' if ok else 'MISS'}"
                held.append(column)
                met += [column] if ok else []
            for key in SHOWN:
                if key in record:  # fidelity: translators only
                    row[key] = f"{record[key]['synthetic']:.3g} ({record[key]['reference']:.3g})"
            row["targets met"] = f"{len(met)}/{len(held)}"
            rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=sorted(CASES), help="train (with --train) and audit this case")
    parser.add_argument("--train", action="store_true", help="train the case first (resumes an interrupted run)")
    parser.add_argument("--steps", type=int, default=6000, help="steps of the training run")
    parser.add_argument("--snapshot-every", type=int, default=500, help="steps between audited snapshots")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="config field over the CPU preset (repeatable), e.g. --set ngf=48")
    parser.add_argument("--tstr-images", type=int, default=1000, help="synthetic images per class for TSTR")
    parser.add_argument("--out", type=Path, required=True, help="folder of the case runs")
    args = parser.parse_args()
    if args.case:
        if args.train:
            train(args.case, args.steps, args.snapshot_every, args.set, args.out)
        audit_snapshots(args.case, args.out, args.tstr_images)
    print("Targets (issue 13): FD <= 2x ref, recall and coverage >= 0.95, two-sample AUC <= 0.85, TSTR AUC >= 0.90 "
          "(conditional generators), memorised (features) <= ref. Cells: synthetic (real-vs-real reference).")
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_rows", 500):
        print(table(args.out).to_string(index=False))


if __name__ == "__main__":
    main()
