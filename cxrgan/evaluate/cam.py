"""Class activation maps (CAM, Grad-CAM) of cxrgan classifiers and side-by-side overlay panels on the X-rays.

CAM: Zhou et al. 2016, "Learning Deep Features for Discriminative Localization" -- the map is the output layer's
weights applied to the last feature map, M_c(x, y) = sum_k w_k^c f_k(x, y); it needs a global-average-pool head.
Grad-CAM: Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization" -- the channel weights are the spatially averaged gradients of the class logit, alpha_k^c =
mean_xy d y^c / d f_k(x, y), and the map is ReLU(sum_k alpha_k^c f_k); it works for any backbone.
Both hook ``model.features`` (the last (N, C, h, w) map of every ``cxrgan.classify.Classifier``) through MONAI's
``monai.visualize.CAM`` / ``GradCAM``, which upsample the map bilinearly to the image; it is then min-max scaled per
image so that 1 marks the strongest evidence for the class (MONAI's default normaliser maps the maximum to 0).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.visualize import CAM, GradCAM  # noqa: E402
from torch import nn  # noqa: E402

from cxrgan.classify.networks import build_classifier  # noqa: E402
from cxrgan.errors import CxrganError  # noqa: E402
from cxrgan.io import atomic_write, load_torch  # noqa: E402

# A builder wraps a model into explain(x, target) -> (N, 1, H, W) maps.
CamBuilder = Callable[[nn.Module], Callable[[torch.Tensor, int], torch.Tensor]]


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-image scaling to [0, 1] with the strongest evidence at 1 (MONAI's default flips it to 0)."""
    low = maps.amin(dim=tuple(range(1, maps.ndim)), keepdim=True)
    high = maps.amax(dim=tuple(range(1, maps.ndim)), keepdim=True)
    return torch.where(high > low, (maps - low) / (high - low).clamp(min=1e-12), torch.zeros_like(maps))


def _gradcam(model: nn.Module) -> Callable[[torch.Tensor, int], torch.Tensor]:
    explainer = GradCAM(nn_module=model, target_layers="features", postprocessing=_min_max)
    return lambda x, target: explainer(x, class_idx=target)


def _cam(model: nn.Module) -> Callable[[torch.Tensor, int], torch.Tensor]:
    head = getattr(model, "head", None)
    layers = list(head) if isinstance(head, nn.Sequential) else []
    if len(layers) != 3 or not isinstance(layers[0], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) \
            or not isinstance(layers[2], nn.Linear):
        raise CxrganError(f"CAM needs a global-pool + linear head; {type(model).__name__} has {head!r}; "
                          "use method='gradcam'")
    explainer = CAM(nn_module=model, target_layers="features", fc_layers="head.2", postprocessing=_min_max)
    # MONAI's CAM takes one class index per image
    return lambda x, target: explainer(x, class_idx=torch.full((len(x),), target, dtype=torch.long))


CAM_METHODS: dict[str, CamBuilder] = {"gradcam": _gradcam, "cam": _cam}


def class_activation_maps(model: nn.Module, images: np.ndarray, method: str = "gradcam", target: int = 0,
                          batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Activation maps of label column ``target`` and the model's probabilities for a stack of X-rays.

    Args:
        model: a ``cxrgan.classify.Classifier`` (anything with ``features`` and, for CAM, a pool-linear ``head``).
            It is copied first, so the hooks MONAI registers never stay on the caller's model.
        images: (N, H, W) uint8 images, scaled like training input ([-1, 1]).
        method: "gradcam" (any backbone) or "cam" (global-pool heads).
        target: label column whose logit is explained (0 = the positive class of a binary task).
        batch_size: images per forward/backward pass.

    Returns:
        maps (N, H, W) float32 in [0, 1] and probabilities (N,) of column ``target``.
    """
    if method not in CAM_METHODS:
        raise CxrganError(f"unknown CAM method {method!r}; available: {', '.join(CAM_METHODS)}")
    images = _check_images(images)
    model = copy.deepcopy(model).float().cpu().eval()
    n_outputs = _n_outputs(model)
    if not 0 <= target < n_outputs:
        raise CxrganError(f"target column {target} is out of range; the model has {n_outputs} output(s)")
    explainer = CAM_METHODS[method](model)
    maps, probabilities = [], []
    for start in range(0, len(images), batch_size):
        x = _to_input(images[start:start + batch_size])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MONAI warns about its own hook bookkeeping
            with torch.enable_grad():
                cam = explainer(x, target)
        maps.append(np.nan_to_num(cam.detach()[:, 0].numpy().astype(np.float32)))
        with torch.no_grad():
            probabilities.append(torch.sigmoid(model(x)[:, target]).numpy())
    return np.concatenate(maps), np.concatenate(probabilities)


def cam_panel(models: Mapping[str, nn.Module], images: np.ndarray | Mapping[str, np.ndarray], out_png: str | Path,
              method: str = "gradcam", target: int = 0, target_name: str = "positive", alpha: float = 0.45) -> Path:
    """One PNG: a row per image (the X-ray, then its map under each model), models side by side.

    Args:
        models: display name -> classifier, e.g. {"none": baseline, "augment": trained with augmentation}.
        images: (N, H, W) uint8, or group name -> images (e.g. {"real": ..., "synthetic": ...}); rows are labelled
            with their group.
        out_png: the PNG to write (atomically).
        method: "gradcam" or "cam".
        target: label column explained.
        target_name: its name for the titles (e.g. "pneumonia").
        alpha: opacity of the heat map over the X-ray.
    """
    if not models:
        raise CxrganError("cam_panel needs at least one model")
    groups = {"": images} if not isinstance(images, Mapping) else dict(images)
    rows: list[tuple[str, np.ndarray]] = []
    for group, stack in groups.items():
        rows += [(group, image) for image in _check_images(stack)]
    if not rows:
        raise CxrganError("cam_panel needs at least one image")
    stack = np.stack([image for _, image in rows])
    results = {name: class_activation_maps(model, stack, method, target) for name, model in models.items()}
    n_columns = 1 + len(models)
    fig, axes = plt.subplots(len(rows), n_columns, figsize=(2.2 * n_columns, 2.3 * len(rows)), dpi=100,
                             squeeze=False)
    for i, (group, image) in enumerate(rows):
        axes[i, 0].imshow(image, cmap="gray", vmin=0, vmax=255)
        axes[i, 0].set_title(f"{group} #{i}" if group else f"image #{i}", fontsize=8)
        for j, (name, (maps, probabilities)) in enumerate(results.items(), start=1):
            axes[i, j].imshow(image, cmap="gray", vmin=0, vmax=255)
            axes[i, j].imshow(maps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1)
            axes[i, j].set_title(f"{name}\np({target_name}) = {probabilities[i]:.2f}", fontsize=8)
    for ax in axes.ravel():
        ax.set_axis_off()
    fig.suptitle(f"{'Grad-CAM' if method == 'gradcam' else 'CAM'} of {target_name!r}", fontsize=10)
    fig.tight_layout()
    try:
        return atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def load_saved_classifier(path: str | Path) -> nn.Module:
    """A classifier saved by ``cxrgan compare`` as ``models/{method}-seed{seed}.pt``
    ({"model": state dict, "config": backbone name, "n_outputs": K}), in eval mode on the CPU."""
    path = Path(path)
    if not path.exists():
        raise CxrganError(f"{path}: no such model file")
    saved = load_torch(path, "cxrgan saved classifier")
    if not {"model", "config", "n_outputs"} <= set(saved):
        raise CxrganError(f"{path}: not a cxrgan saved classifier (needs keys model, config, n_outputs)")
    model = build_classifier(str(saved["config"]), int(saved["n_outputs"]))
    try:
        model.load_state_dict(saved["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CxrganError(f"{path}: weights do not fit a {saved['config']!r} classifier ({exc})") from exc
    return model.eval()


def run_models(run_dir: str | Path, methods: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The models a compare run kept (one seed per method), by method, in the run's method order."""
    run_dir = Path(run_dir)
    files = sorted((run_dir / "models").glob("*-seed*.pt"))
    available = {f.stem.rsplit("-seed", 1)[0]: f for f in files}
    if not available:
        raise CxrganError(f"{run_dir}: no saved models under models/; run `cxrgan compare` first")
    if methods is None:  # the run's own method order (baseline first), when its config names one
        configured = _configured_methods(run_dir)
        methods = [m for m in configured if m in available] + [m for m in available if m not in configured]
    missing = [m for m in methods if m not in available]
    if missing:
        raise CxrganError(f"{run_dir}: no saved model for method(s) {missing}; available: {sorted(available)}")
    return {m: load_saved_classifier(available[m]) for m in methods}


def cam_for_run(run_dir: str | Path, images: np.ndarray | Mapping[str, np.ndarray], out_png: str | Path,
                methods: Sequence[str] | None = None, method: str = "gradcam", target: int = 0,
                target_name: str = "positive") -> Path:
    """``cxrgan cam RUN_DIR``: the panel of the run's saved models (all, or ``methods``) on ``images``."""
    return cam_panel(run_models(run_dir, methods), images, out_png, method, target, target_name)


def cam_images(paths: Sequence[str | Path], size: int, n: int = 4, split: str = "test", seed: int = 0
               ) -> dict[str, np.ndarray]:
    """Images for a panel, from the command line, grouped by where they came from.

    Args:
        paths: compact .npz files (``n`` random rows of ``split``, or of all rows when the file has no such split,
            e.g. a sample file from ``cxrgan sample``; the group says "synthetic" when its rows are flagged so)
            and single image files (PNG / JPEG / DICOM; centre-cropped and resized, grouped as "files").
        size: side length the models were trained at.
        n: rows taken from each .npz.
        split: split the .npz rows come from.
        seed: seeds the row choice.
    """
    from cxrgan.data.images import load_square, resize_stack
    from cxrgan.data.npz import load_npz

    if not paths:
        raise CxrganError("no images given; pass .npz files or image files")
    rng = np.random.default_rng(seed)
    groups: dict[str, np.ndarray] = {}
    files = []
    for path in map(Path, paths):
        if path.suffix.lower() != ".npz":
            if not path.exists():
                raise CxrganError(f"{path}: no such image file")
            files.append(load_square(path, size))
            continue
        dataset = load_npz(path)
        rows = dataset.split(split) if (dataset.meta["split"] == split).any() else dataset
        rows = rows.subset(np.sort(rng.choice(len(rows), min(n, len(rows)), replace=False)))
        kind = "synthetic" if rows.synthetic.all() else split
        groups[f"{path.stem} ({kind})"] = resize_stack(rows.images, size)
    if files:
        groups["files"] = np.stack(files)
    return groups


def cam_command(run_dir: str | Path, image_paths: Sequence[str | Path], out_png: str | Path,
                methods: Sequence[str] | None = None, method: str = "gradcam", n: int = 4, split: str = "test",
                target: int = 0, seed: int = 0) -> Path:
    """``cxrgan cam RUN_DIR --images A.npz B.png ... --out FILE.png``: every saved model of a compare run, side by
    side, on images from data / sample files or single image files, at the run's image size."""
    from cxrgan.data.npz import load_npz
    from cxrgan.runs import config_data_file, read_config

    config = read_config(run_dir, kind="compare")
    data_path = config_data_file(config)
    if data_path is None:
        raise CxrganError(f"{Path(run_dir) / 'config.json'}: names no single data file to take the image size from")
    data = load_npz(data_path, target=config.get("target", "labels"), uncertainty=config.get("uncertainty", "ignore"))
    if not 0 <= target < data.n_labels:
        raise CxrganError(f"target column {target} is out of range; {data_path} has {data.n_labels} label(s)")
    name = data.class_names[1] if data.class_names is not None else data.label_names[target]
    images = cam_images(image_paths, data.image_size, n, split, seed)
    return cam_for_run(run_dir, images, out_png, methods, method, target, name)


def _configured_methods(run_dir: Path) -> list[str]:
    import json

    path = run_dir / "config.json"
    try:
        methods = json.loads(path.read_text(encoding="utf-8")).get("config", {}).get("methods", [])
    except (OSError, json.JSONDecodeError):
        return []
    return [str(m) for m in methods] if isinstance(methods, list) else []


def _n_outputs(model: nn.Module) -> int:
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linear[-1].out_features if linear else 1


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3 or images.dtype != np.uint8:
        raise CxrganError(f"images must be an (N, H, W) uint8 array, got {images.shape} {images.dtype}")
    return images


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W) -> float (N, 1, H, W) in [-1, 1], the scaling ``train_classifier`` uses."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0).unsqueeze(1)
