"""What a recipe does for its ``synthetic:<stem>`` rows (``--synthetic FILE``): the leakage check of the plan, the
audit of each file (an analysis cell), and the audit table of the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import pandas as pd

from cxrgan.balance.synthetic import check_synthetic_files
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.synthetic import ROW_PREFIX, SyntheticFiles, load_synthetic
from cxrgan.evaluate.audit import AuditConfig, reference_cells, train_feature_model
from cxrgan.evaluate.synthetic_audit import audit_synthetic
from cxrgan.engine import Table
from cxrgan.generators.base import image_fingerprint

AUDIT_FOLDER = "synthetic"  # RUN_DIR/synthetic/<stem>/audit/audit.json
AUDIT_COLUMNS = {"frechet_distance": "FD", "precision": "precision", "recall": "recall", "coverage": "coverage",
                 "two_sample_auc": "real-vs-synthetic AUC", "memorised_same_class": "memorised (same class)",
                 "near_copies_train": "near-copies of training images", "tstr_auc": "TSTR AUC"}


def check_rows(files: SyntheticFiles, train: CXRDataset, evaluation: Mapping[str, CXRDataset], data: str) -> str:
    """Refuse a file with a near-duplicate of an evaluation image (val, test, external sites: name -> rows) or too
    few images for its draws; the plan's summary lines for the rest."""
    if not files.paths:
        return ""
    described = {(f"the {name} split of {data}" if name in ("val", "test") else f"the external site {name}"):
                 rows.images for name, rows in evaluation.items()}
    reports = check_synthetic_files(files, train, described)
    return "".join(f"; {row}: {r['images']} images ({files.mode}"
                   + (f", {', '.join(f'{n} {k!r}' for k, n in r['draws per seed'].items())} per seed"
                      if r["draws per seed"] else "")
                   + f"), near-copies of training images: {r['near-copies of training images']}, of evaluation "
                     "images: 0" for row, r in reports.items())


def audit_row(run_dir: Path, files: SyntheticFiles, row: str, train: CXRDataset, val: CXRDataset, test: CXRDataset,
              sites: Mapping[str, CXRDataset], config: AuditConfig) -> dict:
    """Audit the file of ``row`` into ``run_dir/synthetic/<stem>/audit/``, in the feature space of a small CNN
    trained once per run on the training rows (kept in ``run_dir/models``)."""
    model = train_feature_model(train, val, config,
                                Path(run_dir) / "models" / f"audit-features-{image_fingerprint(train.images)}.pt")
    return audit_synthetic(load_synthetic(files.path_of(row), train), train, val, test, sites,
                           _audit_path(run_dir, row).parent, config, model)


def _audit_path(run_dir: Path, row: str) -> Path:
    return Path(run_dir) / AUDIT_FOLDER / row.removeprefix(ROW_PREFIX) / "audit" / "audit.json"


def audit_table(run_dir: Path, rows: tuple[str, ...]) -> Table | None:
    """The headline audit numbers of every audited synthetic file, beside the real-vs-real reference."""
    records = []
    for row in rows:
        path = _audit_path(run_dir, row)
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        records.append({"row": row, "images": result["n_synthetic"], "compared with": result["real_rows"],
                        **reference_cells(result["metrics"], AUDIT_COLUMNS)})
    if not records:
        return None
    return Table("synthetic_audit", "Audit of every --synthetic file", pd.DataFrame(records),
                 "Feature space of a small CNN trained on the real training rows; ref = the real-vs-real reference "
                 "(real training vs real test rows; for memorisation, real test rows against the training rows of "
                 "their class). Near-copies: mirrored, shifted, re-encoded or resized copies of training images, "
                 "allowed but memorised; copies of validation, test or external-site images refuse the run.",
                 role="detail")
