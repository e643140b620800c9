"""Batched diffeomorphic registration on top of an affine one, in PyTorch: CPU or CUDA through one code path.

The map of a pair from fixed to moving points is ``y = A(x + u(x))``: ``A`` the stored affine of the pair,
``u`` the displacement of ``exp(v)`` for a stationary velocity field ``v`` that lives on the fixed volume's
pyramid grid (physical mm along x, y, z). Why a stationary velocity field: its inverse is ``exp(-v)`` at no
extra optimisation, so every accepted pair is invertible by construction (REPS can map points both ways
from one registration) and the inverse-consistency check measures only numerical error.

Optimisation, coarse to fine on the anisotropic pyramid of :mod:`cctrnet.registration.pyramid`:

- metric: local normalised cross-correlation in a box window (``deformable_window_voxels`` in-plane,
  the same physical width across thick slices), over fixed voxels whose mapped point lies inside the
  moving volume; one modality per dataset after the same normalisation, so no intensity mapping is needed;
- gradient: of the metric with respect to the displacement ``u`` at the current ``exp(v)`` (the first-order
  update of log-domain demons: ``exp(v) o exp(dv) ~ exp(v + dv)`` for a small smooth ``dv``), Gaussian
  smoothed (``deformable_gradient_sigma_voxels``);
- step: Adam moments of that gradient (kept per voxel, carried to the next level), the step scaled so its
  largest displacement component is ``deformable_step_voxels`` of the level's in-plane spacing, then ``v`` itself is
  Gaussian smoothed (``deformable_field_sigma_voxels``), the regulariser;
- thick slices (``deformable_in_plane_only_ratio``): the field moves points within their slice only, as
  through-plane motion finer than a 5-10 mm slice cannot be told from partial volume; the affine still
  aligns the slices' positions;
- per pair everything is element-wise or convolutional inside its own grid, so the pairs of a batch do not
  influence each other (pairs of different shapes are zero padded; sampling is clamped to each pair's grid).

The field is stored on the fixed volume's grid with in-plane stride ``deformable_field_stride_yx`` as
float16 (:mod:`cctrnet.registration.velocity_field`); the quality checks (folded voxels, inverse
consistency, metric) are computed from what is stored, and a pair outside their bounds is failed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cctrnet.dataset.geometry import Geometry
from cctrnet.registration import velocity_field as vf
from cctrnet.registration.pair_result import STATUS_FAILED, STATUS_OK, PairResult
from cctrnet.registration.pyramid import block_average, shrink_factors_zyx, shrunk_geometry
from cctrnet.registration.settings import RegistrationSettings
from cctrnet.registration.torch_engine import PairVolumes
from cctrnet.registration.transforms import coarse_grid_geometry

METRIC_NAME = "negative_local_normalised_cross_correlation"
METHOD = "affine_deformable"


@dataclass
class _Level:
    """One pyramid level of a batch: padded fixed and moving images and the affine-mapped fixed grid."""

    geometries: list[Geometry]  # each pair's fixed grid at this level
    grid: vf.FieldGrid
    identity: torch.Tensor  # (1, Z, Y, X, 3)
    fixed: torch.Tensor  # (B, 1, Z, Y, X)
    moving: torch.Tensor  # (B, 4, Zm, Ym, Xm): the image and its derivatives along normalised x, y, z
    affine_points: torch.Tensor  # (B, Z, Y, X, 3) moving normalised coordinates of A(x)
    displacement_to_moving: torch.Tensor  # (B, 3, 3) fixed-space mm -> moving normalised offset
    moving_upper: torch.Tensor  # (B, 3)
    windows_zyx: list[tuple[int, int, int]]
    gradient_sigmas_zyx: list[tuple[float, float, float]]
    field_sigmas_zyx: list[tuple[float, float, float]]
    step_mm: torch.Tensor  # (B, 1, 1, 1, 1)
    projection: torch.Tensor | None  # (B, 3, 3) onto each pair's slice plane; None when every pair moves in 3D
    finest_spacing_mm: torch.Tensor  # (B,) each pair's smallest spacing at this level
    box_counts: dict  # window -> (B, 1, Z, Y, X) number of each pair's own voxels in the window
    fixed_statistics: dict | None = None  # window -> (rows, fixed, its window mean and variance), made once


def register_batch_deformable(
    pairs: Sequence[PairVolumes], affine_matrices: Sequence[np.ndarray], affine_texts: Sequence[str],
    settings: RegistrationSettings, device: torch.device | str = "cpu",
) -> list[PairResult]:
    """Deformably register every pair from its affine (4x4, fixed physical -> moving physical)."""
    device = torch.device(device)
    start = time.perf_counter()
    velocity = first_moment = second_moment = None
    previous: list[Geometry] | None = None
    iterations = 0
    level = None
    for level_factor, level_iterations in zip(settings.deformable_levels, settings.deformable_iterations_per_level):
        level = _level(pairs, affine_matrices, level_factor, settings, device)
        if velocity is None:
            velocity = torch.zeros(len(pairs), 3, *level.grid.padded_shape_zyx, device=device)
            first_moment, second_moment = torch.zeros_like(velocity), torch.zeros_like(velocity)
        else:
            velocity, first_moment, second_moment = (_to_level(t, previous, level) for t in (velocity, first_moment, second_moment))
        previous = level.geometries
        for _ in range(level_iterations):
            iterations += 1
            velocity = _step(level, velocity, first_moment, second_moment, iterations, settings)
    with torch.no_grad():
        initial = _metric(level, torch.zeros_like(velocity))
        final = _metric(level, _exponential(level, velocity))
    seconds = (time.perf_counter() - start) / max(1, len(pairs))
    results = []
    for i, pair in enumerate(pairs):
        pair_velocity = velocity[i: i + 1, :, : level.geometries[i].shape_zyx[0], : level.geometries[i].shape_zyx[1],
                                 : level.geometries[i].shape_zyx[2]]
        results.append(_result(pair, pair_velocity, level.geometries[i], affine_texts[i], float(initial[i]),
                               float(final[i]), iterations, seconds, settings))
    return results


def _level(pairs: Sequence[PairVolumes], affine_matrices: Sequence[np.ndarray], level_factor: int,
           settings: RegistrationSettings, device: torch.device) -> _Level:
    fixed_arrays, fixed_geometries, moving_arrays, moving_geometries = [], [], [], []
    for pair in pairs:
        factors_f = shrink_factors_zyx(pair.fixed_geometry, level_factor, settings.min_voxels_per_axis)
        fixed_arrays.append(block_average(pair.fixed_zyx, factors_f))
        fixed_geometries.append(shrunk_geometry(pair.fixed_geometry, factors_f))
        factors_m = shrink_factors_zyx(pair.moving_geometry, level_factor, settings.min_voxels_per_axis)
        moving_arrays.append(block_average(pair.moving_zyx, factors_m))
        moving_geometries.append(shrunk_geometry(pair.moving_geometry, factors_m))
    thick = [_thick_slices(p.fixed_geometry, settings) for p in pairs]  # a property of the scan, not the level
    grid = vf.field_grid(fixed_geometries, device, planar=all(thick))
    projections = [vf.in_plane_projection(g) if t else np.eye(3) for g, t in zip(fixed_geometries, thick)]
    moving_padded = tuple(int(v) for v in np.max([a.shape for a in moving_arrays], axis=0))
    normalise_moving = vf.normalise_matrix(moving_padded)
    affine_points, to_moving, moving_upper = [], [], []
    windows, gradient_sigmas, field_sigmas, steps = [], [], [], []
    index = np.stack(np.meshgrid(*[np.arange(n) for n in grid.padded_shape_zyx], indexing="ij"), axis=-1)
    for affine, fixed_geometry, moving_geometry, moving in zip(affine_matrices, fixed_geometries, moving_geometries, moving_arrays):
        moving_from_physical = normalise_moving @ np.linalg.inv(moving_geometry.index_zyx_to_physical_matrix())
        fixed_to_moving = moving_from_physical @ affine @ fixed_geometry.index_zyx_to_physical_matrix()
        affine_points.append(index @ fixed_to_moving[:3, :3].T + fixed_to_moving[:3, 3])
        to_moving.append(moving_from_physical[:3, :3] @ affine[:3, :3])
        moving_upper.append([2.0 * (moving.shape[a] - 1) / max(1, moving_padded[a] - 1) - 1.0 for a in (2, 1, 0)])
        spacing_zyx = np.asarray(fixed_geometry.spacing_zyx)
        ratio = spacing_zyx.min() / spacing_zyx  # 1 in-plane, < 1 across thick slices
        windows.append(tuple(int(max(1, 2 * round((settings.deformable_window_voxels * r - 1) / 2) + 1)) for r in ratio))
        gradient_sigmas.append(tuple(float(settings.deformable_gradient_sigma_voxels * r) for r in ratio))
        field_sigmas.append(tuple(float(settings.deformable_field_sigma_voxels * r) for r in ratio))
        steps.append(settings.deformable_step_voxels * float(spacing_zyx.min()))
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    return _Level(
        fixed_geometries, grid, vf.identity_normalised(grid.padded_shape_zyx, device),
        as_tensor(np.stack([_pad(a, grid.padded_shape_zyx) for a in fixed_arrays]))[:, None],
        as_tensor(np.stack([_with_gradient(a, moving_padded) for a in moving_arrays])),
        as_tensor(np.stack(affine_points)), as_tensor(to_moving), as_tensor(moving_upper),
        windows, gradient_sigmas, field_sigmas, as_tensor(steps).view(-1, 1, 1, 1, 1),
        as_tensor(projections) if any(thick) else None, as_tensor([min(g.spacing_zyx) for g in fixed_geometries]),
        {window: _box_sum(grid.valid, window) for window in set(windows)},
    )


def _thick_slices(geometry: Geometry, settings: RegistrationSettings) -> bool:
    """Whether the slices are so much thicker than the in-plane spacing that the field stays in-plane."""
    z, y, x = geometry.spacing_zyx
    return z >= settings.deformable_in_plane_only_ratio * min(y, x) and z >= settings.deformable_in_plane_only_min_slice_mm


def _with_gradient(image_zyx: np.ndarray, padded_shape_zyx: Sequence[int]) -> np.ndarray:
    """(4, Z, Y, X): the image and its central-difference derivatives along grid_sample's x, y, z, padded.

    Why not autograd through grid_sample: at the identity every point lies on a voxel centre, where the
    derivative of trilinear interpolation jumps and rounding picks its side, so a pair's path would depend
    on the padded size of its batch. Derivatives of each pair's own array, interpolated, do not.
    """
    channels = [image_zyx]
    for zyx_axis in (2, 1, 0):
        if image_zyx.shape[zyx_axis] > 1:
            derivative = np.gradient(image_zyx, axis=zyx_axis) * (padded_shape_zyx[zyx_axis] - 1) / 2.0
        else:
            derivative = np.zeros_like(image_zyx)
        channels.append(derivative)
    return np.stack([_pad(c, padded_shape_zyx) for c in channels])


def _pad(array: np.ndarray, shape_zyx: Sequence[int]) -> np.ndarray:
    padded = np.zeros(shape_zyx, dtype=np.float32)
    padded[: array.shape[0], : array.shape[1], : array.shape[2]] = array
    return padded


def _to_level(field: torch.Tensor, source: list[Geometry], level: _Level) -> torch.Tensor:
    """Each pair's field on its previous level's grid, resampled onto this level's grid (mm stay mm)."""
    out = torch.zeros(field.shape[0], 3, *level.grid.padded_shape_zyx, device=field.device)
    for i, (old, new) in enumerate(zip(source, level.geometries)):
        own = field[i: i + 1, :, : old.shape_zyx[0], : old.shape_zyx[1], : old.shape_zyx[2]]
        out[i: i + 1, :, : new.shape_zyx[0], : new.shape_zyx[1], : new.shape_zyx[2]] = vf.resample_field(own, old, new)
    return out


def _exponential(level: _Level, velocity: torch.Tensor) -> torch.Tensor:
    steps = vf.squaring_steps(velocity, level.finest_spacing_mm)
    return vf.exponential(velocity, level.grid, steps, level.identity)


def _warp(level: _Level, displacement: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(moving sampled at A(x + u(x)), its derivative along normalised x, y, z there (B, 3, ...), mask of
    fixed voxels mapped inside the moving volume)."""
    points = level.affine_points + vf.apply_matrices(level.displacement_to_moving, displacement)
    sampled = F.grid_sample(level.moving, points, mode="bilinear", padding_mode="zeros", align_corners=True)
    upper = level.moving_upper.view(-1, 1, 1, 1, 3)
    inside = ((points >= -1.0) & (points <= upper)).all(dim=-1)[:, None].to(sampled.dtype) * level.grid.valid
    return sampled[:, :1], sampled[:, 1:], inside


def _groups(values: Sequence) -> dict:
    groups: dict = {}
    for i, value in enumerate(values):
        groups.setdefault(value, []).append(i)
    return groups


def _metric(level: _Level, displacement: torch.Tensor) -> torch.Tensor:
    """Negative local NCC per pair (lower is better), averaged over fixed voxels mapped inside the moving."""
    warped, _, inside = _warp(level, displacement)
    return _ncc_of_warped(level, warped, inside)


def _metric_gradient(level: _Level, displacement: torch.Tensor) -> torch.Tensor:
    """d metric / d u (B, 3, Z, Y, X): autograd to the warped image, the image derivative from there."""
    warped, derivative, inside = _warp(level, displacement)
    warped.requires_grad_(True)
    with torch.enable_grad():
        (by_intensity,) = torch.autograd.grad(_ncc_of_warped(level, warped, inside).sum(), [warped])
    # d warped / d u = (d moving / d normalised) . (d normalised / d u mm)
    by_normalised = (by_intensity * derivative)
    return vf.apply_matrices(level.displacement_to_moving.transpose(1, 2), by_normalised).permute(0, 4, 1, 2, 3)


def _ncc_of_warped(level: _Level, warped: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    if level.fixed_statistics is None:  # the fixed image's window statistics do not change
        level.fixed_statistics = {}
        for window, rows in _groups(level.windows_zyx).items():
            fixed = level.fixed[rows]
            mean, square = _box(torch.cat([fixed, fixed * fixed], dim=1), window, level.box_counts[window][rows]).split(1, dim=1)
            level.fixed_statistics[window] = (rows, fixed, mean, (square - mean * mean).clamp_min(0))
    out = torch.zeros(warped.shape[0], device=warped.device, dtype=warped.dtype)
    for window, (rows, fixed, mean_f, variance_f) in level.fixed_statistics.items():
        index = torch.as_tensor(rows, device=warped.device)
        moving = warped[rows] * level.grid.valid[rows]
        counts = level.box_counts[window][rows]
        mean_m, square_m, product = _box(torch.cat([moving, moving * moving, fixed * moving], dim=1), window, counts).split(1, dim=1)
        covariance = product - mean_f * mean_m
        correlation = covariance * covariance / (variance_f * (square_m - mean_m * mean_m).clamp_min(0) + _NCC_EPSILON)
        mask = inside[rows]
        score = -(correlation * mask).sum(dim=(1, 2, 3, 4)) / mask.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
        out = out.index_copy(0, index, score)
    return out


_NCC_EPSILON = 1e-5  # keeps flat windows (no structure in either image) from dividing by zero


def _box(channels: torch.Tensor, window: tuple[int, int, int], counts: torch.Tensor) -> torch.Tensor:
    """Mean over a box window of every channel, over each pair's own voxels only (``counts`` of them).

    Separable running sums (a cumulative sum per axis) cost the same for any window, where torch's CPU
    pooling costs its width; the padding of a smaller pair in a batch is zero and is counted out.
    """
    return _box_sum(channels, window) / counts.clamp_min(1.0)


def _box_sum(channels: torch.Tensor, window: tuple[int, int, int]) -> torch.Tensor:
    out = channels
    for axis, width in enumerate(window):
        if width > 1:
            out = _running_sum(out, 2 + axis, width)
    return out


def _running_sum(values: torch.Tensor, dim: int, width: int) -> torch.Tensor:
    radius, length = width // 2, values.shape[dim]
    padding = [0, 0] * (values.dim() - dim - 1) + [radius + 1, radius]
    totals = F.pad(values, padding).cumsum(dim)
    return totals.narrow(dim, width, length) - totals.narrow(dim, 0, length)


def _smooth_grouped(field: torch.Tensor, sigmas: Sequence[tuple[float, float, float]], valid: torch.Tensor) -> torch.Tensor:
    groups = _groups(sigmas)
    if len(groups) == 1:
        return vf.smooth(field, next(iter(groups)), valid)
    out = torch.empty_like(field)
    for sigma, rows in groups.items():
        out[rows] = vf.smooth(field[rows], sigma, valid[rows])
    return out


def _step(level: _Level, velocity: torch.Tensor, first: torch.Tensor, second: torch.Tensor, step_count: int,
          settings: RegistrationSettings) -> torch.Tensor:
    with torch.no_grad():
        gradient = _metric_gradient(level, _exponential(level, velocity))
        if level.projection is not None:
            gradient = vf.apply_matrices(level.projection, gradient).permute(0, 4, 1, 2, 3)
        gradient = _smooth_grouped(gradient, level.gradient_sigmas_zyx, level.grid.valid)
        beta1, beta2 = settings.deformable_adam_betas
        first.mul_(beta1).add_(gradient, alpha=1 - beta1)
        second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
        direction = (first / (1 - beta1**step_count)) / ((second / (1 - beta2**step_count)).sqrt() + 1e-12)
        largest = direction.abs().amax(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-12)
        velocity = velocity - level.step_mm * direction / largest
        return _smooth_grouped(velocity, level.field_sigmas_zyx, level.grid.valid)


def _result(pair: PairVolumes, velocity: torch.Tensor, level_geometry: Geometry, affine_text: str, initial: float,
            final: float, iterations: int, seconds: float, settings: RegistrationSettings) -> PairResult:
    result = PairResult(pair.moving_name, pair.fixed_name, METHOD, "torch", STATUS_FAILED, metric_name=METRIC_NAME,
                        metric_initial=initial, metric_final=final, iterations=iterations, seconds=seconds)
    storage = coarse_grid_geometry(pair.fixed_geometry, settings.deformable_field_stride_yx)
    stored = vf.resample_field(velocity.detach().float(), level_geometry, storage)[0].cpu().numpy()
    problem, encoded = None, None
    limit_mm = settings.deformable_max_inverse_error_voxels * float(min(pair.fixed_geometry.spacing_zyx[1:]))
    if not np.all(np.isfinite(stored)):
        problem = "velocity field is not finite"
    elif np.abs(stored).max() > vf.STORABLE_MM:
        problem = f"velocity field reaches {np.abs(stored).max():.0f} mm, beyond the storable {vf.STORABLE_MM:.0f} mm"
    else:
        encoded = vf.velocity_to_bytes(stored, storage)
        stored = vf.velocity_from_bytes(encoded)[0]  # the checks judge what is stored, rounding included
        quality = field_quality(stored, storage)
        result.quality = {**quality, "field_shape_zyx": list(storage.shape_zyx)}
        if quality["folded_fraction"] > settings.deformable_max_folded_fraction:
            problem = (f"deformation folds {100 * quality['folded_fraction']:.2f}% of the voxels "
                       f"(limit {100 * settings.deformable_max_folded_fraction:.2f}%)")
        elif quality["inverse_consistency_mm_p95"] > limit_mm:
            problem = (f"inverse consistency error {quality['inverse_consistency_mm_p95']:.2f} mm (95th percentile) "
                       f"above {limit_mm:.2f} mm ({settings.deformable_max_inverse_error_voxels} voxel)")
        elif not np.isfinite(final) or not final < initial - settings.min_metric_improvement:
            problem = f"did not improve the metric: {final:.4g} not better than the affine's {initial:.4g}"
    if problem is None:
        result.status, result.transform_text = STATUS_OK, affine_text
        result.field_bytes = encoded
    else:
        result.reason = problem
    return result


def field_quality(velocity_mm: np.ndarray, geometry: Geometry) -> dict[str, float]:
    """Folded fraction, inverse consistency (mm) and displacement size of ``exp(v)`` on its grid."""
    forward = vf.displacement_of_velocity(velocity_mm, geometry, 1.0)
    backward = vf.displacement_of_velocity(velocity_mm, geometry, -1.0)
    determinant = vf.jacobian_determinant(forward, geometry)
    error = vf.inverse_consistency_mm(forward, backward, geometry)
    magnitude = np.linalg.norm(forward, axis=0)
    return {
        "folded_fraction": float(np.mean(determinant <= 0)),
        "jacobian_min": float(determinant.min()),
        "inverse_consistency_mm_mean": float(error.mean()),
        "inverse_consistency_mm_p95": float(np.percentile(error, 95)),
        "displacement_mm_mean": float(magnitude.mean()),
        "displacement_mm_max": float(magnitude.max()),
    }
