"""Settings of the registration stage, with the values cctrnet uses by default.

The paper gives no registration parameters (METHOD.md §3): every value here is our decision, documented
in documentation/registration.md and changeable by constructing another :class:`RegistrationSettings`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Value of a registered label voxel that the warp leaves undefined (outside the moving volume).
IGNORE_LABEL = -1
#: how registered labels of several atlases become one (cctrnet.registration.label_fusion)
FUSION_RULES = ("brs", "majority", "unanimous")

METHODS = ("affine", "affine_deformable", "affine_bspline", "none")
#: what a user may ask for: a method, or "auto" (cctrnet.registration.method_choice)
REGISTRATION_CHOICES = ("auto", *METHODS)
#: methods whose stored transforms can be inverted exactly (affine) or by construction (exp(-v)), so one
#: registration per unordered pair serves REPS point maps in both directions
INVERTIBLE_METHODS = ("affine", "affine_deformable")
#: methods computed on top of a stored affine registration of the same pair
AFFINE_BASED_METHODS = ("affine_deformable",)
ENGINES = ("simpleitk", "torch")
DEFAULT_ENGINE = "torch"  # 15x faster than SimpleITK at equal label Dice (documentation/benchmarks.md)


@dataclass(frozen=True)
class RegistrationSettings:
    """Every number the registration engines, the failure checks and BRS use."""

    # --- image pyramid (shared by both engines) ---
    #: target in-plane shrink per level, coarse to fine; an axis is shrunk only while its spacing
    #: stays below level_factor * smallest spacing, so 10 thick slices are never shrunk to 2
    pyramid_levels: tuple[int, ...] = (4, 2, 1)
    #: no axis is shrunk below this many voxels
    min_voxels_per_axis: int = 8
    # --- SimpleITK affine ---
    histogram_bins: int = 32
    sampling_fraction: float = 0.25
    sampling_seed: int = 20240531
    iterations_per_level: tuple[int, ...] = (200, 150, 100)
    max_step_mm: float = 2.0
    convergence_window: int = 10
    convergence_minimum: float = 1e-6
    # --- B-spline stage on top of the affine ---
    bspline_mesh_spacing_mm: float = 40.0
    bspline_iterations: int = 50
    bspline_levels: tuple[int, ...] = (2, 1)
    # --- batched torch affine engine ---
    torch_batch_size: int = 16
    torch_points_per_pair: int = 4096
    torch_iterations_per_level: tuple[int, ...] = (80, 40, 20)
    torch_learning_rate: float = 0.01
    #: > 0: each pyramid level's images are normalised to local zero mean and unit variance in a Gaussian
    #: window of this sigma (mm, per axis) before the NCC, so smooth intensity shading (receive-coil bias
    #: fields) cannot pull the scale; 0: the global NCC of the level's images, as before 2026-12-01. 40 mm
    #: measured best of 10-40 mm (documentation/benchmarks.md, "Locally normalised affine metric")
    torch_affine_local_normalisation_sigma_mm: float = 40.0
    #: the local variance is floored at this fraction of the volume's variance, so flat regions (air) keep
    #: their noise small instead of being raised to unit variance (0.1 measured better than 0.01)
    torch_affine_local_variance_floor: float = 0.1
    # --- batched torch deformable stage (stationary velocity field) on top of the affine ---
    #: in-plane pyramid factors, coarse to fine; the field lives on the finest one's grid
    deformable_levels: tuple[int, ...] = (4, 2)
    deformable_iterations_per_level: tuple[int, ...] = (50, 20)
    #: local NCC box window in in-plane voxels of each level (the same physical width across thick slices)
    deformable_window_voxels: int = 5
    #: Gaussian smoothing of the metric gradient and of the velocity field after each step, in-plane voxels
    deformable_gradient_sigma_voxels: float = 1.0
    deformable_field_sigma_voxels: float = 1.0
    #: largest displacement of one step, in in-plane voxels of the level
    deformable_step_voxels: float = 0.25
    deformable_adam_betas: tuple[float, float] = (0.9, 0.99)
    #: slices at least this many times thicker than the in-plane spacing, and at least this thick, keep the
    #: field within the slice (cine MRI); thinner slices (CT) deform in 3D
    deformable_in_plane_only_ratio: float = 2.5
    deformable_in_plane_only_min_slice_mm: float = 4.0
    #: the stored field's in-plane stride on the fixed grid (slices are kept); float16, compressed
    deformable_field_stride_yx: int = 2
    #: a deformable pair is failed when more voxels fold (Jacobian determinant <= 0) ...
    deformable_max_folded_fraction: float = 0.001
    #: ... or when exp(-v) o exp(v) misses the identity by more than this many in-plane voxels of the fixed
    #: volume (95th percentile over the field's grid)
    deformable_max_inverse_error_voxels: float = 1.0
    #: --registration auto with one labeled case keeps the deformable stage unless more of its pairs failed
    auto_max_failed_fraction: float = 0.1
    # --- plausibility checks: a transform outside these bounds is recorded as failed ---
    min_determinant: float = 0.33
    max_determinant: float = 3.0
    #: a result whose metric is not better than the centred start by this much did not converge
    min_metric_improvement: float = 0.0
    #: largest fraction of folded (negative Jacobian) B-spline field voxels
    max_folding_fraction: float = 0.01
    # --- BRS (METHOD.md §5) ---
    brs_weight_rmse: float = 1.0
    brs_weight_mi: float = 1.0
    brs_histogram_bins: int = 32
    # --- REPS point maps ---
    #: "direct": a map between every two volumes; "reference": every map goes through one reference
    #: volume (about 2N registrations instead of N^2); "auto": direct up to reference_threshold volumes
    point_map_strategy: str = "direct"
    reference_threshold: int = 60
    #: B-spline point maps are sampled from a dense field at this in-plane stride (voxels)
    point_map_field_stride_yx: int = 4
    #: image channel registered (preprocessed data is (c, z, y, x))
    channel: int = 0
    #: SimpleITK threads per registration process (the machine is shared)
    threads_per_process: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RegistrationSettings":
        converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**converted)


def check_method(method: str, allow_auto: bool = False) -> str:
    allowed = REGISTRATION_CHOICES if allow_auto else METHODS
    if method not in allowed:
        raise ValueError(f"unknown registration method '{method}'; choose one of {', '.join(allowed)}")
    return method


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"unknown registration engine '{engine}'; choose one of {', '.join(ENGINES)}")
    return engine
