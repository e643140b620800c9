"""The FireANTs row of the registration benchmark: its affine then greedy deformable stage, batched.

FireANTs (https://github.com/rohitrango/FireANTs) is installed in its own environment, never a dependency
of cctrnet (it pins an old SimpleITK and its licence forbids reusing its code):

    python3 -m venv --system-site-packages /work/faenv && /work/faenv/bin/pip install --no-deps fireants
    /work/faenv/bin/python benchmarks/registration_benchmark.py --fireants --skip ...

Settings are the ones its documentation shows for a first registration (affine and greedy at scales 4, 2, 1
with 200, 100, 50 iterations, local NCC with a 5-voxel window, gradient smoothing 1 voxel, warp smoothing
0.5 voxel); nothing was tuned. FireANTs enlarges every axis shorter than 32 voxels to 32 at every scale,
also at scale 1, and then fails on a cine MRI volume of 10 slices (the warped image has 32 slices, the
fixed one 10). So both images are resampled to 32 slices first (linear; the label nearest), registered
there, and the warped label is resampled back onto the fixed volume's own grid (nearest) before its Dice is
taken, which keeps the comparison on the same voxels as the other rows.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

#: FireANTs' smallest axis length (its MIN_IMG_SIZE); shorter axes are resampled up to it here
MIN_SLICES = 32
SCALES = (4, 2, 1)
ITERATIONS = (200, 100, 50)


def _sitk_image(array_zyx: np.ndarray, geometry: Any):
    """A float32 SimpleITK image on ``geometry`` (FireANTs reads float images)."""
    from cctrnet.registration.transforms import array_to_sitk

    return array_to_sitk(array_zyx.astype(np.float32), geometry)


def _with_enough_slices(image, nearest: bool = False):
    """``image`` resampled to MIN_SLICES slices over the same extent (first to last slice centre)."""
    import SimpleITK as sitk

    size, spacing = list(image.GetSize()), list(image.GetSpacing())
    if size[2] >= MIN_SLICES:
        return image
    slice_spacing_mm = spacing[2] * (size[2] - 1) / (MIN_SLICES - 1)
    return sitk.Resample(image, size[:2] + [MIN_SLICES], sitk.Transform(),
                         sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear, image.GetOrigin(),
                         spacing[:2] + [slice_spacing_mm], image.GetDirection(), 0.0, image.GetPixelID())


def run_fireants(fixed, movings, num_labels: int = 3) -> list[tuple[float, float]] | None:
    """(seconds per pair, label Dice) for every moving subject, or None when FireANTs is not installed.

    ``fixed`` and each moving subject are (image_zyx, label_zyx, geometry) as the benchmark makes them.
    """
    try:
        from fireants.io import BatchedImages, Image
        from fireants.registration.affine import AffineRegistration
        from fireants.registration.greedy import GreedyRegistration
    except ImportError:
        return None
    import SimpleITK as sitk
    import torch

    from cctrnet.registration.synthetic_pairs import dice

    device = "cuda" if torch.cuda.is_available() else "cpu"
    fixed_image = _sitk_image(fixed[0], fixed[2])
    fixed_resampled = _with_enough_slices(fixed_image)
    fixed_batch = BatchedImages([Image(fixed_resampled, device=device) for _ in movings])
    moving_batch = BatchedImages([Image(_with_enough_slices(_sitk_image(m[0], m[2])), device=device)
                                  for m in movings])
    start = time.perf_counter()
    affine = AffineRegistration(list(SCALES), list(ITERATIONS), fixed_batch, moving_batch, optimizer="Adam",
                                optimizer_lr=3e-3, cc_kernel_size=5, progress_bar=False)
    affine.optimize()
    deformable = GreedyRegistration(scales=list(SCALES), iterations=list(ITERATIONS), fixed_images=fixed_batch,
                                    moving_images=moving_batch, cc_kernel_size=5, deformation_type="compositive",
                                    smooth_grad_sigma=1.0, smooth_warp_sigma=0.5, optimizer="Adam",
                                    optimizer_lr=0.5, init_affine=affine.get_affine_matrix().detach(),
                                    progress_bar=False)
    deformable.optimize()
    if device == "cuda":
        torch.cuda.synchronize()
    per_pair = (time.perf_counter() - start) / len(movings)
    labels = BatchedImages([Image(_with_enough_slices(_sitk_image(m[1], m[2]), nearest=True), device=device,
                                  is_segmentation=True, max_seg_label=num_labels) for m in movings])
    with torch.no_grad():
        warped_one_hot = deformable.evaluate(fixed_batch, labels)  # (pairs, labels + 1, z, y, x)
    warped = warped_one_hot.argmax(1).float().cpu().numpy()
    rows = []
    for label_zyx in warped:
        on_resampled_grid = sitk.GetImageFromArray(label_zyx)
        on_resampled_grid.CopyInformation(fixed_resampled)
        on_fixed_grid = sitk.Resample(on_resampled_grid, fixed_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
        rows.append((per_pair, dice(sitk.GetArrayFromImage(on_fixed_grid).astype(np.int16), fixed[1])))
    return rows
