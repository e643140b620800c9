"""The torch affine engine's local intensity normalisation (torch_affine_local_normalisation_sigma_mm)."""
from __future__ import annotations

import tempfile

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from cctrnet.registration.pyramid import local_normalisation
from cctrnet.registration.settings import RegistrationSettings
from cctrnet.registration.synthetic_pairs import dice, make_subject
from cctrnet.registration.torch_engine import LevelImages, PairVolumes, register_batch_torch
from cctrnet.registration.transforms import affine_matrix_4x4, resample, transform_from_file
from tests.test_registration import KNOWN, one_torch_thread  # noqa: F401  (an autouse fixture: one thread)


def _transform(text: str):
    with tempfile.NamedTemporaryFile("w", suffix=".tfm", delete=False) as f:
        f.write(text)
    return transform_from_file(f.name)


# --- the normalisation -----------------------------------------------------------------------------
def test_local_normalisation_of_a_shaded_checkerboard_is_the_checkerboard():
    """I = c(x) (5 + s), s = +-1 alternating along x, c a slow ramp: inside, G*I ~ 5c and G*(I - G*I)^2 ~ c^2,
    so the output is s / sqrt(1 + eps / c^2), about +-1 whatever c is; its local mean is 0 and local std 1."""
    shape_zyx = (6, 6, 200)
    sign = np.where(np.arange(shape_zyx[2]) % 2 == 0, 1.0, -1.0)
    ramp = np.linspace(1.0, 3.0, shape_zyx[2])
    image = np.broadcast_to(ramp * (5.0 + sign), shape_zyx).astype(np.float32)
    normalised = local_normalisation(image, (10.0, 2.0, 2.0), sigma_mm=8.0, floor_fraction=0.0)
    interior = normalised[:, :, 20:-20]
    assert normalised.dtype == np.float32
    np.testing.assert_allclose(interior, np.broadcast_to(sign, shape_zyx)[:, :, 20:-20], atol=0.02)
    local_mean = gaussian_filter(normalised, (0.8, 4.0, 4.0))
    local_std = np.sqrt(gaussian_filter(normalised ** 2, (0.8, 4.0, 4.0)) - local_mean ** 2)
    local_mean, local_std = local_mean[:, :, 20:-20], local_std[:, :, 20:-20]
    assert np.abs(local_mean).max() < 0.02 and np.abs(local_std - 1.0).max() < 0.02
    # the floor: eps = 1% of the global variance shrinks a flat-contrast region's output only slightly
    floored = local_normalisation(image, (10.0, 2.0, 2.0), sigma_mm=8.0, floor_fraction=0.01)
    assert 0.9 < np.abs(floored[:, :, 20:-20]).min() <= np.abs(interior).max()


def test_local_normalisation_sigma_is_in_mm_on_each_axis():
    """A step edge across 10 mm slices (z) and across 2 mm in-plane voxels (x), sampled at the same physical
    distances from the edge, gives the same profile for one sigma in mm (3 slices, 15 in-plane voxels)."""
    spacing_zyx = (10.0, 2.0, 2.0)
    across_z = np.zeros((24, 4, 4), np.float32)
    across_z[12:] = 1.0
    across_x = np.zeros((4, 4, 120), np.float32)
    across_x[..., 60:] = 1.0
    profile_z = local_normalisation(across_z, spacing_zyx, sigma_mm=30.0, floor_fraction=0.01)[:, 1, 1]
    # x voxel 5k + 2 lies at (5k + 2 - 59.5) * 2 mm = (k - 11.5) * 10 mm from the edge, as slice k does
    profile_x = local_normalisation(across_x, spacing_zyx, sigma_mm=30.0, floor_fraction=0.01)[1, 1, 2::5]
    assert len(profile_z) == len(profile_x) == 24
    np.testing.assert_allclose(profile_z, profile_x, atol=0.03)
    # the edge is felt for a few sigma and fades with distance, in both directions
    assert profile_z[12] > 0.5 > profile_z[23] > 0 and profile_z[11] < -0.5 < profile_z[0] < 0


# --- the engine ----------------------------------------------------------------------------------
def test_setting_off_gives_the_affine_of_the_global_ncc():
    """With the setting at 0 the engine is unchanged: the numbers below were produced by the engine before
    the setting existed (commit 765ba2b), and the record has no new quality entry. (The ACDC-like populations'
    380 stored affines were also reproduced byte for byte, documentation/benchmarks.md.)"""
    fixed, _, fixed_geometry = make_subject((8, 48, 48), (1.5, 1.5, 6.0), 0)
    moving, _, moving_geometry = make_subject((8, 48, 48), (1.5, 1.5, 6.0), 1, KNOWN)
    settings = RegistrationSettings(torch_points_per_pair=512, pyramid_levels=(2, 1), torch_iterations_per_level=(20, 10),
                                    torch_affine_local_normalisation_sigma_mm=0.0)
    result, = register_batch_torch([PairVolumes("m", "f", fixed, fixed_geometry, moving, moving_geometry)], settings)
    assert result.ok, result.reason
    assert result.quality == {"start_kept": False}
    assert result.metric_initial == pytest.approx(-0.7363303303718567, abs=1e-5)
    assert result.metric_final == pytest.approx(-0.9617477059364319, abs=1e-5)
    found = affine_matrix_4x4(_transform(result.transform_text))
    before = np.array([[0.9543347954750061, 0.06918767839670181, 0.07487402856349945],
                       [-0.0673958882689476, 1.0025713443756104, -0.04947502538561821],
                       [-0.0724976509809494, 0.011745646595954895, 1.032308578491211]])
    np.testing.assert_allclose(found[:3, :3], before, atol=1e-4)
    np.testing.assert_allclose(found[:3, 3], [-2.2928569316864014, 3.211327314376831, 0.9337754845619202], atol=1e-3)


def test_known_affine_is_recovered_under_coil_shading():
    """The moving volume is shaded like a surface coil at its y = 0 edge, (a^2 / (a^2 + d^2))^1.5 with a = 20 mm:
    a factor of 70 between the near and the far edge. Measured when this test was written: the global NCC
    ends at label Dice 0.75 here (matrix 0.2 off); local normalisation at 20 mm, a quarter of this phantom's
    80 mm field of view, recovers the affine."""
    shape_zyx, spacing_xyz = (8, 80, 80), (1.0, 1.0, 6.0)
    fixed, fixed_label, fixed_geometry = make_subject(shape_zyx, spacing_xyz, 0)
    moving, moving_label, moving_geometry = make_subject(shape_zyx, spacing_xyz, 1, KNOWN)
    depth_mm = np.arange(shape_zyx[1], dtype=np.float32)[None, :, None] * spacing_xyz[1]
    shading = (20.0 ** 2 / (20.0 ** 2 + depth_mm ** 2)) ** 1.5
    shaded = (moving * shading).astype(np.float32)
    settings = RegistrationSettings(torch_affine_local_normalisation_sigma_mm=20.0, torch_affine_local_variance_floor=0.1)
    result, = register_batch_torch([PairVolumes("m", "f", fixed, fixed_geometry, shaded, moving_geometry)], settings)
    assert result.ok, result.reason
    assert result.quality["local_normalisation_sigma_mm"] == 20.0
    transform = _transform(result.transform_text)
    found, truth = affine_matrix_4x4(transform), np.linalg.inv(KNOWN)  # fixed points -> moving points
    assert np.abs(found[:3, :3] - truth[:3, :3]).max() < 0.08
    assert np.abs(found[:2, 3] - truth[:2, 3]).max() < 1.0  # mm
    warped = resample(moving_label, moving_geometry, fixed_geometry, transform, nearest=True)
    assert dice(warped, fixed_label) > 0.92


def test_level_images_kept_across_batches_give_the_same_affines():
    """The runner keeps each volume's normalised pyramid from one batch to the next; a batch that finds its
    volumes there must compute what a fresh batch computes, and dropped volumes must leave the cache."""
    fixed, _, fixed_geometry = make_subject((8, 48, 48), (1.5, 1.5, 6.0), 0)
    moving, _, moving_geometry = make_subject((8, 48, 48), (1.5, 1.5, 6.0), 1, KNOWN)
    settings = RegistrationSettings(torch_points_per_pair=512, pyramid_levels=(2, 1), torch_iterations_per_level=(20, 10))
    pairs = [PairVolumes("m", "f", fixed, fixed_geometry, moving, moving_geometry)]
    kept = LevelImages()
    first, = register_batch_torch(pairs, settings, "cpu", kept)
    second, = register_batch_torch(pairs, settings, "cpu", kept)
    fresh, = register_batch_torch(pairs, settings, "cpu")
    assert first.ok and first.transform_text == second.transform_text == fresh.transform_text
    assert len(kept._entries) == 4  # two volumes, two levels
    kept.keep_only([fixed])
    assert {entry[0] is fixed for entry in kept._entries.values()} == {True}
