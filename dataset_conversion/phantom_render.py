"""Turning a phantom subject's parameters into a tissue map, a label map and an MR-like image.

Shapes are implicit: for every sampled world point we decide which structure contains it, painting
from the outside in (torso, lungs, liver, spine, aorta, then pericardial fat, RV, LV myocardium,
LV cavity). Labels come from the slice centre; intensities average several points through the slice
thickness, which gives the partial-volume blur of thick slices.
"""
from __future__ import annotations

import numpy as np

from dataset_conversion.mri_noise import rician_int16
from dataset_conversion.phantom_anatomy import ContourPerturbation, Ellipsoid, HeartShape, SubjectParameters, Tissue
from dataset_conversion.phantom_config import PhantomConfig

LABEL_RV, LABEL_MYO, LABEL_LV = 1, 2, 3
MIN_WALL_MM = 3.0
ATRIOVENTRICULAR_GAP_MM = 2.0
CHEST_WALL_MM = 12.0  # muscle kept between the subcutaneous fat and the lungs
BIAS_LENGTH_SCALE_MM = 150.0
TAPER_TABLE_SIZE = 4097


def render_subject(subject: SubjectParameters, config: PhantomConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Image (int16) and label (uint8) arrays, indexed (z, y, x); ``rng`` draws the noise."""
    from scipy.ndimage import gaussian_filter

    acquisition = subject.acquisition
    samples = config.slice_profile_samples
    offsets_mm = (np.arange(samples) - (samples - 1) / 2) / samples * acquisition.slice_thickness_mm
    relative_intensity = np.zeros(acquisition.shape_zyx, dtype=np.float32)
    centre_points = _world_points(subject, 0.0)
    # the organs around the heart are sampled at the slice centre only (speed); the heart, whose edges
    # the labels follow, at every point through the slice thickness
    body_tissue = np.full(acquisition.shape_zyx, Tissue.AIR, dtype=np.uint8)
    _paint_body(body_tissue.reshape(-1), *(c.reshape(-1) for c in centre_points), subject)
    label = np.zeros(acquisition.shape_zyx, dtype=np.uint8)
    for offset_mm in offsets_mm:
        points = centre_points if offset_mm == 0.0 else _world_points(subject, offset_mm)
        tissue = body_tissue.copy()
        sample_label = label if offset_mm == 0.0 else np.zeros_like(label)
        _paint_heart(tissue.reshape(-1), sample_label.reshape(-1), *(c.reshape(-1) for c in points), subject)
        if subject.appearance.off_resonance is None:
            relative_intensity += subject.appearance.tissue_intensity[tissue]
        else:
            relative_intensity += (subject.appearance.tissue_intensity[tissue]
                                   * subject.appearance.off_resonance.factor(tissue, *points))
    relative_intensity /= samples
    if config.texture_amplitude > 0:
        relative_intensity *= _texture(acquisition.shape_zyx, acquisition.spacing_xyz_mm[0], config, rng)
    if config.in_plane_blur_sigma_px > 0:
        sigma = config.in_plane_blur_sigma_px
        relative_intensity = gaussian_filter(relative_intensity, sigma=(0.0, sigma, sigma), mode="nearest")

    appearance = subject.appearance
    clean = relative_intensity * _bias_field(subject, *centre_points) * np.float32(appearance.intensity_scale)
    if appearance.receive_field is not None:
        clean = clean * np.asarray(appearance.receive_field(*centre_points), dtype=np.float32)
    image = rician_int16(clean, appearance.noise_fraction * appearance.intensity_scale, rng)
    return image, label


def _texture(shape_zyx: tuple[int, int, int], spacing_mm: float, config: PhantomConfig,
             rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative in-plane inhomogeneity of the tissues: 1 + amplitude * (noise on a coarse
    grid, linearly interpolated)."""
    nz, ny, nx = shape_zyx
    step_px = max(config.texture_length_mm / spacing_mm, 2.0)
    coarse_y, coarse_x = int(np.ceil(ny / step_px)) + 1, int(np.ceil(nx / step_px)) + 1
    coarse = rng.standard_normal((nz, coarse_y, coarse_x)).astype(np.float32)
    fine = np.einsum("yc,zcd,xd->zyx", _linear_interpolation_matrix(ny, coarse_y), coarse,
                     _linear_interpolation_matrix(nx, coarse_x), optimize=True)
    return np.float32(1.0) + np.float32(config.texture_amplitude) * fine.astype(np.float32)


def _linear_interpolation_matrix(fine_size: int, coarse_size: int) -> np.ndarray:
    """(fine_size, coarse_size) weights that interpolate a coarse grid spanning the same extent."""
    position = np.linspace(0.0, coarse_size - 1.0, fine_size)
    left = np.minimum(np.floor(position).astype(int), coarse_size - 2)
    weight = position - left
    matrix = np.zeros((fine_size, coarse_size), dtype=np.float32)
    matrix[np.arange(fine_size), left] = 1.0 - weight
    matrix[np.arange(fine_size), left + 1] = weight
    return matrix


def _world_points(subject: SubjectParameters, through_plane_offset_mm: float) -> tuple[np.ndarray, ...]:
    """World coordinates x, y, z (each (z, y, x) float32) of the voxel centres, shifted along the slice normal
    (and, with a ``SliceMotion``, to where each slice saw the patient)."""
    acquisition = subject.acquisition
    nz, ny, nx = acquisition.shape_zyx
    sx, sy, sz = acquisition.spacing_xyz_mm
    direction = acquisition.oblique_direction
    along_x = (np.arange(nx) * sx).astype(np.float32)[None, None, :]
    along_y = (np.arange(ny) * sy).astype(np.float32)[None, :, None]
    along_z = (np.arange(nz) * sz + through_plane_offset_mm).astype(np.float32)[:, None, None]
    if acquisition.slice_motion is not None:
        along_x, along_y = acquisition.slice_motion.grid_xy_mm(along_x, along_y)
    coordinates = []
    for axis in range(3):
        column_x, column_y, column_z = (np.float32(v) for v in direction[axis])
        coordinates.append(np.float32(acquisition.oblique_origin_xyz_mm[axis])
                           + column_x * along_x + column_y * along_y + column_z * along_z)
    return tuple(np.ascontiguousarray(c) for c in coordinates)


def render_tissue_and_label(x: np.ndarray, y: np.ndarray, z: np.ndarray, subject: SubjectParameters) -> tuple[np.ndarray, np.ndarray]:
    """Tissue (uint8, ``Tissue``) and label (uint8) at world points given by equally shaped x, y, z arrays (mm)."""
    shape = x.shape
    x, y, z = x.ravel(), y.ravel(), z.ravel()
    tissue = np.full(x.shape, Tissue.AIR, dtype=np.uint8)
    label = np.zeros(x.shape, dtype=np.uint8)
    _paint_body(tissue, x, y, z, subject)
    _paint_heart(tissue, label, x, y, z, subject)
    return tissue.reshape(shape), label.reshape(shape)


def _inside_perturbed(radius: np.ndarray, dx: np.ndarray, dy: np.ndarray, t: np.ndarray | float,
                      perturbation: ContourPerturbation, level: float = 1.0) -> np.ndarray:
    """radius < level + perturbation(angle of (dx, dy), t), evaluating the perturbation only in the
    thin shell of radii where it can change the answer (this keeps the phantom fast)."""
    bound = perturbation.max_abs
    inside = radius < level - bound
    shell = np.flatnonzero((radius >= level - bound) & (radius < level + bound))
    if shell.size:
        shell_t = t[shell] if isinstance(t, np.ndarray) else t
        inside[shell] = radius[shell] < level + perturbation(np.arctan2(dy[shell], dx[shell]), shell_t)
    return inside


def _inside_ellipsoid(e: Ellipsoid, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    dx, dy, dz = ((c - np.float32(m)) / np.float32(s) for c, m, s in zip((x, y, z), e.center_xyz_mm, e.semi_axes_xyz_mm))
    radius = np.sqrt(dx * dx + dy * dy + dz * dz)
    return _inside_perturbed(radius, dx, dy, 0.5 * (dz + 1.0), e.perturbation)


def _paint_body(tissue: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, subject: SubjectParameters) -> None:
    body = subject.body
    (cx, cy), (ax, ay) = body.torso_center_xy_mm, body.torso_semi_axes_xy_mm
    dx, dy = (x - np.float32(cx)) / np.float32(ax), (y - np.float32(cy)) / np.float32(ay)
    radius = np.hypot(dx, dy)
    mean_axis = 0.5 * (ax + ay)
    fat_level = 1.0 - body.subcutaneous_fat_mm / mean_axis
    deep_level = fat_level - CHEST_WALL_MM / mean_axis
    # torso surface, inner surface of the subcutaneous fat and of the chest wall: one perturbation, evaluated
    # only in the band of radii where it matters
    bound = body.torso_perturbation.max_abs
    band = np.flatnonzero((radius >= deep_level - bound) & (radius < 1.0 + bound))
    shifted = np.array(radius)
    shifted[band] -= body.torso_perturbation(np.arctan2(dy[band], dx[band]), 0.5)
    inside, within_fat, deep = shifted < 1.0, shifted < fat_level, shifted < deep_level
    tissue[inside] = Tissue.FAT
    tissue[within_fat] = Tissue.MUSCLE
    for lung in body.lungs:
        tissue[deep & _inside_ellipsoid(lung, x, y, z)] = Tissue.LUNG
    tissue[within_fat & _inside_ellipsoid(body.liver, x, y, z)] = Tissue.LIVER
    for (px, py), r, kind in ((body.aorta_center_xy_mm, body.aorta_radius_mm, Tissue.OTHER_BLOOD),
                              (body.spine_center_xy_mm, body.spine_radius_mm, Tissue.BONE),
                              (body.canal_center_xy_mm, body.canal_radius_mm, Tissue.CSF)):
        ex, ey = x - np.float32(px), y - np.float32(py)
        tissue[inside & (ex * ex + ey * ey < np.float32(r * r))] = kind


def _taper(t: np.ndarray, exponent: float, bulge: float) -> np.ndarray:
    """Radius profile along the long axis: 1 at the base (t=0), 0 at the apex (t=1) and beyond, a
    super-ellipse widened by ``bulge`` at mid-ventricle (tabulated and interpolated, for speed)."""
    grid = np.linspace(0.0, 1.0, TAPER_TABLE_SIZE)
    profile = np.power(1.0 - np.power(grid, exponent), 1.0 / exponent) * (1.0 + bulge * np.sin(np.pi * grid))
    profile[-1] = 0.0
    return np.interp(t, grid, profile, left=0.0, right=0.0).astype(np.float32)


def _paint_heart(tissue: np.ndarray, label: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray,
                 subject: SubjectParameters) -> None:
    heart = subject.heart
    rotation = subject.heart_rotation.astype(np.float32)
    # heart-frame coordinates q = R^T p (the heart origin is the world origin)
    q = [rotation[0, i] * x + rotation[1, i] * y + rotation[2, i] * z for i in range(3)]
    atria_reach, atria_top, atria_bottom = 0.0, 0.0, 0.0
    for atrium in (heart.left_atrium, heart.right_atrium):
        grow = 1.0 + atrium.perturbation.max_abs
        cx, cy, cz = atrium.center_xyz_mm
        atria_reach = max(atria_reach, float(np.hypot(cx, cy)) + grow * max(atrium.semi_axes_xyz_mm[:2]))
        atria_top = min(atria_top, cz - grow * atrium.semi_axes_xyz_mm[2])
        atria_bottom = max(atria_bottom, cz + grow * atrium.semi_axes_xyz_mm[2])
    reach = max(atria_reach, heart.axis_bend_mm + _ventricle_reach_mm(heart))
    top = min(atria_top, -heart.base_tilt_mm)
    bottom = max(atria_bottom, heart.epi_length_mm + _max_fat_mm(heart) + heart.base_tilt_mm)
    near = (q[0] * q[0] + q[1] * q[1] < np.float32(reach * reach)) & (q[2] > top) & (q[2] < bottom)
    selected = np.flatnonzero(near)
    if selected.size == 0:
        return
    sub_tissue, sub_label = tissue[selected], label[selected]
    _paint_heart_near(sub_tissue, sub_label, q[0][selected], q[1][selected], q[2][selected], heart)
    tissue[selected], label[selected] = sub_tissue, sub_label


def _max_fat_mm(heart: HeartShape) -> float:
    return heart.fat_mm * (1.0 + 2.0 * heart.fat_perturbation.max_abs)


def _lv_reach_mm(heart: HeartShape) -> float:
    """Largest distance from the (bent) LV axis at which the LV wall can lie."""
    widest_epi = (heart.epi_radius_mm + heart.septal_extra_wall_mm) * (1.0 + max(heart.mid_bulge, 0.0))
    return widest_epi * (1.0 + heart.epi_perturbation.max_abs) + MIN_WALL_MM + 2.0


def _ventricle_reach_mm(heart: HeartShape) -> float:
    """Largest distance from the (bent) LV axis at which a ventricle, its wall or its fat can lie."""
    widest_epi = (heart.epi_radius_mm + heart.septal_extra_wall_mm) * (1.0 + max(heart.mid_bulge, 0.0))
    lv = widest_epi * (1.0 + heart.epi_perturbation.max_abs) + MIN_WALL_MM + _max_fat_mm(heart)
    rv = ((widest_epi * max(1.0, heart.rv_wrap) + heart.rv_width_mm) * (1.0 + heart.rv_perturbation.max_abs)
          + abs(heart.rv_offset_mm) + heart.rv_wall_mm + _max_fat_mm(heart))
    return max(lv, rv) + 2.0


def _paint_heart_near(tissue: np.ndarray, label: np.ndarray, q0: np.ndarray, q1: np.ndarray, q2: np.ndarray,
                      heart: HeartShape) -> None:
    bend = heart.axis_bend_mm * np.clip(q2 / np.float32(heart.epi_length_mm), 0.0, 1.0) ** 2
    lx = q0 - bend * np.float32(np.cos(heart.axis_bend_angle_rad))
    ly = q1 - bend * np.float32(np.sin(heart.axis_bend_angle_rad))
    rho, theta = np.hypot(lx, ly), np.arctan2(ly, lx)
    base_plane = heart.base_tilt_mm * np.cos(theta - np.float32(heart.base_tilt_angle_rad))
    height = q2 - base_plane  # distance below the base plane, towards the apex
    # atria lie above the base plane; the ventricles below it are painted afterwards and win
    above = np.flatnonzero(height < -ATRIOVENTRICULAR_GAP_MM)
    for atrium in (heart.left_atrium, heart.right_atrium):
        in_atrium = _inside_ellipsoid(atrium, q0[above], q1[above], q2[above])
        tissue[above[in_atrium]] = Tissue.OTHER_BLOOD
    ventricular = np.flatnonzero((height >= 0) & (height < heart.epi_length_mm + _max_fat_mm(heart))
                                 & (rho < _ventricle_reach_mm(heart)))
    if ventricular.size == 0:
        return
    sub_tissue, sub_label = tissue[ventricular], label[ventricular]
    _paint_ventricles(sub_tissue, sub_label, lx[ventricular], ly[ventricular], rho[ventricular],
                      theta[ventricular], height[ventricular], heart)
    tissue[ventricular], label[ventricular] = sub_tissue, sub_label


def _paint_ventricles(tissue: np.ndarray, label: np.ndarray, lx: np.ndarray, ly: np.ndarray, rho: np.ndarray,
                      theta: np.ndarray, height: np.ndarray, heart: HeartShape) -> None:
    """Pericardial fat, RV free wall and cavity, LV myocardium and cavity, papillary muscles.

    (lx, ly): position across the bent LV axis (mm), +lx towards the RV; height: below the base plane (mm).
    """
    t_endo = height / np.float32(heart.endo_length_mm)
    endo_profile = _taper(t_endo, heart.endo_exponent, heart.mid_bulge)
    t_epi = height / np.float32(heart.epi_length_mm)
    epi_profile = _taper(t_epi, heart.epi_exponent, heart.mid_bulge)
    r_endo, r_epi = _lv_radii_mm(heart, theta, t_endo, endo_profile, t_epi, epi_profile)

    fat_mm = heart.fat_mm * np.maximum(0.0, 1.0 + 2.0 * heart.fat_perturbation(theta, t_epi))
    t_fat = height / (heart.epi_length_mm + fat_mm)
    in_fat = rho < (heart.epi_radius_mm + fat_mm) * _taper(t_fat, heart.epi_exponent, heart.mid_bulge)

    # RV: an ellipse beside the LV whose part outside the LV epicardium is the RV cavity (a crescent)
    local_epi = heart.epi_radius_mm * epi_profile
    t_rv = height / np.float32(heart.rv_length_mm)
    rv_profile = _taper(t_rv, heart.endo_exponent, 0.0)
    half_depth = (1.0 - heart.rv_center_fraction) * local_epi + heart.rv_width_mm * rv_profile
    narrow = np.sqrt(1.0 - heart.rv_center_fraction ** 2)
    half_width = local_epi * (narrow + (heart.rv_wrap - narrow) * rv_profile)
    half_depth, half_width = np.maximum(half_depth, 1e-3), np.maximum(half_width, 1e-3)
    ell_x = (lx - heart.rv_center_fraction * local_epi) / half_depth
    ell_y = (ly - np.float32(heart.rv_offset_mm)) / half_width
    ell_radius = np.hypot(ell_x, ell_y)
    rv_boundary = 1.0 + heart.rv_perturbation(np.arctan2(ell_y, ell_x), t_rv)
    mean_half_axis = 0.5 * (half_depth + half_width)
    rv_level = (t_rv >= 0) & (t_rv < 1)
    in_rv = rv_level & (ell_radius < rv_boundary)
    in_rv_wall = rv_level & (ell_radius < rv_boundary + heart.rv_wall_mm / mean_half_axis)
    in_fat |= rv_level & (ell_radius < rv_boundary + (heart.rv_wall_mm + fat_mm) / mean_half_axis)

    in_epi = rho < r_epi
    in_endo = rho < r_endo
    in_papillary = np.zeros_like(in_endo)
    top, bottom = heart.papillary_height_range
    papillary_level = (t_endo > top) & (t_endo < bottom)
    centre_radius = heart.papillary_radial_fraction * heart.endo_radius_mm * endo_profile
    for angle in heart.papillary_angles_rad:
        dx = lx - centre_radius * np.float32(np.cos(angle))
        dy = ly - centre_radius * np.float32(np.sin(angle))
        in_papillary |= papillary_level & (dx * dx + dy * dy < np.float32(heart.papillary_radius_mm ** 2))

    tissue[in_fat] = Tissue.FAT
    tissue[in_rv_wall] = Tissue.MYOCARDIUM
    rv_cavity = in_rv & ~in_epi
    tissue[rv_cavity], label[rv_cavity] = Tissue.RV_BLOOD, LABEL_RV
    tissue[in_epi], label[in_epi] = Tissue.MYOCARDIUM, LABEL_MYO
    tissue[in_endo], label[in_endo] = Tissue.LV_BLOOD, LABEL_LV
    # papillary muscles look like myocardium but belong to the LV cavity label (the ACDC convention)
    tissue[in_endo & in_papillary] = Tissue.MYOCARDIUM
    if heart.trabeculation_depth_mm > 0:
        # trabeculae: myocardium-dark strands along the endocardium that the ACDC labels count as cavity
        lv_strands = in_endo & (rho > r_endo - heart.trabeculation_depth_mm) & _strands(theta, t_endo, heart)
        tissue[lv_strands] = Tissue.MYOCARDIUM
        rv_depth = heart.trabeculation_depth_mm / mean_half_axis
        rv_strands = rv_cavity & (ell_radius > rv_boundary - rv_depth) & _strands(np.arctan2(ell_y, ell_x), t_rv, heart)
        tissue[rv_strands] = Tissue.MYOCARDIUM


def _strands(angle_rad: np.ndarray, t: np.ndarray, heart: HeartShape) -> np.ndarray:
    """About a third of the angles, in strands that twist along the long axis."""
    return np.cos(heart.trabeculation_strands * angle_rad + np.float32(2.5) * t) > np.float32(0.45)


def _lv_radii_mm(heart: HeartShape, theta: np.ndarray, t_endo: np.ndarray, endo_profile: np.ndarray,
                 t_epi: np.ndarray, epi_profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Endocardial and epicardial radius (mm) at angles ``theta`` (0 towards the RV) and normalised heights."""
    r_endo = heart.endo_radius_mm * endo_profile * (1.0 + heart.endo_perturbation(theta, t_endo))
    r_epi = heart.epi_radius_mm * epi_profile * (1.0 + heart.epi_perturbation(theta, t_epi))
    if heart.septal_extra_wall_mm > 0:
        r_epi = r_epi + (heart.septal_extra_wall_mm * epi_profile
                         * _sector_weight(theta, 0.0, heart.septal_half_width_rad)).astype(np.float32)
    if heart.infarct_wall_mm > 0:
        low, high = heart.infarct_height_range
        weight = _sector_weight(theta, heart.infarct_angle_rad, heart.infarct_half_width_rad)
        weight = (weight * ((t_endo > low) & (t_endo < high))).astype(np.float32)
        r_endo = r_endo * (1.0 + weight * np.float32(heart.infarct_endo_scale - 1.0))
        thin_epi = np.where(r_endo > 0, r_endo + np.float32(heart.infarct_wall_mm), r_epi)
        r_epi = r_epi + weight * (np.minimum(thin_epi, r_epi) - r_epi)
        r_epi = np.maximum(r_epi, r_endo)
    r_epi = np.where(r_endo > 0, np.maximum(r_epi, r_endo + MIN_WALL_MM), r_epi)
    return r_endo, r_epi


def _sector_weight(theta: np.ndarray, centre_rad: float, half_width_rad: float) -> np.ndarray:
    """1 at the sector centre, falling smoothly (cosine) to 0 at +-half_width."""
    offset = np.abs(np.mod(theta - np.float32(centre_rad) + np.float32(np.pi), np.float32(2 * np.pi)) - np.float32(np.pi))
    inside = offset < half_width_rad
    weight = np.zeros(theta.shape, dtype=np.float32)
    weight[inside] = 0.5 + 0.5 * np.cos(offset[inside] * np.float32(np.pi / half_width_rad))
    return weight


def ventricle_label_volumes_ml(heart: HeartShape, spacing_mm: float = 1.5, include_rv: bool = True) -> dict[str, float]:
    """Volumes (ml) of the RV, MYO and LV labels of a heart, painted on a grid in the heart frame.

    The axis bend and the base tilt are shears that keep every volume, so the grid ignores them. Without
    ``include_rv`` the grid covers only the LV and its wall (faster; the RV volume is then not measured).
    """
    reach = _ventricle_reach_mm(heart) if include_rv else _lv_reach_mm(heart)
    across = np.arange(-reach, reach + spacing_mm, spacing_mm, dtype=np.float32)
    ly, lx = (a.ravel() for a in np.meshgrid(across, across, indexing="ij"))
    within = lx * lx + ly * ly < np.float32(reach * reach)
    lx, ly = lx[within], ly[within]
    along = np.arange(spacing_mm / 2, heart.epi_length_mm + spacing_mm, spacing_mm, dtype=np.float32)
    height = np.repeat(along, lx.size)
    lx, ly = np.tile(lx, along.size), np.tile(ly, along.size)
    rho, theta = np.hypot(lx, ly), np.arctan2(ly, lx)
    tissue = np.zeros(lx.shape, dtype=np.uint8)
    label = np.zeros(lx.shape, dtype=np.uint8)
    _paint_ventricles(tissue, label, lx, ly, rho, theta, height, heart)
    counts = np.bincount(label, minlength=4) * (spacing_mm ** 3 / 1000.0)
    volumes = {"MYO": float(counts[LABEL_MYO]), "LV": float(counts[LABEL_LV])}
    if include_rv:
        volumes["RV"] = float(counts[LABEL_RV])
    return volumes


def _bias_field(subject: SubjectParameters, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field exp(f), f a quadratic polynomial of position scaled to the set amplitude."""
    appearance = subject.appearance
    if appearance.bias_log_amplitude == 0:
        return np.ones(x.shape, dtype=np.float32)
    centre = [float(c.mean()) for c in (x, y, z)]
    u = [(c - m) / np.float32(BIAS_LENGTH_SCALE_MM) for c, m in zip((x, y, z), centre)]
    terms = [u[0], u[1], u[2], u[0] * u[0], u[1] * u[1], u[2] * u[2], u[0] * u[1], u[0] * u[2], u[1] * u[2]]
    field = sum(np.float32(c) * t for c, t in zip(appearance.bias_coefficients, terms))
    field = field - field.mean()
    largest = float(np.abs(field).max())
    if largest == 0:
        return np.ones(x.shape, dtype=np.float32)
    return np.exp(field * np.float32(appearance.bias_log_amplitude / largest)).astype(np.float32)
