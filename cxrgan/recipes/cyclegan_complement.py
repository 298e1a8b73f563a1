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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from cxrgan import distributed
from cxrgan.classify import TrainConfig, predict
from cxrgan.data import CXRDataset
from cxrgan.data.dataset import from_arrays
from cxrgan.engine.spec import nest_run_fields
from cxrgan.errors import CxrganError
from cxrgan.evaluate.cam import load_saved_classifier
from cxrgan.evaluate.verdicts import Verdicts
from cxrgan.evaluate.summary import seed_cell
from cxrgan.generators import fit_or_load, generator_class, save_translation_figure
from cxrgan.generators.base import ImageTranslator
from cxrgan.io import read_jsonl, write_json
from cxrgan.recipes import KERMANY_64, NIH_PNEUMONIA, NIH_SUBSET_64
from cxrgan.recipes.compare import Compare, CompareConfig
from cxrgan.engine import Cell, CellResult, Plan, Results, RunContext, Table, register_recipe

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

    compare: CompareConfig  # data, rows (the first the baseline), 3:1 imbalance, seeds, classifier, CycleGANs, extra data
    setting: str = "kermany"  # "kermany" or "paper" (Malygina et al.'s NIH data, Kermany as extra data); see SETTINGS
    fidelity_images: int = 200  # test images per class translated to measure fidelity and cycle error

    @classmethod
    def upgrade_stored(cls, values: dict) -> dict:
        """A config.json written before the recipe contained a ``CompareConfig``: its comparison fields nested."""
        if "compare" in values:
            return values
        flat = {"methods": list(METHODS), "imbalance": [3, 1], "extra_data": DEFAULT_EXTRA_DATA, **values}
        own = {k: flat.pop(k) for k in ("setting", "fidelity_images") if k in flat}
        compare = nest_run_fields(flat, flat.get("train", {}).get("device"))
        return {"compare": {**compare, "baseline": flat["methods"][0]}, **own}


@register_recipe
class CycleganComplement(Compare):
    """Malygina et al.'s rows through the compare engine, tested against ``none`` and the equal-steps control,
    then analysis cells: the translation fidelity of every CycleGAN and the Figure-1 panels."""

    kind = "cyclegan-complement"
    config_class = CycleganComplementConfig

    @property
    def compare_config(self) -> CompareConfig:
        return self.config.compare

    def plan(self) -> Plan:
        c = self.config
        if c.setting not in SETTINGS:
            raise CxrganError(f"--setting {c.setting!r}: expected one of {list(SETTINGS)}")
        if c.fidelity_images < 1:
            raise CxrganError(f"--fidelity-images must be at least 1, got {c.fidelity_images}")
        return super().plan()

    control = CONTROL  # the CycleGAN rows declare the equal-steps control "repeat" their count-matched control

    # ---- analysis cells ---------------------------------------------------------------------------------------
    def analysis_cells(self) -> list[Cell]:
        """Per translating row and seed, the fidelity of its CycleGAN, judged by the baseline's first-seed model."""
        baseline = Cell.of(seed=self.spec.first_seed, method=self.compare_config.baseline).name
        translators = [m for m in self.compare_config.methods
                       if any(issubclass(generator_class(use.spec.name), ImageTranslator)
                              for use in self.generator_entries((m,), (self.spec.first_seed,)).values())]
        return super().analysis_cells() + [Cell.of(analysis="fidelity", method=m, seed=s, after=(baseline,))
                                           for m in translators for s in self.seeds]

    def analyses(self):
        return {**super().analyses(), "fidelity": self.fidelity_cell}

    def fidelity_cell(self, cell: Cell, run: RunContext) -> CellResult:
        """Target-class rate of one CycleGAN's translations in each direction (by the baseline's model, at its
        validation Youden threshold, beside its rate on the real images) and the mean cycle error; the first seed's
        CycleGAN also draws ``figure1-<row>.png``."""
        c, test, device = self.config, self.test_, self.spec.torch_device()
        classifier, threshold = _baseline_classifier(run.run_dir, Cell.of(seed=self.spec.first_seed,
                                                     method=self.compare_config.baseline).name, self.val_, device)
        y = test.labels[:, 0]
        sources = {k: test.images[np.flatnonzero(y == k)[: c.fidelity_images]] for k in (0, 1)}
        rate = lambda images, k: float(np.mean((predict(classifier, _as_dataset(images, k, test), device,  # noqa: E731
                                                        self.compare_config.train.eval_batch_size)[:, 0]
                                                >= threshold) == bool(k)))
        balancer = self.balancer(cell["method"], cell["seed"], run.run_dir)
        (spec,) = balancer.generators(self.train_)
        model = fit_or_load(spec, balancer.generator_rows(self.train_), run.run_dir / "generators", str(device))
        record, errors = {"threshold": threshold}, []
        for k in (0, 1):
            translated, restored = model.cycle(sources[k], k)
            record[f"to_{1 - k}"], record[f"real_{1 - k}"] = rate(translated, 1 - k), rate(sources[1 - k], 1 - k)
            errors.append(np.abs(restored.astype(np.float32) - sources[k].astype(np.float32)).mean(axis=(1, 2)) / 255.0)
        record["cycle_error"] = float(np.concatenate(errors).mean())
        if cell["seed"] == self.spec.first_seed and distributed.is_main():
            save_translation_figure(model, sources[0][:6], sources[1][:6], run.run_dir / f"figure1-{cell['method']}.png")
        return CellResult(record, summary=f"to {test.class_names[1] if test.class_names else 1}: {record['to_1']:.2f}, "
                                          f"cycle error {record['cycle_error']:.3f}")


    # ---- tables -----------------------------------------------------------------------------------------------
    def tables(self, results: Results) -> list[Table]:
        tables = super().tables(results)
        fidelity = fidelity_summary(results)
        write_json(results.run_dir / "fidelity.json", fidelity)
        sites = self.external_sets(results)
        table = paper_table(results, self.compare_config.methods, fidelity, Verdicts(self.all_comparisons(results)),
                            results.class_names or ("0", "1"), sites)
        notes = ("Rows as in Malygina et al. (2019) plus the equal-steps control 'repeat'; ROC / PR AUC on the real "
                 "test split, mean [95% CI over seeds]; Δ and verdict from the seed-level paired test against no "
                 "augmentation and, for the CycleGAN rows, against 'repeat', Holm-adjusted over all of them (see the "
                 f"verdict table). Fidelity: share of translated test images ({self.config.fidelity_images} per class "
                 f"at most) that the 'none' classifier of seed {self.spec.first_seed} puts in the target class at "
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
        for method in self.compare_config.methods:
            if (results.run_dir / f"figure1-{method}.png").exists():
                figures.append((f"figure1-{method}.png", f"Figure 1 shape: translations by the seed-"
                                f"{self.spec.first_seed} CycleGAN of row {method} (top: originals)"))
        return figures


def _baseline_classifier(run_dir: Path, cell_name: str, val: CXRDataset, device):
    """The run's real-data (baseline) model of one cell and its validation Youden threshold."""
    path = run_dir / "models" / f"{cell_name}.pt"
    if not path.exists():
        raise CxrganError(f"{path}: the baseline's model is missing; translation fidelity needs the real-data "
                          "classifier")
    model = load_saved_classifier(path).to(device)
    val_scores = Results(run_dir).scores({"cell": cell_name}, "val")[:, 0]
    fpr, tpr, thresholds = roc_curve(val.labels[:, 0], val_scores)
    return model, float(thresholds[np.argmax(tpr - fpr)])


def fidelity_summary(results: Results) -> dict[str, dict[str, float]]:
    """Per CycleGAN row, the fidelity numbers of its analysis cells averaged over seeds (a run made before those
    cells existed: of its ``fidelity.jsonl``)."""
    records = results.analysis("fidelity") or read_jsonl(results.run_dir / "fidelity.jsonl")
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
