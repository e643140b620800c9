"""The reference registration engine: SimpleITK, Mattes mutual information, physical coordinates.

Affine: centred (geometry) initialisation, then one gradient-descent run per pyramid level on
block-averaged images (see :mod:`cctrnet.registration.pyramid`), optimiser scales from physical shift.
Affine + B-spline: a B-spline stage (mesh from the fixed volume's physical extent) on top of the affine,
both composed into one ``CompositeTransform`` (B-spline applied first, in the fixed volume's space).
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from cctrnet.dataset.geometry import Geometry
from cctrnet.registration.pair_result import STATUS_FAILED, STATUS_OK, PairResult
from cctrnet.registration.pyramid import shrink_factors_zyx
from cctrnet.registration.settings import RegistrationSettings
from cctrnet.registration.transforms import array_to_sitk, implausibility, transform_to_text

METRIC_NAME = "mattes_mutual_information"
_MIN_SAMPLES = 4000


def register_pair_sitk(
    fixed_zyx: np.ndarray,
    fixed_geometry: Geometry,
    moving_zyx: np.ndarray,
    moving_geometry: Geometry,
    method: str,
    settings: RegistrationSettings,
    names: tuple[str, str] = ("moving", "fixed"),
) -> PairResult:
    """Register moving onto fixed; any exception or implausible result becomes a failed PairResult."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(settings.threads_per_process)
    start = time.perf_counter()
    result = PairResult(names[0], names[1], method, "simpleitk", STATUS_FAILED, metric_name=METRIC_NAME)
    try:
        fixed = array_to_sitk(np.asarray(fixed_zyx, dtype=np.float32), fixed_geometry)
        moving = array_to_sitk(np.asarray(moving_zyx, dtype=np.float32), moving_geometry)
        affine = sitk.AffineTransform(
            sitk.CenteredTransformInitializer(
                fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.GEOMETRY
            )
        )
        result.metric_initial = _metric(fixed, moving, affine, settings)
        iterations = _run_affine_levels(fixed, fixed_geometry, moving, moving_geometry, affine, settings)
        transform: Any = affine
        if method == "affine_bspline":
            bspline, bspline_iterations = _run_bspline(fixed, fixed_geometry, moving, moving_geometry, affine, settings)
            iterations += bspline_iterations
            transform = sitk.CompositeTransform([affine, bspline])
        result.iterations = iterations
        result.metric_final = _metric(fixed, moving, transform, settings)
        problem = implausibility(transform, fixed_geometry, settings)
        if problem is None and not np.isfinite(result.metric_final):
            problem = "final metric is not finite"
        if problem is None and not result.metric_final < result.metric_initial - settings.min_metric_improvement:
            problem = f"did not converge: metric {result.metric_final:.4g} not better than start {result.metric_initial:.4g}"
        if problem is None:
            result.status, result.transform_text = STATUS_OK, transform_to_text(transform)
        else:
            result.reason = problem
    except Exception as error:  # a pair must never stop the others; the reason is recorded
        result.reason = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
    result.seconds = time.perf_counter() - start
    return result


def _registration_method(num_voxels: int, settings: RegistrationSettings) -> Any:
    import SimpleITK as sitk

    registration = sitk.ImageRegistrationMethod()
    registration.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    fraction = min(1.0, max(settings.sampling_fraction, _MIN_SAMPLES / max(1, num_voxels)))
    if fraction < 1.0:
        registration.SetMetricSamplingStrategy(registration.RANDOM)
        registration.SetMetricSamplingPercentage(fraction, settings.sampling_seed)
    else:
        registration.SetMetricSamplingStrategy(registration.NONE)
    registration.SetInterpolator(sitk.sitkLinear)
    return registration


def _metric(fixed: Any, moving: Any, transform: Any, settings: RegistrationSettings) -> float:
    registration = _registration_method(int(np.prod(fixed.GetSize())), settings)
    registration.SetInitialTransform(transform, inPlace=False)
    return float(registration.MetricEvaluate(fixed, moving))


def _shrink(image: Any, geometry: Geometry, level: int, settings: RegistrationSettings) -> Any:
    import SimpleITK as sitk

    factors_zyx = shrink_factors_zyx(geometry, level, settings.min_voxels_per_axis)
    if factors_zyx == (1, 1, 1):
        return image
    return sitk.BinShrink(image, [int(f) for f in reversed(factors_zyx)])


def _run_affine_levels(
    fixed: Any, fixed_geometry: Geometry, moving: Any, moving_geometry: Geometry, affine: Any, settings: RegistrationSettings
) -> int:
    """Optimise ``affine`` in place, coarse to fine; returns the number of iterations."""
    iterations = 0
    for level, level_iterations in zip(settings.pyramid_levels, settings.iterations_per_level):
        fixed_level = _shrink(fixed, fixed_geometry, level, settings)
        moving_level = _shrink(moving, moving_geometry, level, settings)
        registration = _registration_method(int(np.prod(fixed_level.GetSize())), settings)
        registration.SetOptimizerAsRegularStepGradientDescent(
            learningRate=settings.max_step_mm,
            minStep=1e-3,
            numberOfIterations=level_iterations,
            relaxationFactor=0.6,
            gradientMagnitudeTolerance=1e-8,
        )
        registration.SetOptimizerScalesFromPhysicalShift()
        registration.SetInitialTransform(affine, inPlace=True)
        registration.Execute(fixed_level, moving_level)
        iterations += registration.GetOptimizerIteration()
    return iterations


def bspline_mesh_size_xyz(geometry: Geometry, mesh_spacing_mm: float) -> list[int]:
    """B-spline mesh cells per axis (x, y, z): the physical extent over the mesh spacing, at least 1."""
    extent_xyz = np.asarray(geometry.shape_zyx[::-1]) * np.asarray(geometry.spacing_xyz)
    return [max(1, int(round(e / mesh_spacing_mm))) for e in extent_xyz]


def _run_bspline(
    fixed: Any, fixed_geometry: Geometry, moving: Any, moving_geometry: Geometry, affine: Any, settings: RegistrationSettings
) -> tuple[Any, int]:
    import SimpleITK as sitk

    mesh = bspline_mesh_size_xyz(fixed_geometry, settings.bspline_mesh_spacing_mm)
    bspline = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    iterations = 0
    for level in settings.bspline_levels:
        fixed_level = _shrink(fixed, fixed_geometry, level, settings)
        moving_level = _shrink(moving, moving_geometry, level, settings)
        registration = _registration_method(int(np.prod(fixed_level.GetSize())), settings)
        registration.SetOptimizerAsLBFGSB(
            gradientConvergenceTolerance=1e-5,
            numberOfIterations=settings.bspline_iterations,
            maximumNumberOfCorrections=5,
            maximumNumberOfFunctionEvaluations=4 * settings.bspline_iterations,
            costFunctionConvergenceFactor=1e7,
        )
        registration.SetMovingInitialTransform(affine)
        registration.SetInitialTransform(bspline, inPlace=True)
        registration.Execute(fixed_level, moving_level)
        iterations += registration.GetOptimizerIteration()
    return bspline, iterations
