"""Classifier backbones for 1-channel X-rays of any size, each split into ``features`` and ``head`` for CAM."""

from __future__ import annotations

import os
from typing import Callable

import torch
from monai.networks.nets import DenseNet121, ResNet
from torch import nn

from cxrgan.classify.small_maps import use_small_map_convolutions
from cxrgan.errors import CxrganError
from cxrgan.io import load_torch


class Classifier(nn.Module):
    """``features`` maps (N,1,H,W) to a (N,C,h,w) map; ``head`` pools it and maps to K logits.

    Keeping the two apart lets CAM / Grad-CAM hook the last feature map of every backbone the same way.
    """

    def __init__(self, features: nn.Module, n_features: int, n_outputs: int) -> None:
        super().__init__()
        self.features = features
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(n_features, n_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _resnet18(n_outputs: int) -> Classifier:
    # MONAI's stem defaults to stride 1 (about 4x the FLOPs of the usual ResNet-18); stride 2 is He et al. 2016.
    net = ResNet(
        block="basic",
        layers=[2, 2, 2, 2],
        block_inplanes=[64, 128, 256, 512],
        spatial_dims=2,
        n_input_channels=1,
        conv1_t_stride=2,
        num_classes=n_outputs,
    )
    # The stem's ReLU after its max-pool: the same numbers forward and backward (ReLU is monotone, so it commutes with
    # a max, and both orders send the gradient to the same position or to none), on a quarter of the elements.
    features = nn.Sequential(net.conv1, net.bn1, net.maxpool, net.act, net.layer1, net.layer2, net.layer3, net.layer4)
    return Classifier(features, 512, n_outputs)


def _densenet121(n_outputs: int) -> Classifier:
    net = DenseNet121(spatial_dims=2, in_channels=1, out_channels=n_outputs)
    # DenseNet's class_layers start with ReLU before pooling; keep it in the features so CAM sees activations.
    features = nn.Sequential(net.features, nn.ReLU(inplace=False))
    return Classifier(features, net.class_layers.out.in_features, n_outputs)


def _small_cnn(n_outputs: int, width: int = 32) -> Classifier:
    """Four conv-BN-ReLU stages with stride-2 downsampling: a fast baseline (about 0.3 M parameters)."""
    layers: list[nn.Module] = []
    in_channels = 1
    for i in range(4):
        out_channels = width * 2 ** min(i, 2)
        layers += [
            nn.Conv2d(in_channels, out_channels, 3, stride=1 if i == 0 else 2, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ]
        in_channels = out_channels
    return Classifier(nn.Sequential(*layers), in_channels, n_outputs)


CLASSIFIERS: dict[str, Callable[[int], Classifier]] = {
    "resnet18": _resnet18,
    "densenet121": _densenet121,
    "small-cnn": _small_cnn,
}


def build_classifier(name: str, n_outputs: int, weights_path: str | os.PathLike | None = None) -> Classifier:
    """Build a backbone by name, from scratch or from a local weights file.

    Args:
        name: one of ``CLASSIFIERS`` ("resnet18", "densenet121", "small-cnn").
        n_outputs: K logits (1 for a binary task, 14 for ChestX-ray14 findings).
        weights_path: optional local state dict (e.g. converted ImageNet weights). Keys that do not match in shape
            (first conv for 3 channels, the output layer) are skipped and listed in the error only if nothing loads.
    """
    if name not in CLASSIFIERS:
        raise CxrganError(f"unknown classifier {name!r}; available: {', '.join(CLASSIFIERS)}")
    model = use_small_map_convolutions(CLASSIFIERS[name](n_outputs))  # same weights; faster on the CPU
    if weights_path is not None:
        load_matching_weights(model, weights_path)
    return model


def load_matching_weights(model: nn.Module, weights_path: str | os.PathLike) -> list[str]:
    """Copy every tensor whose name and shape match; returns the names that were loaded. A file that is not a plain
    dict of tensors (or a checkpoint dict holding one under ``model``), holds non-finite values, or matches nothing
    is an error naming it."""
    state = load_torch(weights_path, "weights file")
    state = state.get("model", state)
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CxrganError(f"{weights_path}: holds no tensors by name; expected a state dict (name -> tensor)")
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k in own and own[k].shape == v.shape}
    if not loaded:
        raise CxrganError(f"{weights_path}: no tensor matches the model by name and shape")
    bad = [k for k, v in loaded.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CxrganError(f"{weights_path}: tensor {bad[0]!r} holds NaN or infinite values" +
                          (f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""))
    own.update(loaded)
    model.load_state_dict(own)
    return sorted(loaded)


def check_weights(weights_path: str | os.PathLike | None, name: str) -> None:
    """Refuse a ``--weights`` file before anything is written: missing, not a plain state dict, non-finite, or
    matching nothing of the ``name`` backbone (one line naming the flag and the file)."""
    if weights_path is None:
        return
    try:
        load_matching_weights(build_classifier(name, 1), weights_path)
    except CxrganError as exc:
        raise CxrganError(f"--weights {exc}") from None
