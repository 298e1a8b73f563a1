"""The audit of a trained generator: sample it (a translator translates real validation images) and audit the images
with :func:`cxrgan.evaluate.audit.audit_images` against the rows it trained on; ``cxrgan audit GAN_RUN_DIR``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxrgan import distributed
from cxrgan.data.dataset import CXRDataset
from cxrgan.data.images import resize_stack
from cxrgan.device import resolve_device
from cxrgan.errors import CxrganError
from cxrgan.evaluate.audit import AuditConfig, audit_images, train_feature_model
from cxrgan.generators.base import ImageTranslator
from cxrgan.io import write_json


def audit_run(run_dir: str | Path, data_path: str | Path | None = None, out_dir: str | Path | None = None,
              n: int | None = None, config: AuditConfig = AuditConfig(), sample_seed: int = 0,
              feature_model: nn.Module | None = None) -> dict:
    """``cxrgan audit GAN_RUN_DIR``: sample a trained generator and audit its images against its data file's splits
    (the training split standing for the rows it trained on; see :func:`audit_generator`).

    A generator that draws at another size than the data file (the SGAN's 32 px) is audited at its own size: the
    real splits are area-resized to it, as the generator's training rows were.

    Args:
        run_dir: a GAN run directory written by ``cxrgan.generators.runs.train_gan`` (holds checkpoint.pt).
        data_path: the compact .npz the generator was trained from (default: the ``data_path`` in its config.json);
            its train / val / test splits are the real references.
        out_dir: where audit.json, audit.csv and the PNGs go (default: ``run_dir/audit``).
        n: synthetic images to draw (default: as many as the real test split has).
        config: audit settings.
        sample_seed: seeds the generator's sampling.
        feature_model: a feature model already trained on this file's training split (default: train one).
    """
    from cxrgan.data.npz import load_npz
    from cxrgan.generators.runs import load_run
    from cxrgan.runs import read_config

    run_dir = Path(run_dir)
    # runs from `cxrgan train-gan` name their data; generator caches inside a compare run have no config.json
    run_config = read_config(run_dir) if (run_dir / "config.json").exists() else {}
    data_path = data_path if data_path is not None else run_config.get("data_path")
    if data_path is None:
        raise CxrganError(f"{run_dir}: no config.json naming the generator's data file; pass the data file")
    info = load_run(run_dir).data_info_
    names, size = tuple(info["label_names"]), int(info["image_size"])
    target = run_config.get("npz_target") or ("labels" if len(names) == 1 else "findings")
    dataset = load_npz(data_path, target=target)
    if dataset.image_size != size:
        dataset = dataclasses.replace(dataset, images=resize_stack(np.asarray(dataset.images), size))
    train, val, test = dataset.split("train"), dataset.split("val"), dataset.split("test")
    if names != train.label_names:
        raise CxrganError(f"{run_dir}: the generator's labels {list(names)} differ from "
                          f"{data_path}'s {list(train.label_names)}")
    result = audit_generator(run_dir, train, val, test, out_dir, n, config, sample_seed, feature_model)
    result["data_path"] = str(data_path)
    write_json(Path(out_dir if out_dir is not None else run_dir / "audit") / "audit.json", result)
    return result


def audit_generator(run_dir: str | Path, train: CXRDataset, val: CXRDataset, test: CXRDataset,
                    out_dir: str | Path | None = None, n: int | None = None, config: AuditConfig = AuditConfig(),
                    sample_seed: int = 0, feature_model: nn.Module | None = None) -> dict:
    """Sample the trained generator of ``run_dir`` (its ``best.pt`` when the run tracked quality, else its last
    state) and audit the images against ``train``, the rows it trained on (a one-class generator: their rows of its
    class), and the real ``val`` / ``test`` splits.

    A translator (CycleGAN, ``ImageTranslator``) makes images from real ones: its synthetic set is the translation of
    real *validation* images (each class into the other, the classes as balanced as the split allows), so
    "memorised" measures closeness to training images rather than to the translated source, and the test split
    stays the untouched reference.

    Args:
        run_dir: a trained generator's folder (holds checkpoint.pt).
        train, val, test: the real rows it trained on and the real validation and test splits, at its image size.
        out_dir: where audit.json, audit.csv and the PNGs go (default: ``run_dir/audit``; the files are written
            only when this process is the run's main process).
        n: synthetic images to draw (default: as many as ``test`` has).
        config: audit settings.
        sample_seed: seeds the generator's sampling.
        feature_model: a feature model already trained on ``train``'s split (default: train one).
    """
    from cxrgan.generators.runs import load_run

    run_dir = Path(run_dir)
    model = load_run(run_dir, device=resolve_device(config.device))
    n = len(test) if n is None else n
    if n < 2:
        raise CxrganError(f"the audit needs at least 2 synthetic images, got n={n}")
    generator = torch.Generator().manual_seed(sample_seed)
    if isinstance(model, ImageTranslator):
        images, labels = model.translations(val, n, generator)
    else:
        images, labels = model.sample(n, generator=generator)
    out_dir = Path(out_dir if out_dir is not None else run_dir / "audit") if distributed.is_main() else None
    result = audit_images(images, labels, train, val, test, out_dir, config, feature_model)
    result["generator_run"] = str(run_dir)
    result["synthetic_images"] = ("translations of real validation images into the other class"
                                  if isinstance(model, ImageTranslator) else "samples of the generator")
    result["image_size"] = int(model.data_info_["image_size"])
    if out_dir is not None:
        write_json(out_dir / "audit.json", result)
    return result


def audit_generators(run_dir: str | Path, data_path: str | Path, config: AuditConfig = AuditConfig(),
                     n: int | None = None, target: str = "labels", redo: bool = False) -> dict[str, dict]:
    """Audit every trained generator under ``run_dir`` (folders holding checkpoint.pt) against the splits of one
    data file, each into its own ``audit/`` folder, with one shared feature model. A generator whose audit.json is
    newer than its checkpoint keeps that audit unless ``redo``. (A recipe audits each generator against the rows
    it trained on, as an analysis cell.)

    Args:
        run_dir: a folder of GAN runs.
        data_path: the compact .npz the generators were trained from.
        config: audit settings.
        n: synthetic images per generator (default: the size of the real test split).
        target: "labels" or "findings", the task of the file.

    Returns:
        folder (relative to ``run_dir``) -> audit result; empty when the folder holds no generator.
    """
    from cxrgan.data.npz import load_npz

    run_dir = Path(run_dir)
    folders = sorted({p.parent for p in run_dir.rglob("checkpoint.pt")})
    if not folders:
        return {}
    done = {f: json.loads((f / "audit" / "audit.json").read_text(encoding="utf-8")) for f in folders
            if not redo and _audited(f)}
    todo = [f for f in folders if f not in done]
    if todo:
        dataset = load_npz(data_path, target=target)
        model = train_feature_model(dataset.split("train"), dataset.split("val"), config)
        done.update({f: audit_run(f, data_path, f / "audit", n, config, feature_model=model) for f in todo})
    return {str(f.relative_to(run_dir)): done[f] for f in folders}


def _audited(folder: Path) -> bool:
    """Whether ``folder``'s audit.json was written after its last checkpoint."""
    audit = folder / "audit" / "audit.json"
    return audit.exists() and audit.stat().st_mtime >= (folder / "checkpoint.pt").stat().st_mtime
