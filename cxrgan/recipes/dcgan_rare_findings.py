"""Recipe ``dcgan-rare-findings``: U-Ones / U-Zeros / U-Ignore baselines, then one DCGAN per rare finding.

Venugopal Sunitha, "Chest X-ray Disease Diagnosis Using GANs" (CheXpert, DenseNet-121): a baseline classifier
under the uncertainty policies U-Ones and U-Zeros (Irvin et al. 2019; we add U-Ignore, masked in the loss) with
per-finding AUC (their Table 2), then one unconditional DCGAN per rare finding whose samples are added until the
finding is nearly balanced (method B of ``cxrgan.balance.multilabel``), and baseline vs GAN-augmented AUC for the
augmented findings under one policy (their Table 3, U-Zeros).

NIH ChestX-ray14 (the default data) has no uncertain labels, so there every policy gives the same labels: the
baseline is trained once per seed and the policy table says so. Cells are mean [95 % CI over seeds].

CPU budget of the defaults on the NIH subset (measured with one thread while another job used the second core):
one DCGAN per finding (width 32, bf16, 500 steps, batch = the finding's 17-33 images) takes 0.13-0.20 s a step,
about 4 min for three findings per seed; ratio 1.0 adds about 1250 images to the 463 real rows, so the augmented
ResNet-18 run (about 205 images/s, 12 epochs) takes about 100 s and a baseline about 30 s. Five seeds: about
30 min (three baselines per seed on CheXpert, where the policies differ).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cxrgan.balance.multilabel import DEFAULT_MIN_POSITIVES, RareFindingDCGAN, choose_rare_findings
from cxrgan.classify import TrainConfig
from cxrgan.data import CXRDataset
from cxrgan.data.labels import UNCERTAINTY_POLICIES
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.evaluate.summary import paired_seed_cells, seed_cell
from cxrgan.generators import DCGAN, GeneratorSettings
from cxrgan.io import append_jsonl, read_jsonl, write_text
from cxrgan.recipes.cgan_regimes import (
    CPU_CLASSIFIER,
    DEFAULT_DATA,
    load_findings,
    test_positives_note,
    train_and_score,
    with_policy,
)
from cxrgan.report.tables import to_markdown, write_tables
from cxrgan.runs import new_run_dir, write_config

POLICY_NAMES = {"ones": "U-Ones", "zeros": "U-Zeros", "ignore": "U-Ignore"}


@dataclass(frozen=True)
class DcganRareConfig:
    """The recipe's settings; written to the run's config.json."""

    data: str = DEFAULT_DATA  # compact .npz with findings, or a CheXpert / NIH CSV (or folder) with its images
    policies: tuple[str, ...] = ("ones", "zeros", "ignore")  # baseline table columns
    policy: str = "zeros"  # policy of the GAN comparison (the paper's Table 3 uses U-Zeros)
    seeds: int = 5  # classifier and GAN seeds
    first_seed: int = 0  # seed of the first run
    data_seed: int = 0  # seed of CSV splits
    findings: tuple[str, ...] = ()  # findings to augment; empty = the rarest with enough positives
    n_findings: int = 3  # how many to choose (the paper: Pneumonia, Lung Lesion, Consolidation)
    min_positives: int = DEFAULT_MIN_POSITIVES  # floor on training positives (a DCGAN needs >= 16 images)
    min_test_positives: int = 2  # and on test positives (a finding without them has no AUC)
    ratio: float = 1.0  # add images until positives = ratio x negatives of the real training rows
    size: int = 64  # image side when decoding a CSV source
    train: TrainConfig = field(default_factory=lambda: CPU_CLASSIFIER)  # classifier settings
    generators: GeneratorSettings = GeneratorSettings()  # GAN steps / width / full (paper-size, GPU) preset


def run_dcgan_rare_findings(config: DcganRareConfig, out: str | Path, resume_dir: str | Path | None = None,
                            command: str | None = None) -> Path:
    """Baselines per policy and seed, then DCGAN-augmented runs (resumable); write both tables."""
    bad = [p for p in (*config.policies, config.policy) if p not in UNCERTAINTY_POLICIES]
    if bad:
        raise CxrganError(f"unknown uncertainty policy {bad[0]!r}; expected one of {list(UNCERTAINTY_POLICIES)}")
    policies = tuple(dict.fromkeys((*config.policies, config.policy)))
    dataset, raw = load_findings(config.data, config.policy, config.size, config.data_seed)  # decoded once
    n_uncertain = int((raw == -1).sum())
    coincide = n_uncertain == 0
    data = {}
    for policy in policies:  # same rows and splits, the policy's labels (train, val and test alike)
        relabelled = with_policy(dataset, raw, policy)
        data[policy] = (relabelled.split("train"), relabelled.split("val"), relabelled.split("test"))
    train, val, test = data[config.policy]
    findings = config.findings or choose_rare_findings(train, config.n_findings, config.min_positives, test,
                                                       config.min_test_positives)
    run_dir = Path(resume_dir) if resume_dir else new_run_dir(out, f"dcgan-rare-findings-{Path(config.data).stem}")
    write_config(run_dir, config, kind="dcgan-rare-findings")
    if command:
        with open(run_dir / "command.txt", "a", encoding="utf-8") as f:
            f.write(command + "\n")
    print(f"augmented findings: {', '.join(findings)}; uncertain raw labels: {n_uncertain}"
          + (" (all policies coincide)" if coincide else ""))
    done = {(r["policy"], r["method"], r["seed"]) for r in read_jsonl(run_dir / "results.jsonl")}
    gan_config = DCGAN.resolve_config(config.generators)
    device = str(resolve_device(config.train.device))
    for seed in range(config.first_seed, config.first_seed + config.seeds):
        # with no uncertain labels every policy is the same data: one baseline serves all columns
        for policy in (config.policy,) if coincide else policies:
            if (policy, "baseline", seed) not in done:
                _record(run_dir, {"policy": policy, "method": "baseline", "seed": seed}, data[policy],
                        config.train, findings)
        if (config.policy, "dcgan-rare", seed) not in done:
            balancer = RareFindingDCGAN(gan_config, findings, config.ratio, work_dir=run_dir / "generators",
                                        device=device, random_state=seed)
            augmented = balancer.fit_resample(train)
            _record(run_dir, {"policy": config.policy, "method": "dcgan-rare", "seed": seed,
                              "finding_table": balancer.table_.to_dict(orient="records")},
                    (augmented, val, test), config.train, findings)
    return finish_dcgan_rare_findings(run_dir, config, findings, test, coincide)


def plan_dcgan_rare_findings(config: DcganRareConfig) -> pd.DataFrame:
    """Dry run: the chosen findings with their training counts and the images method B would add; nothing is
    trained. The ``uncertain`` column counts raw -1 labels (0 means every policy gives the same labels)."""
    dataset, raw = load_findings(config.data, config.policy, config.size, config.data_seed)
    train, test = dataset.split("train"), dataset.split("test")
    findings = config.findings or choose_rare_findings(train, config.n_findings, config.min_positives, test,
                                                       config.min_test_positives)
    train_raw = raw[(dataset.meta["split"] == "train").to_numpy()]
    rows = []
    for finding in findings:
        j = train.label_names.index(finding)
        positives, negatives = int((train.labels[:, j] == 1).sum()), int((train.labels[:, j] == 0).sum())
        rows.append({"finding": finding, "train +": positives, "train -": negatives,
                     "uncertain": int((train_raw[:, j] == -1).sum()), "test +": int(test.positives()[j]),
                     "generated": max(0, math.ceil(config.ratio * negatives) - positives)})
    return pd.DataFrame(rows)


def _record(run_dir: Path, record: dict, splits, train_config: TrainConfig, findings) -> None:
    started = time.perf_counter()
    train, val, test = splits
    record.update({"train_rows": len(train), "synthetic": int(train.synthetic.sum())})
    record.update(train_and_score(train, val, test, train_config, record["seed"]))
    record["seconds"] = round(time.perf_counter() - started, 1)
    append_jsonl(run_dir / "results.jsonl", record)
    print(f"  {record['method']:>10s} {POLICY_NAMES[record['policy']]:>8s} seed {record['seed']}: "
          + ", ".join(f"{f} {record['auc'][f]:.3f}" for f in findings) + f" ({record['seconds']} s)")


def policy_table(records: list[dict], names: tuple[str, ...], policies: tuple[str, ...], gan_policy: str,
                 coincide: bool) -> pd.DataFrame:
    """Per-finding baseline AUC under each policy (the paper's Table 2 shape); shared runs when they coincide."""
    columns = {}
    for policy in policies:
        source = gan_policy if coincide else policy
        runs = [r for r in records if r["method"] == "baseline" and r["policy"] == source]
        columns[POLICY_NAMES[policy]] = [seed_cell([r["auc"][n] for r in runs]) for n in (*names, "macro")]
    return pd.DataFrame({"finding": [*names, "macro"], **columns})


def gan_table(records: list[dict], findings: tuple[str, ...], policy: str) -> pd.DataFrame:
    """Baseline vs DCGAN-augmented AUC of the augmented findings, with the seed-paired difference (Table 3)."""
    base = {r["seed"]: r for r in records if r["method"] == "baseline" and r["policy"] == policy}
    gan = {r["seed"]: r for r in records if r["method"] == "dcgan-rare"}
    paired = sorted(set(base) & set(gan))
    rows = []
    for finding in findings:
        generated = [t["generated for it"] for t in gan[paired[0]]["finding_table"] if t["finding"] == finding] if paired else []
        row = {"finding": finding, "generated": generated[0] if generated else "n/a",
               "baseline": seed_cell([base[s]["auc"][finding] for s in base]),
               "DCGAN-augmented": seed_cell([gan[s]["auc"][finding] for s in gan])}
        row["difference"], row["paired t p"] = paired_seed_cells(
            pd.Series({s: gan[s]["auc"][finding] for s in gan}, dtype=float),
            pd.Series({s: base[s]["auc"][finding] for s in base}, dtype=float))
        rows.append(row)
    return pd.DataFrame(rows)


def finish_dcgan_rare_findings(run_dir: Path, config: DcganRareConfig, findings: tuple[str, ...],
                               test: CXRDataset, coincide: bool) -> Path:
    records = read_jsonl(run_dir / "results.jsonl")
    names = test.label_names
    policies = tuple(dict.fromkeys((*config.policies, config.policy)))
    baseline = policy_table(records, names, policies, config.policy, coincide)
    final = gan_table(records, findings, config.policy)
    policy_note = ("This dataset has no uncertain (-1) labels, so U-Ones, U-Zeros and U-Ignore give identical labels "
                   "and one baseline per seed fills every column." if coincide else
                   "U-Ones maps uncertain labels to 1, U-Zeros to 0, U-Ignore masks them in the loss; test labels "
                   "follow the same policy.")
    notes = (f"Test ROC AUC, mean [95% CI over {config.seeds} seed(s)]. {policy_note}")
    final_notes = (f"{POLICY_NAMES[config.policy]} labels. One DCGAN per finding trained on its positive training rows; "
                   f"images added until positives = {config.ratio:g} x negatives of the real rows, other findings of "
                   "each image copied from a real row with the finding. difference = augmented - baseline per seed, with its "
                   f"paired t-test. {test_positives_note(test, findings)}")
    write_tables(baseline, run_dir / "table2_policies", title="Baseline AUC per uncertainty policy", notes=notes)
    write_tables(final, run_dir / "table3_gan", title="Baseline vs DCGAN-augmented AUC", notes=final_notes)
    text = (f"dcgan-rare-findings: {Path(config.data).name}, findings {', '.join(findings)}\n\n"
            f"Baseline per uncertainty policy (Table 2 shape)\n\n{to_markdown(baseline)}\n\n{notes}\n\n"
            f"Baseline vs DCGAN (Table 3 shape)\n\n{to_markdown(final)}\n\n{final_notes}\n\nresults: {run_dir}\n")
    write_text(run_dir / "summary.md", text)
    print("\n" + text)
    return run_dir
