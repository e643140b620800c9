"""Batched affine registration in PyTorch: many pairs at once, CPU or CUDA through the same code.

Each pair keeps its own physical geometry (shape, spacing, origin, direction): the optimised map is a
physical affine ``y = (I + L)(x - c_f) + c_f + t`` from fixed to moving points (``c_f`` the fixed volume's
centre, ``t`` starting at the centre difference, i.e. a centred initialisation), and per-pair 4x4
matrices carry it into each moving volume's normalised sampling coordinates. Volumes of different sizes
share one batch by zero padding. The metric is the normalised cross-correlation (the volumes of a dataset
are one modality after the same normalisation) on a random subset of fixed voxels per pyramid level;
``t`` is optimised in units of the fixed volume's radius so both parameter groups move points by
comparable physical distances (the idea of ITK's scales from physical shift). Adam's update is
element-wise, so the pairs of a batch do not influence each other.

Before the NCC, every level's fixed and moving images are taken to local zero mean and unit variance in a
Gaussian window of ``settings.torch_affine_local_normalisation_sigma_mm`` (40 mm by default; converted per axis
with the level's spacing; :func:`cctrnet.registration.pyramid.local_normalisation`), so the global NCC of the
normalised images approximates a local NCC at that scale and a smooth multiplicative bias field (coil shading)
divides out; 0 gives the NCC of the block-averaged images themselves, the engine's results before 2026-12-01.
The start, the result and the convergence check are all measured on the same images; the record's
``quality.local_normalisation_sigma_mm`` (and ``local_variance_floor``) say that they were normalised. Each
volume's level images are computed once per batch, or once per run when the caller passes a :class:`LevelImages`.
"""
from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cctrnet.dataset.geometry import Geometry
from cctrnet.registration.pair_result import STATUS_FAILED, STATUS_OK, PairResult
from cctrnet.registration.pyramid import block_average, local_normalisation, shrink_factors_zyx, shrunk_geometry
from cctrnet.registration.settings import RegistrationSettings
from cctrnet.registration.transforms import implausibility, transform_to_text
from cctrnet.registration.velocity_field import normalise_matrix

METRIC_NAME = "negative_normalised_cross_correlation"


@dataclass
class PairVolumes:
    """One pair's arrays (z, y, x) and grids, with its case names."""

    moving_name: str
    fixed_name: str
    fixed_zyx: np.ndarray
    fixed_geometry: Geometry
    moving_zyx: np.ndarray
    moving_geometry: Geometry


def register_batch_torch(
    pairs: Sequence[PairVolumes], settings: RegistrationSettings, device: torch.device | str = "cpu",
    level_images: LevelImages | None = None,
) -> list[PairResult]:
    """Affine-register every pair (moving onto fixed); failures are returned as failed PairResults.

    ``level_images``: pyramid images kept from earlier batches of the same volumes (a new one when None).
    """
    device = torch.device(device)
    level_images = LevelImages() if level_images is None else level_images
    start = time.perf_counter()
    count = len(pairs)
    centre_f = torch.tensor(np.stack([_centre_xyz(p.fixed_geometry) for p in pairs]), device=device, dtype=torch.float32)
    centre_m = torch.tensor(np.stack([_centre_xyz(p.moving_geometry) for p in pairs]), device=device, dtype=torch.float32)
    radius_mm = torch.tensor([_radius_mm(p.fixed_geometry) for p in pairs], device=device, dtype=torch.float32)[:, None]
    linear = torch.zeros(count, 3, 3, device=device, requires_grad=True)
    shift_in_radii = torch.zeros(count, 3, device=device, requires_grad=True)
    initial_loss = final_loss = None
    iterations = 0
    levels = list(zip(settings.pyramid_levels, settings.torch_iterations_per_level))
    for level_index, (level, level_iterations) in enumerate(levels):
        batch = _level_batch(pairs, level, settings, device, level_images)
        if level_index == len(levels) - 1:
            # the start is judged on the level the result is judged on: a coarse level's smoother images give a
            # better NCC for the same alignment, and comparing across levels failed near-perfect starts (ED/ES)
            with torch.no_grad():
                initial_loss = _loss_per_pair(batch, torch.zeros_like(linear), torch.zeros_like(shift_in_radii),
                                              centre_f, centre_m, radius_mm)
        optimizer = _Adam([linear, shift_in_radii], settings.torch_learning_rate)
        for _ in range(level_iterations):
            loss = _loss_per_pair(batch, linear, shift_in_radii, centre_f, centre_m, radius_mm)
            gradients = torch.autograd.grad(loss.sum(), [linear, shift_in_radii])
            optimizer.step(gradients)
            iterations += 1
        with torch.no_grad():
            final_loss = _loss_per_pair(batch, linear, shift_in_radii, centre_f, centre_m, radius_mm)
    with torch.no_grad():
        # a start the optimiser could not improve (two frames of one patient: the best affine is near the identity
        # and Adam's steps only jitter around it) is the best affine found, not a failure: keep it
        start_kept = ~(final_loss < initial_loss)
        linear[start_kept] = 0.0
        shift_in_radii[start_kept] = 0.0
        final_loss = torch.where(start_kept, initial_loss, final_loss)
    seconds_per_pair = (time.perf_counter() - start) / max(1, count)
    matrices = (torch.eye(3, device=device) + linear).detach().cpu().double().numpy()
    translations = (centre_m - centre_f + shift_in_radii * radius_mm).detach().cpu().double().numpy()
    results = []
    for i, pair in enumerate(pairs):
        results.append(
            _result(pair, matrices[i], translations[i], centre_f[i].cpu().double().numpy(),
                    float(initial_loss[i]), float(final_loss[i]), iterations, seconds_per_pair, settings,
                    bool(start_kept[i]))
        )
    return results


def _result(
    pair: PairVolumes, matrix: np.ndarray, translation: np.ndarray, centre: np.ndarray,
    initial: float, final: float, iterations: int, seconds: float, settings: RegistrationSettings,
    start_kept: bool = False,
) -> PairResult:
    import SimpleITK as sitk

    result = PairResult(pair.moving_name, pair.fixed_name, "affine", "torch", STATUS_FAILED, metric_name=METRIC_NAME,
                        metric_initial=initial, metric_final=final, iterations=iterations, seconds=seconds)
    affine = sitk.AffineTransform(3)
    affine.SetCenter([float(v) for v in centre])
    try:
        affine.SetMatrix([float(v) for v in matrix.ravel()])
        affine.SetTranslation([float(v) for v in translation])
        problem = implausibility(affine, pair.fixed_geometry, settings)
    except Exception as error:  # e.g. a singular matrix ITK refuses
        problem = f"{type(error).__name__}: {error}"
    if problem is None and not np.isfinite(final):
        problem = "final metric is not finite"
    if problem is None and not start_kept and not final < initial - settings.min_metric_improvement:
        problem = f"did not converge: metric {final:.4g} not better than start {initial:.4g}"
    result.quality = {"start_kept": start_kept}
    if settings.torch_affine_local_normalisation_sigma_mm > 0:
        result.quality["local_normalisation_sigma_mm"] = float(settings.torch_affine_local_normalisation_sigma_mm)
        result.quality["local_variance_floor"] = float(settings.torch_affine_local_variance_floor)
    if problem is None:
        result.status, result.transform_text = STATUS_OK, transform_to_text(affine)
    else:
        result.reason = problem
    return result


def _centre_xyz(geometry: Geometry) -> np.ndarray:
    return geometry.index_zyx_to_physical_xyz((np.asarray(geometry.shape_zyx) - 1) / 2.0)


def _radius_mm(geometry: Geometry) -> float:
    return 0.5 * float(np.linalg.norm(np.asarray(geometry.shape_zyx) * np.asarray(geometry.spacing_zyx)))


class _Adam:
    """Plain Adam on a list of tensors (torch.optim's first use costs seconds of imports on CPU)."""

    def __init__(self, parameters: list[torch.Tensor], learning_rate: float, betas: tuple[float, float] = (0.9, 0.999)):
        self.parameters, self.learning_rate, self.betas, self.step_count = parameters, learning_rate, betas, 0
        self.first = [torch.zeros_like(p) for p in parameters]
        self.second = [torch.zeros_like(p) for p in parameters]

    @torch.no_grad()
    def step(self, gradients: Sequence[torch.Tensor]) -> None:
        self.step_count += 1
        beta1, beta2 = self.betas
        for parameter, gradient, first, second in zip(self.parameters, gradients, self.first, self.second):
            first.mul_(beta1).add_(gradient, alpha=1 - beta1)
            second.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
            corrected_first = first / (1 - beta1**self.step_count)
            corrected_second = second / (1 - beta2**self.step_count)
            parameter.sub_(self.learning_rate * corrected_first / (corrected_second.sqrt() + 1e-8))


@dataclass
class _LevelBatch:
    moving: torch.Tensor  # (B, 1, Z, Y, X) zero padded
    physical_to_normalised: torch.Tensor  # (B, 3, 4): moving physical xyz -> grid_sample coordinates
    upper_normalised: torch.Tensor  # (B, 3): largest grid_sample coordinate inside the true moving volume
    fixed_points_xyz: torch.Tensor  # (B, P, 4) physical, centred on the fixed centre, homogeneous
    fixed_values: torch.Tensor  # (B, P)
    weights: torch.Tensor  # (B, P): 1 for a real sample, 0 for padding


def _pair_generator(pair: PairVolumes, level: int, settings: RegistrationSettings) -> np.random.Generator:
    """Sampling of one pair at one level, independent of which other pairs share its batch or process."""
    names = [zlib.crc32(pair.moving_name.encode()), zlib.crc32(pair.fixed_name.encode())]
    return np.random.default_rng([settings.sampling_seed, level, *names])


class LevelImages:
    """Each volume's image at each pyramid level, computed once for the batches that share the volume.

    A volume is known by its array's identity: the entry keeps the array alive, so no other array can take its
    id while the entry exists. :meth:`keep_only` drops the volumes the caller no longer holds. Worth keeping
    across batches when the images are locally normalised: the Gaussians of a wide window at the finest level
    cost more per volume than the optimisation of one pair.
    """

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def image(self, array_zyx: np.ndarray, factors_zyx: tuple[int, int, int], level_geometry: Geometry,
              settings: RegistrationSettings) -> np.ndarray:
        """``array_zyx`` block averaged by ``factors_zyx`` and, if the settings ask, locally normalised."""
        sigma_mm = settings.torch_affine_local_normalisation_sigma_mm
        floor = settings.torch_affine_local_variance_floor
        key = (id(array_zyx), tuple(factors_zyx), tuple(level_geometry.spacing_zyx), sigma_mm, floor)
        if key not in self._entries:
            shrunk = block_average(array_zyx, factors_zyx)
            if sigma_mm > 0:
                shrunk = local_normalisation(shrunk, level_geometry.spacing_zyx, sigma_mm, floor)
            self._entries[key] = (array_zyx, shrunk)
        return self._entries[key][1]

    def keep_only(self, arrays_zyx: Iterable[np.ndarray]) -> None:
        kept = {id(a) for a in arrays_zyx}
        self._entries = {k: v for k, v in self._entries.items() if k[0] in kept}


def _level_batch(
    pairs: Sequence[PairVolumes], level: int, settings: RegistrationSettings, device: torch.device,
    level_images: LevelImages,
) -> _LevelBatch:
    moving_arrays, to_normalised, upper, points, values = [], [], [], [], []
    shrunk_moving = []
    for pair in pairs:
        factors_m = shrink_factors_zyx(pair.moving_geometry, level, settings.min_voxels_per_axis)
        geometry = shrunk_geometry(pair.moving_geometry, factors_m)
        shrunk_moving.append((level_images.image(pair.moving_zyx, factors_m, geometry, settings), geometry))
    padded_shape = np.max([a.shape for a, _ in shrunk_moving], axis=0)
    for pair, (moving, moving_geometry) in zip(pairs, shrunk_moving):
        padded = np.zeros(padded_shape, dtype=np.float32)
        padded[: moving.shape[0], : moving.shape[1], : moving.shape[2]] = moving
        moving_arrays.append(padded)
        index_from_physical = np.linalg.inv(moving_geometry.index_zyx_to_physical_matrix())
        # index (z, y, x) -> grid_sample order (x, y, z) in [-1, 1] of the padded array
        to_normalised.append((normalise_matrix(padded_shape) @ index_from_physical)[:3])
        upper.append([2.0 * (moving.shape[a] - 1) / max(1, padded_shape[a] - 1) - 1.0 for a in (2, 1, 0)])
        factors_f = shrink_factors_zyx(pair.fixed_geometry, level, settings.min_voxels_per_axis)
        fixed_geometry = shrunk_geometry(pair.fixed_geometry, factors_f)
        fixed = level_images.image(pair.fixed_zyx, factors_f, fixed_geometry, settings).reshape(-1)
        sampler = _pair_generator(pair, level, settings)
        chosen = sampler.choice(fixed.size, size=min(fixed.size, settings.torch_points_per_pair), replace=False)
        index_zyx = np.stack(np.unravel_index(chosen, fixed_geometry.shape_zyx), axis=-1)
        points.append(fixed_geometry.index_zyx_to_physical_xyz(index_zyx) - _centre_xyz(pair.fixed_geometry))
        values.append(fixed[chosen])
    num_points = max(len(v) for v in values)
    points_padded = np.zeros((len(pairs), num_points, 4))
    points_padded[..., 3] = 1.0
    values_padded = np.zeros((len(pairs), num_points), dtype=np.float32)
    weights_padded = np.zeros((len(pairs), num_points), dtype=np.float32)
    for i, (p, v) in enumerate(zip(points, values)):
        points_padded[i, : len(v), :3], values_padded[i, : len(v)], weights_padded[i, : len(v)] = p, v, 1.0
    as_tensor = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    return _LevelBatch(
        as_tensor(np.stack(moving_arrays))[:, None], as_tensor(to_normalised), as_tensor(upper),
        as_tensor(points_padded), as_tensor(values_padded), as_tensor(weights_padded),
    )


def _loss_per_pair(
    batch: _LevelBatch, linear: torch.Tensor, shift_in_radii: torch.Tensor, centre_f: torch.Tensor,
    centre_m: torch.Tensor, radius_mm: torch.Tensor,
) -> torch.Tensor:
    """Negative NCC per pair between fixed samples and the moving volume at their mapped points."""
    # fixed point (centred) -> moving physical -> moving grid_sample coordinates, as one 3x4 matrix per pair
    fixed_to_moving = torch.cat([torch.eye(3, device=linear.device) + linear,
                                 (centre_m + shift_in_radii * radius_mm)[:, :, None]], dim=2)
    to_normalised = batch.physical_to_normalised
    combined = torch.cat([to_normalised[:, :, :3] @ fixed_to_moving[:, :, :3],
                          (to_normalised[:, :, :3] @ fixed_to_moving[:, :, 3:] + to_normalised[:, :, 3:])], dim=2)
    grid = torch.bmm(batch.fixed_points_xyz, combined.transpose(1, 2))
    sampled = F.grid_sample(batch.moving, grid[:, None, None], mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled.reshape(grid.shape[0], -1)
    with torch.no_grad():
        inside = ((grid >= -1.0) & (grid <= batch.upper_normalised[:, None])).all(dim=-1)
        weights = batch.weights * inside
        total = weights.sum(dim=1).clamp_min(1.0)
    mean_f = (weights * batch.fixed_values).sum(1) / total
    mean_m = (weights * sampled).sum(1) / total
    centred_f = (batch.fixed_values - mean_f[:, None]) * weights
    centred_m = (sampled - mean_m[:, None]) * weights
    covariance = (centred_f * centred_m).sum(1)
    variance = (centred_f.square().sum(1) * centred_m.square().sum(1)).clamp_min(1e-12)
    return -covariance / variance.sqrt()
