"""Recipe ``cyclegan-complement``: CycleGAN complement oversampling against no augmentation on pneumonia data.

Malygina, Ericheva & Drokin (2019), "GANs 'N Lungs: improving pneumonia prediction": a DenseNet-121 trained on
(a) the real imbalanced training set, (b) that set plus the CycleGAN complement of every image (2n rows), (c) the
same with a CycleGAN also trained on an additional dataset; table of ROC AUC and PR AUC, ROC and PR curves of all
three (their Figure 3), translation examples (their Figure 1). We report mean [95% CI] over seeds, the seed-level
paired test against no augmentation (``cxrgan.evaluate.inference``), and measure translation fidelity: the fraction of translated test images that the
real-data classifier (the run's "none" model) assigns to the target class, and the mean cycle reconstruction
error |x - G_back(G_forth(x))| in grey levels / 255. Our addition: the row ``repeat`` (every real image twice) has
as many rows, hence gradient steps, as a complement set, so "CycleGAN beats repeat" separates the translated images'
content from longer training; each CycleGAN row is tested against it too.

Two settings (``--setting``). ``kermany`` (default): Kermany pediatric pneumonia made 3:1 imbalanced; the extra
CycleGAN data is the NIH ChestX-ray14 subset's binary ``labels`` (normal / any finding), whose training split gives
both domains more adult images ("abnormal" there is any of 14 findings, not only pneumonia, so it widens the
pneumonia domain towards "diseased lung"); adult NIH pneumonia is scored as an external site. ``paper``: Malygina et
al.'s own setting, an imbalanced NIH pneumonia-vs-no-finding training split (``nih_pneumonia``, imbalance induced
on its training split) with the CycleGAN also trained on Kermany's training split as the additional dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from cxrgan.balance import make_balancer
from cxrgan.classify import TrainConfig, predict
from cxrgan.data import CXRDataset
from cxrgan.data.dataset import from_arrays
from cxrgan.data.synthetic import SyntheticFiles
from cxrgan.errors import CxrganError
from cxrgan.evaluate.cam import load_saved_classifier
from cxrgan.evaluate.inference import Verdicts
from cxrgan.evaluate.summary import seed_cell
from cxrgan.generators import GeneratorSettings, save_translation_figure
from cxrgan.io import append_jsonl, read_jsonl, write_json
from cxrgan.recipes import KERMANY_64, NIH_PNEUMONIA, NIH_SUBSET_64
from cxrgan.recipes.compare import Compare, CompareConfig
from cxrgan.recipes.engine import Plan, Results, RunContext, Table, register_recipe

# "repeat" (every real image twice) is our control, not the paper's: the complement sets hold 2n rows, so with the
# same epochs the classifier takes twice the steps; a complement row must beat "repeat", not only "none".
METHODS = ("none", "repeat", "cyclegan-complement", "cyclegan-complement-extra")
CONTROL = "repeat"
ROW_NAMES = {"none": "no augmentation", "repeat": "no augmentation, every image twice (equal steps)",
             "cyclegan-complement": "CycleGAN complement", "cyclegan-complement-extra": "CycleGAN complement + extra data"}
DEFAULT_DATA = KERMANY_64
DEFAULT_EXTRA_DATA = NIH_SUBSET_64
# setting -> (data, extra CycleGAN data, what the table title says)
SETTINGS = {
    "kermany": (KERMANY_64, NIH_SUBSET_64, "Kermany pediatric pneumonia; CycleGAN extra data: NIH subset (adult, any "
                                           "finding)"),
    "paper": (str(NIH_PNEUMONIA / "nih_pneumonia_64.npz"), KERMANY_64,
              "Malygina et al.'s setting: NIH pneumonia vs no finding; CycleGAN extra data: Kermany's training split"),
}

# CPU default classifier: ResNet-18 at 64 px with bf16 autocast, as in recipe dcgan-alpha (about 1 minute for 1600
# rows x 8 epochs here, 2 for the 2n-row complement sets); --full: DenseNet-121 as in the paper.
CPU_CLASSIFIER = TrainConfig(model="resnet18", epochs=8, patience=3, lr=1e-3, bf16=True, augment="flip",
                             lr_schedule="cosine", progress=False)
FULL_CLASSIFIER = TrainConfig(model="densenet121", epochs=30, patience=5, lr=1e-4, augment="flip")


@dataclass(frozen=True)
class CycleganComplementConfig:
    """The recipe's settings; written with the run."""

    data: str  # compact binary .npz with train/val/test splits (Kermany normal / pneumonia by default)
    setting: str = "kermany"  # "kermany" or "paper" (Malygina et al.'s NIH data, Kermany as extra data); see SETTINGS
    extra_data: str | None = DEFAULT_EXTRA_DATA  # binary .npz whose training split joins the CycleGAN's domains
    seeds: int = 3  # seeds per row (CycleGANs are retrained per seed)
    first_seed: int = 0  # seed of the first run
    imbalance: tuple[int, int] | None = (3, 1)  # normal : pneumonia of the training split; None keeps the file's
    methods: tuple[str, ...] = METHODS  # rows of the table, baseline ("none") first
    train: TrainConfig = field(default_factory=lambda: CPU_CLASSIFIER)  # classifier settings
    fidelity_images: int = 200  # test images per class translated to measure fidelity and cycle error
    generators: GeneratorSettings = GeneratorSettings()  # GAN steps / width / full (paper-size, GPU) preset
    allow_patient_overlap: bool = False  # accept a patient in two splits (counted and printed); off = an error
    allow_unknown_patients: bool = False  # accept a data file whose split was made per image, patients unknown
    external: tuple[str, ...] = ()  # external sites (binary .npz of other hospitals); Kermany: NIH pneumonia
    external_labels: tuple[tuple[str, str], ...] = ()  # (site class name, our class name) where names differ
    synthetic: SyntheticFiles = SyntheticFiles()  # --synthetic files, one row synthetic:<stem> each, and their mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", self.synthetic.with_rows(tuple(self.methods)))


@register_recipe
class CycleganComplement(Compare):
    """Malygina et al.'s rows through the compare engine, tested against ``none`` and the equal-steps control,
    then translation fidelity and the Figure-1 panels."""

    kind = "cyclegan-complement"
    config_class = CycleganComplementConfig

    @property
    def compare_config(self) -> CompareConfig:
        c = self.config
        return CompareConfig(data=c.data, methods=c.methods, seeds=c.seeds, first_seed=c.first_seed,
                             baseline=c.methods[0], imbalance=c.imbalance, train=c.train, generators=c.generators,
                             extra_data=c.extra_data, allow_patient_overlap=c.allow_patient_overlap,
                             allow_unknown_patients=c.allow_unknown_patients, external=c.external,
                             external_labels=c.external_labels, synthetic=c.synthetic)

    def plan(self) -> Plan:
        c = self.config
        if any(m.endswith("-extra") for m in c.methods) and (not c.extra_data or not Path(c.extra_data).is_file()):
            raise CxrganError(f"--gan-extra-data {c.extra_data}: extra CycleGAN data file not found; give the file "
                              "or leave the '-extra' row out of --methods")
        if c.setting not in SETTINGS:
            raise CxrganError(f"--setting {c.setting!r}: expected one of {list(SETTINGS)}")
        if c.fidelity_images < 1:
            raise CxrganError(f"--fidelity-images must be at least 1, got {c.fidelity_images}")
        return super().plan()

    def finish(self, run: RunContext, results: Results) -> None:
        super().finish(run, results)  # the --synthetic files' audits
        translation_fidelity(self, run.run_dir)

    control = CONTROL

    def controlled_methods(self) -> tuple[str, ...]:
        """Every CycleGAN row must beat the equal-steps control as well as ``none``."""
        return tuple(m for m in self.config.methods if m.startswith("cyclegan"))

    def tables(self, results: Results) -> list[Table]:
        tables = super().tables(results)
        fidelity = fidelity_summary(results.run_dir)
        sites = self.external_sets(results)
        table = paper_table(results, self.config.methods, fidelity, Verdicts(self.all_comparisons(results)),
                            results.class_names or ("0", "1"), sites)
        notes = ("Rows as in Malygina et al. (2019) plus the equal-steps control 'repeat'; ROC / PR AUC on the real "
                 "test split, mean [95% CI over seeds]; Δ and verdict from the seed-level paired test against no "
                 "augmentation and, for the CycleGAN rows, against 'repeat', Holm-adjusted over all of them (see the "
                 f"verdict table). Fidelity: share of translated test images ({self.config.fidelity_images} per class "
                 f"at most) that the 'none' classifier of seed {self.config.first_seed} puts in the target class at "
                 "its validation Youden threshold (its accuracy on the real images of that class in brackets); cycle "
                 "error: mean |x - G_back(G_forth(x))| / 255; both averaged over seeds."
                 + (f" External site(s): {', '.join(sites)} (for Kermany, adult NIH pneumonia vs no finding: the same "
                    "labels at another hospital), every row scored by the same models." if sites else ""))
        tables.append(Table("paper_table", "cyclegan-complement: CycleGAN complement oversampling (Malygina et al. "
                            f"table shape; setting {self.config.setting}: {SETTINGS[self.config.setting][2]})", table,
                            notes, role="main"))
        return tables

    def figures(self, results: Results) -> list[tuple[str, str]]:
        figures = super().figures(results)
        for method in self.config.methods:
            if (results.run_dir / f"figure1-{method}.png").exists():
                figures.append((f"figure1-{method}.png", f"Figure 1 shape: translations by the seed-"
                                f"{self.config.first_seed} CycleGAN of row {method} (top: originals)"))
        return figures


def _none_classifier(run_dir: Path, seed: int, val: CXRDataset, device: str):
    """The run's real-data ('none') model of ``seed`` and its validation Youden threshold."""
    path = run_dir / "models" / f"none-seed{seed}.pt"
    if not path.exists():
        raise CxrganError(f"{path}: the 'none' model is missing; translation fidelity needs the real-data classifier")
    model = load_saved_classifier(path).to(device)
    val_scores = Results(run_dir).scores({"cell": f"none-seed{seed}"}, "val")[:, 0]
    fpr, tpr, thresholds = roc_curve(val.labels[:, 0], val_scores)
    return model, float(thresholds[np.argmax(tpr - fpr)])


def translation_fidelity(recipe: CycleganComplement, run_dir: Path) -> dict[str, dict[str, float]]:
    """Per CycleGAN row: target-class rate of translations in each direction and the mean cycle error, over seeds.

    The CycleGANs come from the run's cache (trained by the comparison); results are kept in ``fidelity.jsonl``
    so a resumed run does not recompute them. Seed ``first_seed``'s CycleGAN also draws ``figure1-<row>.png``.
    """
    config, train, val, test = recipe.config, recipe.train_, recipe.val_, recipe.test_
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
            model = make_balancer(method, recipe.balance_context(seed, run_dir, device)).fit_generator(train)  # loads the finished run from the cache
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
    summary = fidelity_summary(run_dir)
    write_json(run_dir / "fidelity.json", summary)
    return summary


def fidelity_summary(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per CycleGAN row, the fidelity numbers of ``fidelity.jsonl`` averaged over seeds."""
    records = read_jsonl(run_dir / "fidelity.jsonl")
    summary: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in records):
        mine = [r for r in records if r["method"] == method]
        summary[method] = {k: float(np.mean([r[k] for r in mine])) for k in ("to_0", "to_1", "real_0", "real_1",
                                                                             "cycle_error")}
    return summary


def _as_dataset(images: np.ndarray, label: int, like: CXRDataset) -> CXRDataset:
    labels = np.full((len(images), 1), float(label), np.float32)
    return from_arrays(images, labels, like.label_names, split="test", class_names=like.class_names)


def paper_table(results: Results, methods: tuple[str, ...], fidelity: dict[str, dict[str, float]],
                verdicts: Verdicts, class_names: tuple[str, str], sites: list[str]) -> pd.DataFrame:
    """ROC AUC, PR AUC, Δ and verdict against none and against the equal-steps control per row (internal test and
    each external site), translation fidelity and cycle error."""
    rows = []
    internal = {"site": "internal test"} if sites else {}
    for method in methods:
        runs = results.where(method=method)
        if not runs:
            continue
        row = {"row": ROW_NAMES.get(method, method), "method": method,
               "ROC AUC": seed_cell([r["metrics"]["roc_auc"] for r in runs]),
               "PR AUC": seed_cell([r["metrics"]["pr_auc"] for r in runs])}
        for reference in (methods[0], CONTROL):
            row[f"Δ vs {reference}"], row[f"verdict vs {reference}"] = (
                verdicts.cells(method=method, vs=reference, **internal) if method != reference else ("", ""))
        for site in sites:
            row[f"ROC AUC @ {site}"] = seed_cell([r["metrics"][f"roc_auc@{site}"] for r in runs])
            row[f"Δ vs {methods[0]} @ {site}"], row[f"verdict @ {site}"] = (
                verdicts.cells(method=method, vs=methods[0], site=site) if method != methods[0] else ("", ""))
        f = fidelity.get(method)
        row[f"-> {class_names[1]} as {class_names[1]}"] = f"{f['to_1']:.2f} (real {f['real_1']:.2f})" if f else ""
        row[f"-> {class_names[0]} as {class_names[0]}"] = f"{f['to_0']:.2f} (real {f['real_0']:.2f})" if f else ""
        row["cycle error"] = f"{f['cycle_error']:.3f}" if f else ""
        rows.append(row)
    return pd.DataFrame(rows)
