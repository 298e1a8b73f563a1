"""Plain functions behind ``cxrgan train-gan`` and ``cxrgan sample``: numbered generator runs, loading them, sampling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrgan import distributed
from cxrgan.data.dataset import from_arrays
from cxrgan.data.npz import load_npz, save_npz
from cxrgan.errors import CxrganError
from cxrgan.io import load_torch, read_json
from cxrgan.generators.artifacts import save_grid
from cxrgan.generators.base import GENERATORS, GenerativeModel, generator_class
from cxrgan.generators.trainer_config import config_record
from cxrgan.generators.training import BEST_NAME, CHECKPOINT_NAME
from cxrgan.runs import new_run_dir, write_config

CHECKPOINTS = ("best", "last")  # best.pt (by the fidelity score, when the run tracked it) or checkpoint.pt


def _run_method(run_dir: Path) -> str | None:
    """The method a numbered train-gan run directory trains (from its config.json), or None."""
    path = run_dir / "config.json"
    if not path.is_file():
        return None
    config = read_json(path, "restore it from a copy or start a new run").get("config")
    return config.get("method") if isinstance(config, dict) else None


def _latest_run(out_dir: Path, method: str) -> Path:
    runs = sorted(p for p in out_dir.glob("[0-9]" * 5 + "-*") if p.is_dir() and _run_method(p) == method)
    if not runs:
        raise CxrganError(f"{out_dir}: no {method} run to resume")
    return runs[-1]


def train_gan(method: str, data_path: str | Path, out_dir: str | Path, config: Any = None,
              device: str | torch.device = "cpu", resume: bool | str | Path = False, npz_target: str | None = None) -> Path:
    """Train generator ``method`` on the training split of a compact .npz file in a numbered run directory.

    Args:
        method: a key of ``GENERATORS`` ("dcgan", "cdcgan", "cgan-labelvec", "cyclegan", "sgan", ...).
        data_path: the .npz file (``cxrgan.data.load_npz`` format); only its "train" rows are used.
        out_dir: parent folder of the numbered run directories (``00000-dcgan-kermany_pneumonia_64``).
        config: the method's config; None uses its defaults.
        device: torch device.
        resume: False starts a new run; True continues the latest ``method`` run in ``out_dir``; a path continues
            that run directory. A finished run is returned as it is.
        npz_target: "labels" (binary) or "findings" (multi-label) task of the file; None = the method's own.

    Returns:
        The run directory, holding config.json, status.json, metrics.jsonl, loss_curves.png, samples/,
        checkpoint.pt and (when the run tracked quality) best.pt.
    """
    cls = generator_class(method)
    config = config if config is not None else cls.config_class()
    if not isinstance(config, cls.config_class):
        raise CxrganError(f"method {method!r} takes a {cls.config_class.__name__}, got {type(config).__name__}")
    npz_target = npz_target or cls.data_target
    data_path = Path(data_path)
    train_split = distributed.agree(lambda: load_npz(data_path, target=npz_target).split("train"))
    run_dir = distributed.on_main(lambda: _open_run(method, data_path, Path(out_dir), config, resume, npz_target))
    cls(config, device=device, run_dir=run_dir).fit(train_split, resume=bool(resume))
    return run_dir


def _open_run(method: str, data_path: Path, out_dir: Path, config: Any, resume: bool | str | Path,
              npz_target: str) -> Path:
    """The run directory of ``train_gan`` (the latest ``method`` run, the given one, or a new one) with its config."""
    if resume is True:
        run_dir = _latest_run(out_dir, method)
    elif resume:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise CxrganError(f"{run_dir}: no such run directory to resume")
    else:
        run_dir = new_run_dir(out_dir, f"{method}-{data_path.stem}")
    record = {"method": method, "data_path": str(data_path), "npz_target": npz_target, "generator": config_record(config)}
    for name in type(config).RUN_ONLY_FIELDS:  # may change when the run is resumed
        record["generator"].pop(name, None)
    write_config(run_dir, record, kind=f"gan-{method}")
    return run_dir


def load_run(run_dir: str | Path, method: str | None = None, device: str | torch.device = "cpu",
             checkpoint: str = "best") -> GenerativeModel:
    """The fitted model of a run directory; ``method`` (if given) must match the run's.

    ``checkpoint="best"`` loads best.pt (the best fidelity score) when the run kept one, else the last state;
    ``"last"`` loads checkpoint.pt (the state at the last step written).
    """
    if checkpoint not in CHECKPOINTS:
        raise CxrganError(f"unknown checkpoint {checkpoint!r}; choose one of {list(CHECKPOINTS)}")
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise CxrganError(f"{run_dir}: no {CHECKPOINT_NAME}; not a trained GAN run directory")
    if checkpoint == "best" and (Path(run_dir) / BEST_NAME).exists():
        path = Path(run_dir) / BEST_NAME
    state = load_torch(path, "generator checkpoint", "train the generator again (cxrgan train-gan)")
    run_method = state.get("method")
    if run_method not in GENERATORS:
        raise CxrganError(f"{path}: unknown generator method {run_method!r}")
    if method is not None and run_method != method:
        raise CxrganError(f"{run_dir}: is a {run_method!r} run, expected a {method!r} run")
    try:
        return generator_class(run_method)(device=device).load_state_dict(state)
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as exc:
        raise CxrganError(f"{path}: not a complete {run_method} checkpoint ({type(exc).__name__}: {exc}"[:300]
                          + "); train the generator again (cxrgan train-gan)") from None


def _label_row(model: GenerativeModel, label: str | int) -> np.ndarray:
    """The (K,) label vector a user names: a class name or 0/1 for a binary task, a finding name otherwise."""
    info = model.data_info_
    names, class_names = list(info["label_names"]), info.get("class_names")
    text = str(label)
    if len(names) == 1:
        choices = {"0": 0.0, "1": 1.0, names[0]: 1.0}
        if class_names:
            choices.update({class_names[0]: 0.0, class_names[1]: 1.0})
        if text not in choices:
            raise CxrganError(f"unknown label {text!r}; this run's classes are {class_names or names} (or 0 / 1)")
        return np.array([choices[text]], dtype=np.float32)
    if text not in names:
        raise CxrganError(f"unknown label {text!r}; this run's findings are {names}")
    row = np.zeros(len(names), dtype=np.float32)
    row[names.index(text)] = 1.0
    return row


def sample_from_run(run_dir: str | Path, n: int, label: str | int | None = None, out_path: str | Path = "samples.png",
                    seed: int = 0, device: str | torch.device = "cpu", checkpoint: str = "best") -> Path:
    """Draw ``n`` images from a trained run and write them as a PNG grid (``.png``) or a compact file (``.npz``).

    Args:
        run_dir: a run directory written by ``train_gan``.
        n: number of images.
        label: class or finding to sample; None lets the model choose (its class, or alpha-sampled labels).
        out_path: destination; the suffix picks the format.
        seed: seeds the sampling generator.
        device: torch device.
        checkpoint: "best" (best.pt when the run kept one) or "last" (see ``load_run``).
    """
    out_path = Path(out_path)
    if out_path.suffix.lower() not in (".png", ".npz"):
        raise CxrganError(f"{out_path}: unknown output format {out_path.suffix!r}; use .png (grid) or .npz")
    if n <= 0:
        raise CxrganError(f"--n must be positive, got {n}")
    model = load_run(run_dir, device=device, checkpoint=checkpoint)
    labels = _label_row(model, label) if label is not None else None
    images, sampled_labels = model.sample(n, labels=labels, generator=torch.Generator().manual_seed(seed))
    if out_path.suffix.lower() == ".png":
        return save_grid(images, out_path)
    info = model.data_info_
    dataset = from_arrays(
        images, sampled_labels, info["label_names"], split="train", class_names=info.get("class_names"),
        source=f"{model.name}:{Path(run_dir).name}", synthetic=[True] * n,
    )
    return save_npz(dataset, out_path)
