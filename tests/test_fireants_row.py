"""The FireANTs row's resampling to 32 slices (FireANTs itself is installed only beside the benchmark)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.fireants_row import MIN_SLICES, _sitk_image, _with_enough_slices, run_fireants  # noqa: E402
from cctrnet.dataset.geometry import Geometry  # noqa: E402


def test_thin_stacks_gain_slices_over_the_same_extent_and_a_label_comes_back_exactly():
    import SimpleITK as sitk

    geometry = Geometry(shape_zyx=(10, 12, 14), spacing_xyz=(1.5, 1.5, 10.0), origin_xyz=(3.0, -2.0, 7.0))
    label = np.zeros((10, 12, 14), np.int16)
    label[2:8, 3:9, 4:11] = 2
    image = _sitk_image(label, geometry)
    resampled = _with_enough_slices(image, nearest=True)
    assert resampled.GetSize() == (14, 12, MIN_SLICES)
    first = np.array(resampled.TransformIndexToPhysicalPoint((0, 0, 0)))
    last = np.array(resampled.TransformIndexToPhysicalPoint((0, 0, MIN_SLICES - 1)))
    np.testing.assert_allclose(first, image.TransformIndexToPhysicalPoint((0, 0, 0)))
    np.testing.assert_allclose(last, image.TransformIndexToPhysicalPoint((0, 0, 9)))
    back = sitk.Resample(resampled, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), label)  # the round trip the Dice is taken after
    thick = _sitk_image(np.zeros((40, 4, 4)), Geometry(shape_zyx=(40, 4, 4), spacing_xyz=(1.0, 1.0, 2.5),
                                                              origin_xyz=(0.0, 0.0, 0.0)))
    assert _with_enough_slices(thick) is thick


def test_without_fireants_the_row_is_left_out():
    try:
        import fireants  # noqa: F401
    except ImportError:
        assert run_fireants(None, []) is None
    else:
        pytest.skip("FireANTs is installed here; the row runs in the benchmark")
