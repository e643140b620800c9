"""Augmentation settings and the random draws of a 2D training sample's augmentation.

Spatial augmentation (rotation, scaling, elastic deformation, mirroring) is expressed as a sampling
grid (see :mod:`cctrnet.training.data.patch_extraction`), so that image, label channels and voxel
coordinates of a sample are all read through one and the same grid. Intensity augmentation (noise,
blur, brightness, contrast, gamma) uses batchgenerators' transforms on the ``data`` key only, which holds
nothing but image channels: labels and coordinates are never touched by it.

Defaults follow nnU-Net's 2D training (rotation +-180 deg in plane with p 0.2, scaling 0.7-1.4 with
p 0.2, no elastic deformation, mirroring of both axes, and its intensity probabilities).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.ndimage import gaussian_filter


@dataclass(frozen=True)
class AugmentationSettings:
    """Probabilities are per sample; ranges are (low, high), sampled uniformly."""

    p_rotation: float = 0.2
    rotation_max_deg: float = 180.0  # in-plane angle drawn from [-max, +max]
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)  # >1 samples a larger region: content shrinks
    p_elastic: float = 0.0  # nnU-Net switches elastic deformation off for 2D
    elastic_alpha: tuple[float, float] = (0.0, 200.0)  # magnitude before smoothing, pixels
    elastic_sigma: tuple[float, float] = (9.0, 13.0)  # smoothing of the displacement field, pixels
    mirror_axes_yx: tuple[bool, bool] = (True, True)
    p_mirror_per_axis: float = 0.5
    image_interpolation_order: int = 3
    p_noise: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    p_blur_per_channel: float = 0.5
    p_brightness: float = 0.15
    brightness_multiplier: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_gamma: float = 0.3
    p_gamma_inverted: float = 0.1
    gamma_range: tuple[float, float] = (0.7, 1.5)

    @classmethod
    def identity(cls) -> "AugmentationSettings":
        """No augmentation at all: a sample is a plain crop of its slice (tests, validation)."""
        return cls(p_rotation=0.0, p_scale=0.0, p_elastic=0.0, mirror_axes_yx=(False, False), p_noise=0.0,
                   p_blur=0.0, p_brightness=0.0, p_contrast=0.0, p_gamma=0.0, p_gamma_inverted=0.0)

    def spatial_only(self) -> "AugmentationSettings":
        """These spatial settings with every intensity transform switched off."""
        return replace(self, p_noise=0.0, p_blur=0.0, p_brightness=0.0, p_contrast=0.0, p_gamma=0.0,
                       p_gamma_inverted=0.0)

    def __post_init__(self) -> None:
        probabilities = {k: v for k, v in vars(self).items() if k.startswith("p_")}
        bad = {k: v for k, v in probabilities.items() if not 0.0 <= v <= 1.0}
        if bad:
            raise ValueError(f"augmentation probabilities must lie in [0, 1], got {bad}")
        if min(self.scale_range) <= 0:
            raise ValueError(f"scale_range must be positive, got {self.scale_range}")
        if self.image_interpolation_order not in (0, 1, 2, 3, 4, 5):
            raise ValueError(f"image_interpolation_order must be 0..5, got {self.image_interpolation_order}")


@dataclass(frozen=True)
class SpatialParameters:
    """The spatial augmentation of one sample, in the order it is applied to the output grid.

    ``rotation_rad``: counter-clockwise in the (y, x) plane; ``scale``: factor on the sampled region's
    extent; ``elastic_displacement_yx``: (2, h, w) offsets in pixels or None; mirroring flips the
    output along y and/or x.
    """

    rotation_rad: float = 0.0
    scale: float = 1.0
    mirror_y: bool = False
    mirror_x: bool = False
    elastic_displacement_yx: np.ndarray | None = field(default=None, compare=False)

    @property
    def is_axis_aligned_crop(self) -> bool:
        """True when the grid is a plain integer crop (possibly mirrored): no interpolation needed."""
        return self.rotation_rad == 0.0 and self.scale == 1.0 and self.elastic_displacement_yx is None


def _draw_scale(rng: np.random.Generator, scale_range: tuple[float, float]) -> float:
    # As nnU-Net: half of the draws shrink, half enlarge, so 0.7-1.4 is not biased towards enlarging.
    low, high = scale_range
    if low < 1.0 and (high <= 1.0 or rng.random() < 0.5):
        return float(rng.uniform(low, min(1.0, high)))
    return float(rng.uniform(max(1.0, low), high))


def draw_spatial_parameters(rng: np.random.Generator, settings: AugmentationSettings,
                            patch_size_yx: tuple[int, int]) -> SpatialParameters:
    """Draw one sample's spatial augmentation."""
    elastic = None
    if settings.p_elastic > 0 and rng.random() < settings.p_elastic:
        alpha = rng.uniform(*settings.elastic_alpha)
        sigma = rng.uniform(*settings.elastic_sigma)
        noise = rng.uniform(-1.0, 1.0, size=(2, *patch_size_yx))
        elastic = np.stack([gaussian_filter(n, sigma, mode="constant", cval=0.0) * alpha for n in noise])
    rotation = 0.0
    if settings.p_rotation > 0 and rng.random() < settings.p_rotation:
        max_rad = math.radians(settings.rotation_max_deg)
        rotation = float(rng.uniform(-max_rad, max_rad))
    scale = 1.0
    if settings.p_scale > 0 and rng.random() < settings.p_scale:
        scale = _draw_scale(rng, settings.scale_range)
    mirror = [bool(enabled and rng.random() < settings.p_mirror_per_axis) for enabled in settings.mirror_axes_yx]
    return SpatialParameters(rotation_rad=rotation, scale=scale, mirror_y=mirror[0], mirror_x=mirror[1],
                             elastic_displacement_yx=elastic)


def intensity_transforms(settings: AugmentationSettings) -> list:
    """batchgenerators transforms acting on the ``data`` key (image channels) only; empty when all are off."""
    from batchgenerators.transforms.color_transforms import (
        BrightnessMultiplicativeTransform, ContrastAugmentationTransform, GammaTransform)
    from batchgenerators.transforms.noise_transforms import GaussianBlurTransform, GaussianNoiseTransform

    transforms = []
    if settings.p_noise > 0:
        transforms.append(GaussianNoiseTransform(noise_variance=settings.noise_variance, p_per_sample=settings.p_noise))
    if settings.p_blur > 0:
        transforms.append(GaussianBlurTransform(blur_sigma=settings.blur_sigma, different_sigma_per_channel=True,
                                                p_per_channel=settings.p_blur_per_channel,
                                                p_per_sample=settings.p_blur))
    if settings.p_brightness > 0:
        transforms.append(BrightnessMultiplicativeTransform(multiplier_range=settings.brightness_multiplier,
                                                            p_per_sample=settings.p_brightness))
    if settings.p_contrast > 0:
        transforms.append(ContrastAugmentationTransform(contrast_range=settings.contrast_range,
                                                        p_per_sample=settings.p_contrast))
    if settings.p_gamma_inverted > 0:
        transforms.append(GammaTransform(settings.gamma_range, invert_image=True, per_channel=True,
                                         retain_stats=True, p_per_sample=settings.p_gamma_inverted))
    if settings.p_gamma > 0:
        transforms.append(GammaTransform(settings.gamma_range, invert_image=False, per_channel=True,
                                         retain_stats=True, p_per_sample=settings.p_gamma))
    return transforms
