"""Flip-and-affine augmentation: a reusable on-the-fly transform and the ``augment`` balancer built on it.

The transform is the standard geometric augmentation of CXR classifiers (random horizontal flip, rotation
+-10 degrees, translation +-6 %, scale 0.9-1.1; Shorten and Khoshgoftaar 2019, "A survey on Image Data
Augmentation for Deep Learning", J. Big Data 6), done with ``torch.nn.functional.affine_grid`` /
``grid_sample``. Out-of-image pixels repeat the border rather than turning black: if only minority images were
given black corners, a classifier could learn the corners instead of the disease.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from imblearn.over_sampling import RandomOverSampler

from cxrgan.balance.base import BalanceContext, Balancer, Powerset, register_balancer
from cxrgan.balance.classic import generated_meta
from cxrgan.data.dataset import CXRDataset
from cxrgan.errors import CxrganError

CHUNK = 512  # images warped at once, bounding memory on large sets


def random_flip_affine_theta(
    n: int,
    generator: torch.Generator,
    flip_probability: float = 0.5,
    max_rotation_deg: float = 10.0,
    max_translation: float = 0.06,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Draw ``n`` random (2, 3) ``affine_grid`` matrices mapping output to input coordinates.

    The forward warp of an image is: flip (x -> -x) with probability ``flip_probability``, then
    y = s R(a) x + t with a ~ U(-max_rotation_deg, max_rotation_deg), s ~ U(scale_range), each component of t ~
    U(-max_translation, max_translation) times the image side. ``affine_grid`` wants the inverse, x = F R(-a)
    (y - t) / s with F the flip; coordinates are normalised to [-1, 1], so a shift of a fraction f of the side
    is 2 f.

    Args:
        n: number of matrices.
        generator: source of every random draw (CPU or the device's generator).
        flip_probability: chance of a horizontal flip.
        max_rotation_deg: rotation bound in degrees.
        max_translation: shift bound as a fraction of the image side, per axis.
        scale_range: (low, high) zoom factors; above 1 enlarges.

    Returns:
        (n, 2, 3) float32 tensor on the generator's device.
    """
    low, high = scale_range
    if not 0 < low <= high:
        raise CxrganError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    if not 0 <= flip_probability <= 1:
        raise CxrganError(f"flip_probability must be in [0, 1], got {flip_probability}")
    device = generator.device
    draws = torch.rand(n, 5, generator=generator, device=device)
    flip = torch.where(draws[:, 0] < flip_probability, -1.0, 1.0)
    angle = (2 * draws[:, 1] - 1) * math.radians(max_rotation_deg)
    scale = low + (high - low) * draws[:, 2]
    shift = (2 * draws[:, 3:5] - 1) * (2 * max_translation)
    cos, sin = torch.cos(angle), torch.sin(angle)
    inverse_rotation = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    linear = inverse_rotation / scale[:, None, None]
    linear[:, 0, :] *= flip[:, None]
    offset = -(linear @ shift[:, :, None])
    return torch.cat([linear, offset], dim=2).float()


def flip_affine_tensor(
    images: torch.Tensor,
    generator: torch.Generator,
    flip_probability: float = 0.5,
    max_rotation_deg: float = 10.0,
    max_translation: float = 0.06,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> torch.Tensor:
    """Randomly flip and warp a float batch (e.g. a training batch in [-1, 1]) on its own device.

    Args:
        images: (N, C, H, W) float tensor.
        generator: source of the random parameters (see ``random_flip_affine_theta``).
        flip_probability, max_rotation_deg, max_translation, scale_range: as in ``random_flip_affine_theta``.

    Returns:
        the warped batch, same shape, dtype and device; bilinear, border pixels repeated outside the image.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise CxrganError(f"expected an (N, C, H, W) float tensor, got {tuple(images.shape)} {images.dtype}")
    theta = random_flip_affine_theta(len(images), generator, flip_probability, max_rotation_deg, max_translation,
                                     scale_range)
    return warp(images, theta)


def warp(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Warp an (N, C, H, W) float batch by (N, 2, 3) ``affine_grid`` matrices (``random_flip_affine_theta``):
    bilinear, border pixels repeated outside the image."""
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_flip_affine(
    images_uint8: np.ndarray,
    generator: torch.Generator,
    flip_probability: float = 0.5,
    max_rotation_deg: float = 10.0,
    max_translation: float = 0.06,
    scale_range: tuple[float, float] = (0.9, 1.1),
) -> np.ndarray:
    """Randomly flip and warp stored images ("flip augmentation on the fly" for recipes).

    Args:
        images_uint8: (N, H, W) uint8 array.
        generator: CPU ``torch.Generator``; the same seed gives the same warps.
        flip_probability, max_rotation_deg, max_translation, scale_range: as in ``random_flip_affine_theta``.

    Returns:
        (N, H, W) uint8, rounded to the nearest grey level.
    """
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.ndim != 3 or images_uint8.dtype != np.uint8:
        raise CxrganError(f"expected (N, H, W) uint8 images, got {images_uint8.shape} {images_uint8.dtype}")
    out = np.empty_like(images_uint8)
    for start in range(0, len(images_uint8), CHUNK):
        batch = torch.from_numpy(np.ascontiguousarray(images_uint8[start : start + CHUNK])).float().unsqueeze(1)
        warped = flip_affine_tensor(batch, generator, flip_probability, max_rotation_deg, max_translation, scale_range)
        out[start : start + CHUNK] = warped.squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()
    return out


class AugmentBalancer(Balancer):
    """``augment``: balance with flipped / affine-warped copies of random minority images.

    Parent rows are drawn as imblearn's ``RandomOverSampler`` draws them (with replacement, within each class,
    up to the largest class); each parent image then gets its own random flip and affine warp
    (``random_flip_affine``). Multi-label: on the label powerset, single-row label vectors included (their one
    image is warped many times); a new row carries its parent's label vector.

    Output: the input rows, then the new rows with ``synthetic=True``, split 'train', source 'augment', and the
    parent's ``patient_id`` and ``view`` kept (a warped image still shows that patient, which patient-level
    grouping needs); other metadata blank.

    Args:
        random_state: seed of the parent choice and of the warps.
        flip_probability, max_rotation_deg, max_translation, scale_range: as in ``random_flip_affine_theta``.
    """

    name = "augment"

    def __init__(
        self,
        random_state: int,
        flip_probability: float = 0.5,
        max_rotation_deg: float = 10.0,
        max_translation: float = 0.06,
        scale_range: tuple[float, float] = (0.9, 1.1),
    ) -> None:
        self.random_state = random_state
        self.flip_probability = flip_probability
        self.max_rotation_deg = max_rotation_deg
        self.max_translation = max_translation
        self.scale_range = scale_range

    def _fit_resample(self, dataset: CXRDataset, classes: Powerset) -> CXRDataset:
        codes = classes.codes
        self.class_counts_ = np.bincount(codes)
        sampler = RandomOverSampler(random_state=self.random_state)
        sampler.fit_resample(np.arange(len(dataset))[:, None], codes)
        parents = np.asarray(sampler.sample_indices_[len(dataset) :], dtype=np.int64)
        generator = torch.Generator().manual_seed(self.random_state)
        images = random_flip_affine(
            dataset.images[parents],
            generator,
            self.flip_probability,
            self.max_rotation_deg,
            self.max_translation,
            self.scale_range,
        )
        parent_meta = dataset.meta.iloc[parents]
        augmented = CXRDataset(
            images=images,
            labels=dataset.labels[parents],
            label_names=dataset.label_names,
            meta=generated_meta(
                dataset.meta,
                len(parents),
                source="augment",
                patient_id=parent_meta["patient_id"].to_numpy(),
                view=parent_meta["view"].to_numpy(),
            ),
            class_names=dataset.class_names,
        )
        self.parent_indices_ = parents
        self.n_synthetic_ = len(parents)
        self.sample_indices_ = np.concatenate([np.arange(len(dataset)), np.full(len(parents), -1)])
        return CXRDataset.concat([dataset, augmented])


@register_balancer("augment")
def _make_augment(context: BalanceContext) -> Balancer:
    return AugmentBalancer(random_state=context.random_state)
