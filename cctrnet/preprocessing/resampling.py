"""Resampling arrays between grids in physical space (SimpleITK), without creating new label values."""
from __future__ import annotations

import numpy as np

from cctrnet.dataset.geometry import Geometry

IMAGE_INTERPOLATION = "bspline"  # cubic B-spline for images
_INTERPOLATORS = ("nearest", "linear", "bspline")


def _resample_volume(volume_zyx: np.ndarray, source: Geometry, target: Geometry, interpolation: str) -> np.ndarray:
    import SimpleITK as sitk

    if interpolation not in _INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {_INTERPOLATORS}, got {interpolation!r}")
    interpolator = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear,
                    "bspline": sitk.sitkBSpline}[interpolation]
    image = source.apply_to_sitk(sitk.GetImageFromArray(np.ascontiguousarray(volume_zyx, dtype=np.float32)))
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(target.reference_image())
    f.SetInterpolator(interpolator)
    f.SetOutputPixelType(sitk.sitkFloat32)
    f.SetDefaultPixelValue(0.0)
    # the extent is preserved, so points between the outermost voxel centres and the edge stay defined
    f.SetUseNearestNeighborExtrapolator(True)
    return sitk.GetArrayFromImage(f.Execute(image))


def resample_image(data_czyx: np.ndarray, source: Geometry, target: Geometry,
                   interpolation: str = IMAGE_INTERPOLATION) -> np.ndarray:
    """Resample every channel of (c, z, y, x) intensities from ``source`` to ``target`` grid."""
    if source.same_grid(target, rtol=1e-6, atol_mm=1e-6):
        return np.asarray(data_czyx, dtype=np.float32).copy()
    return np.stack([_resample_volume(c, source, target, interpolation) for c in data_czyx]).astype(np.float32)


def resample_probabilities(probabilities_czyx: np.ndarray, source: Geometry, target: Geometry) -> np.ndarray:
    """Resample per-class maps (probabilities or one-hot) linearly; the result is not renormalised."""
    return resample_image(probabilities_czyx, source, target, interpolation="linear")


def resample_label(label_zyx: np.ndarray, source: Geometry, target: Geometry, labels: list[int]) -> np.ndarray:
    """Resample a label map: each class's one-hot mask linearly, then the argmax (no new values appear)."""
    if source.same_grid(target, rtol=1e-6, atol_mm=1e-6):
        return np.asarray(label_zyx).copy()
    labels = sorted(labels)
    one_hot = np.stack([(label_zyx == value).astype(np.float32) for value in labels])
    resampled = resample_probabilities(one_hot, source, target)
    return np.asarray(labels, dtype=label_zyx.dtype)[np.argmax(resampled, axis=0)]
