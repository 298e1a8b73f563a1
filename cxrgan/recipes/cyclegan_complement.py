"""Recipe ``cyclegan-complement``: CycleGAN complement oversampling against no augmentation on pneumonia data.

Malygina, Ericheva & Drokin (2019), "GANs 'N Lungs: improving pneumonia prediction": a DenseNet-121 trained on
(a) the real imbalanced training set, (b) that set plus the CycleGAN complement of every image (2n rows), (c) the
same with a CycleGAN also trained on an additional dataset; table of ROC AUC and PR AUC, ROC and PR curves of all
three (their Figure 3), translation examples (their Figure 1). We report mean [95% CI] over seeds, the DeLong p
against no augmentation, and measure translation fidelity: the fraction of translated test images that the
real-data classifier (the run's "none" model) assigns to the target class, and the mean cycle reconstruction
error |x - G_back(G_forth(x))| in grey levels / 255. Our addition: the row ``repeat`` (every real image twice) has
as many rows, hence gradient steps, as a complement set, so "CycleGAN beats repeat" separates the translated images'
content from longer training; each CycleGAN row gets a DeLong p against it.

Extra data: by default the NIH ChestX-ray14 subset's binary ``labels`` (normal / any finding), whose training split
gives both domains more adult images; "abnormal" there is any of 14 findings, not only pneumonia, so it widens the
pneumonia domain towards "diseased lung". The IEEE8023 COVID collection is nearly all abnormal and would only feed
the pneumonia domain.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_curve

from cxrgan.balance import BalanceContext, make_balancer
from cxrgan.classify import TrainConfig, predict
from cxrgan.classify.networks import build_classifier
from cxrgan.data import CXRDataset
from cxrgan.data.dataset import from_arrays
from cxrgan.errors import CxrganError
from cxrgan.evaluate.stats import seed_delong
from cxrgan.evaluate.summary import format_p
from cxrgan.generators import GeneratorSettings, save_translation_figure
from cxrgan.io import append_jsonl, read_jsonl, write_json
from cxrgan.recipes import KERMANY_64, NIH_SUBSET_64
from cxrgan.recipes.compare import CompareConfig, prepare_splits, run_compare
from cxrgan.report.html import write_report
from cxrgan.report.tables import to_markdown, write_tables

# "repeat" (every real image twice) is our control, not the paper's: the complement sets hold 2n rows, so with the
# same epochs the classifier takes twice the steps; a complement row must beat "repeat", not only "none".
METHODS = ("none", "repeat", "cyclegan-complement", "cyclegan-complement-extra")
CONTROL = "repeat"
ROW_NAMES = {"none": "no augmentation", "repeat": "no augmentation, every image twice (equal steps)",
             "cyclegan-complement": "CycleGAN complement", "cyclegan-complement-extra": "CycleGAN complement + extra data"}
DEFAULT_DATA = KERMANY_64
DEFAULT_EXTRA_DATA = NIH_SUBSET_64

# CPU default classifier: ResNet-18 at 64 px with bf16 autocast, as in recipe dcgan-alpha (about 1 minute for 1600
# rows x 8 epochs here, 2 for the 2n-row complement sets); --full: DenseNet-121 as in the paper.
CPU_CLASSIFIER = TrainConfig(model="resnet18", epochs=8, patience=3, lr=1e-3, bf16=True, augment="flip",
                             lr_schedule="cosine", progress=False)
FULL_CLASSIFIER = TrainConfig(model="densenet121", epochs=30, patience=5, lr=1e-4, augment="flip")


@dataclass(frozen=True)
class CycleganComplementConfig:
    """The recipe's settings; written with the run."""

    data: str  # compact binary .npz with train/val/test splits (Kermany normal / pneumonia by default)
    extra_data: str | None = DEFAULT_EXTRA_DATA  # binary .npz whose training split joins the CycleGAN's domains
    seeds: int = 3  # seeds per row (CycleGANs are retrained per seed)
    first_seed: int = 0  # seed of the first run
    imbalance: tuple[int, int] | None = (3, 1)  # normal : pneumonia of the training split; None keeps the file's
    methods: tuple[str, ...] = METHODS  # rows of the table, baseline ("none") first
    train: TrainConfig = field(default_factory=lambda: CPU_CLASSIFIER)  # classifier settings
    fidelity_images: int = 200  # test images per class translated to measure fidelity and cycle error
    generators: GeneratorSettings = GeneratorSettings()  # CycleGAN steps / width / full (paper-size, GPU) preset


def run_cyclegan_complement(config: CycleganComplementConfig, out: str | Path, resume_dir: str | Path | None = None,
                            command: str | None = None) -> Path:
    """Run every row x seed (through ``compare``), then the paper-shaped table, fidelity and Figure 1 panels."""
    extra_data = None
    if any(m.endswith("-extra") for m in config.methods):
        if not config.extra_data or not Path(config.extra_data).exists():
            raise CxrganError(f"{config.extra_data}: extra CycleGAN data file not found; pass --gan-extra-data FILE "
                              "or leave the '-extra' row out of --methods")
        extra_data = str(config.extra_data)
    compare_config = CompareConfig(data=config.data, methods=config.methods, seeds=config.seeds,
                                   first_seed=config.first_seed, baseline=config.methods[0], imbalance=config.imbalance,
                                   train=config.train, generators=config.generators, extra_data=extra_data)
    run_dir = run_compare(compare_config, out, resume_dir=resume_dir, command=command, description="cyclegan-complement")
    write_json(run_dir / "recipe.json", {"recipe": "cyclegan-complement", "config": dataclasses.asdict(config)})
    train, val, test = prepare_splits(compare_config)
    fidelity = translation_fidelity(config, compare_config, train, val, test, run_dir)
    seeds = range(config.first_seed, config.first_seed + config.seeds)
    table = paper_table(run_dir, config.methods, fidelity, test, seeds)
    notes = ("Rows as in Malygina et al. (2019) plus the equal-steps control 'repeat'; ROC / PR AUC on the real test "
             "split, mean [95% CI over seeds]; DeLong p vs no augmentation and vs 'repeat' on seed-averaged scores. "
             "Fidelity: share of translated test images "
             f"({config.fidelity_images} per class at most) that the 'none' classifier of seed {config.first_seed} "
             "puts in the target class at its validation Youden threshold (its accuracy on the real images of that "
             "class in brackets); cycle error: mean |x - G_back(G_forth(x))| / 255; both averaged over seeds. "
             "Curves: roc.png, pr.png; translations: figure1-<row>.png.")
    write_tables(table, run_dir / "paper_table", title="cyclegan-complement: CycleGAN complement oversampling", notes=notes)
    print(f"\ncyclegan-complement (Malygina et al. table shape)\n\n{to_markdown(table)}\n\n{notes}\n")
    print(f"results: {run_dir}\nreport: {write_report(run_dir)}")
    return run_dir


def _none_classifier(run_dir: Path, seed: int, val: CXRDataset, device: str):
    """The run's real-data ('none') model of ``seed`` and its validation Youden threshold."""
    path = run_dir / "models" / f"none-seed{seed}.pt"
    if not path.exists():
        raise CxrganError(f"{path}: the 'none' model is missing; translation fidelity needs the real-data classifier")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_classifier(saved["config"], int(saved["n_outputs"]))
    model.load_state_dict(saved["model"])
    model.to(device).eval()
    val_scores = np.load(run_dir / "scores" / f"none-seed{seed}.npz")["val"][:, 0]
    fpr, tpr, thresholds = roc_curve(val.labels[:, 0], val_scores)
    return model, float(thresholds[np.argmax(tpr - fpr)])


def translation_fidelity(config: CycleganComplementConfig, compare_config: CompareConfig, train: CXRDataset,
                         val: CXRDataset, test: CXRDataset, run_dir: Path) -> dict[str, dict[str, float]]:
    """Per CycleGAN row: target-class rate of translations in each direction and the mean cycle error, over seeds.

    The CycleGANs come from the run's cache (trained by the comparison); results are kept in ``fidelity.jsonl``
    so a resumed run does not recompute them. Seed ``first_seed``'s CycleGAN also draws ``figure1-<row>.png``.
    """
    if "none" not in config.methods:
        return {}
    device = config.train.device if config.train.device != "auto" else "cpu"
    path = run_dir / "fidelity.jsonl"
    done = {(r["method"], r["seed"]): r for r in read_jsonl(path)}
    classifier, threshold = _none_classifier(run_dir, config.first_seed, val, device)
    y = test.labels[:, 0]
    sources = {c: test.images[np.flatnonzero(y == c)[: config.fidelity_images]] for c in (0, 1)}
    real_rate = {}
    for c in (0, 1):  # reference: how often the classifier puts real images of class c in class c
        scores = predict(classifier, _as_dataset(sources[c], c, test), device, config.train.eval_batch_size)[:, 0]
        real_rate[c] = float(np.mean((scores >= threshold) == bool(c)))
    for method in config.methods:
        if not method.startswith("cyclegan"):
            continue
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            if (method, seed) in done:
                continue
            context = BalanceContext(random_state=seed, device=device, work_dir=run_dir / "generators",
                                     generators=compare_config.generators, extra_data=compare_config.extra_data)
            model = make_balancer(method, context).fit_generator(train)  # loads the finished run from the cache
            record = {"method": method, "seed": seed, "threshold": threshold}
            errors = []
            for c in (0, 1):
                translated, restored = model.cycle(sources[c], c)
                scores = predict(classifier, _as_dataset(translated, 1 - c, test), device, config.train.eval_batch_size)[:, 0]
                record[f"to_{1 - c}"] = float(np.mean((scores >= threshold) == bool(1 - c)))
                record[f"real_{1 - c}"] = real_rate[1 - c]
                errors.append(np.abs(restored.astype(np.float32) - sources[c].astype(np.float32)).mean(axis=(1, 2)) / 255.0)
            record["cycle_error"] = float(np.concatenate(errors).mean())
            if seed == config.first_seed:
                save_translation_figure(model, sources[0][:6], sources[1][:6], run_dir / f"figure1-{method}.png")
            append_jsonl(path, record)
            done[(method, seed)] = record
    summary: dict[str, dict[str, float]] = {}
    for method in config.methods:
        records = [r for (m, _), r in done.items() if m == method]
        if records:
            summary[method] = {k: float(np.mean([r[k] for r in records])) for k in ("to_0", "to_1", "real_0", "real_1", "cycle_error")}
    write_json(run_dir / "fidelity.json", summary)
    return summary


def _as_dataset(images: np.ndarray, label: int, like: CXRDataset) -> CXRDataset:
    labels = np.full((len(images), 1), float(label), np.float32)
    return from_arrays(images, labels, like.label_names, split="test", class_names=like.class_names)


def paper_table(run_dir: Path, methods: tuple[str, ...], fidelity: dict[str, dict[str, float]], test: CXRDataset,
                seeds: range) -> pd.DataFrame:
    """ROC AUC, PR AUC and DeLong p per row (from the compare table), DeLong p of each CycleGAN row against the
    equal-steps control, translation fidelity and cycle error."""
    results = pd.read_csv(run_dir / "results.csv", dtype=str).fillna("")
    p_column = next((c for c in results.columns if c.startswith("DeLong p (seed-avg)")), None)
    class_names = test.class_names or ("0", "1")
    rows = []
    for method in methods:
        match = results[results["method"] == method]
        if match.empty:
            continue
        row = {"row": ROW_NAMES.get(method, method), "method": method, "ROC AUC": match.iloc[0]["ROC AUC"],
               "PR AUC": match.iloc[0]["PR AUC"], "DeLong p vs none": match.iloc[0][p_column] if p_column else "",
               f"DeLong p vs {CONTROL}": ""}
        if method.startswith("cyclegan") and CONTROL in methods:
            row[f"DeLong p vs {CONTROL}"] = format_p(_seed_averaged_delong(run_dir, method, CONTROL, test, seeds))
        f = fidelity.get(method)
        row[f"-> {class_names[1]} as {class_names[1]}"] = f"{f['to_1']:.2f} (real {f['real_1']:.2f})" if f else ""
        row[f"-> {class_names[0]} as {class_names[0]}"] = f"{f['to_0']:.2f} (real {f['real_0']:.2f})" if f else ""
        row["cycle error"] = f"{f['cycle_error']:.3f}" if f else ""
        rows.append(row)
    return pd.DataFrame(rows)


def _seed_averaged_delong(run_dir: Path, method: str, reference: str, test: CXRDataset, seeds: range) -> float:
    """DeLong p of ``method`` vs ``reference`` on their test scores averaged over the seeds both finished."""
    def scores(name: str, seed: int) -> Path:
        return run_dir / "scores" / f"{name}-seed{seed}.npz"

    both = [s for s in seeds if scores(method, s).exists() and scores(reference, s).exists()]
    if not both:
        return float("nan")
    stacked = {name: np.stack([np.load(scores(name, s))["test"][:, 0] for s in both]) for name in (method, reference)}
    return seed_delong(test.labels[:, 0], stacked[method], stacked[reference]).ensemble.p
