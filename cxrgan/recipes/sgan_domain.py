"""Recipe ``sgan-domain``: does unlabelled data from a second source adapt the semi-supervised GAN to it?

Madani et al. (ISBI 2018), Table 2: dataset 1 is labelled (default Kermany, pediatric), dataset 2 comes from another
source with the same normal / abnormal label (default the NIH ChestX-ray14 subset, adult). Rows: the matched CNN
trained on dataset 1; the SGAN trained on dataset 1 (its labelled images are also its only unlabelled pool); the
SGAN trained on labelled dataset 1 plus dataset 2's training split without labels. Every row is tested on dataset
2's test split. Dataset 2's labels never reach training: its training split passes through ``strip_labels`` and
``SemiSupervisedGAN.fit`` refuses any unlabelled dataset that still carries a known label.

All labelled rows of dataset 1's training split are used (the paper trained on 80% of dataset 1 with labels).
CPU budget (same measurements as ``sgan-scarcity``: about 0.10 s per SGAN step and 0.027 s per CNN step on one
busy core): 5 seeds x (2 SGANs + 1 CNN) x 2000 steps -> 5 x 455 s, about 38 minutes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrgan.classify.sgan import MatchedCNN, SemiSupervisedGAN, SGANConfig, strip_labels
from cxrgan.evaluate.summary import paired_seed_cells, seed_cell
from cxrgan.io import append_jsonl, read_jsonl
from cxrgan.recipes import NIH_SUBSET_64
from cxrgan.recipes.sgan_scarcity import DEFAULT_DATA, evaluate, load_binary, open_run
from cxrgan.report.tables import to_markdown, write_tables

DEFAULT_SECOND_DATA = NIH_SUBSET_64
ROWS = ("CNN trained on dataset 1", "SGAN trained on dataset 1",
        "SGAN trained on labelled dataset 1 + unlabelled dataset 2")
CPU_SGAN = SGANConfig(steps=2000)
FULL_SGAN = SGANConfig(ndf=64, ngf=64, steps=6000, batch_size=64, device="auto")


@dataclass(frozen=True)
class SganDomainConfig:
    """The recipe's settings; written to the run's config.json."""

    data: str = DEFAULT_DATA  # dataset 1: binary .npz, labelled (its training split trains every row)
    second_data: str = DEFAULT_SECOND_DATA  # dataset 2: binary .npz; train split unlabelled, test split evaluates
    seeds: int = 5  # training seeds
    first_seed: int = 0  # seed of the first run
    sgan: SGANConfig = field(default_factory=lambda: CPU_SGAN)  # shared by the SGANs and the matched CNN
    full: bool = False  # paper-size settings (FULL_SGAN) for GPUs


def run_sgan_domain(config: SganDomainConfig, out: str | Path, resume_dir: str | Path | None = None,
                    command: str | None = None) -> Path:
    """Train the three rows for every seed (resumable), test on dataset 2's test split and write Table 2."""
    size = config.sgan.image_size
    first, second = load_binary(config.data, size), load_binary(config.second_data, size)
    labeled = first.split("train")
    # The guard: dataset 2's training images enter only label-free; its labels are read for the test split alone.
    unlabeled_second = strip_labels(second.split("train"))
    test = second.split("test")
    run_dir = open_run(out, resume_dir, f"sgan-domain-{Path(config.second_data).stem}", config, "sgan-domain", command)
    records_path = run_dir / "results.jsonl"
    done = {(r["row"], r["seed"]) for r in read_jsonl(records_path)}
    plans = {ROWS[0]: (MatchedCNN, None), ROWS[1]: (SemiSupervisedGAN, ()),
             ROWS[2]: (SemiSupervisedGAN, (unlabeled_second,))}
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        for row, (model_type, unlabeled) in plans.items():
            if (row, seed) in done:
                continue
            start = time.perf_counter()
            model = model_type(config.sgan)
            model = model.fit(labeled, random_state=seed) if unlabeled is None else \
                model.fit(labeled, unlabeled, random_state=seed)
            record = {"row": row, "seed": seed, **evaluate(model, test),
                      "seconds": round(time.perf_counter() - start, 1)}
            append_jsonl(records_path, record)
            print(f"{row} (seed {seed}): accuracy {record['accuracy']:.3f}, ROC AUC {record['roc_auc']:.3f} "
                  f"({record['seconds']} s)", flush=True)
    records = pd.DataFrame(read_jsonl(records_path))
    table = domain_table(records)
    notes = (f"Madani et al. Table 2 shape. Dataset 1: {Path(config.data).name} ({len(labeled)} labelled training "
             f"images); dataset 2: {Path(config.second_data).name} ({len(unlabeled_second)} training images used "
             f"without labels in the last row; tested on its {len(test)}-image test split). {size} px; cells: mean "
             f"[95% CI] over seeds.")
    write_tables(table, run_dir / "table2", title="sgan-domain: adapting to a second source without its labels",
                 notes=notes)
    print(f"\nsgan-domain (Madani et al. Table 2 shape)\n\n{to_markdown(table)}\n\n{notes}\n\nresults: {run_dir}")
    return run_dir


def domain_table(records: pd.DataFrame) -> pd.DataFrame:
    """Table 2 rows: accuracy and ROC AUC on dataset 2 as mean [CI] over seeds, and each SGAN row's paired ROC AUC
    difference to the CNN of the same seed with its paired t-test p-value."""
    auc = {row: records[records["row"] == row].set_index("seed")["roc_auc"] for row in ROWS}
    rows = []
    for row in ROWS:
        mine = records[records["row"] == row]
        entry = {"training": row, "accuracy on dataset 2": seed_cell(mine["accuracy"].tolist()),
                 "ROC AUC on dataset 2": seed_cell(mine["roc_auc"].tolist()), "ROC AUC - CNN": "", "paired t p": ""}
        if row != ROWS[0]:
            entry["ROC AUC - CNN"], entry["paired t p"] = paired_seed_cells(auc[row], auc[ROWS[0]])
        rows.append({**entry, "seeds": len(mine)})
    return pd.DataFrame(rows)


def plan_sgan_domain(config: SganDomainConfig) -> pd.DataFrame:
    """What a run would train (for ``--dry-run``): the rows with their labelled / unlabelled / test counts."""
    size = config.sgan.image_size
    first, second = load_binary(config.data, size), load_binary(config.second_data, size)
    n_lab, n_unl, n_test = len(first.split("train")), len(second.split("train")), len(second.split("test"))
    return pd.DataFrame([{"training": row, "labelled (dataset 1)": n_lab,
                          "unlabelled (dataset 2)": n_unl if i == 2 else 0,
                          "test (dataset 2)": n_test, "seeds": config.seeds, "steps each": config.sgan.steps}
                         for i, row in enumerate(ROWS)])
