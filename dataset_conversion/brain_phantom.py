"""Brain phantom: a raw dataset of thick-slice brain MRI volumes made from a real template, from a seed.

Each subject is the template warped by a random smooth diffeomorphism and a small affine map, with a
random bias field, contrast and Rician noise, resliced to thick axial slices whose intensity is the mean
over the slab (partial volume). Sources: ``mni`` (MNI152 2009a T1 and its tissue probability maps, shipped
in nilearn's wheel; labels CSF, GM, WM) and ``aal`` (Colin27 T1 with the AAL atlas from Debian's
mricron-data; six subcortical structures). See documentation/brain_phantom.md.
"""
from __future__ import annotations

import argparse
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from cctrnet.dataset.geometry import Geometry
from dataset_conversion.generator_config import GeneratorConfig, Range
from dataset_conversion.mri_noise import rician_int16
from dataset_conversion.generated_dataset import (GeneratedDatasetSpec, add_generator_arguments, case_id, case_seed,
                                                 raw_root_or_default, write_generated_dataset)

SOURCES = ("mni", "aal")
CHANNEL_NAMES = {"0": "MRI"}
CASE_PREFIX = "brain"
MNI_LABELS = {"background": 0, "CSF": 1, "GM": 2, "WM": 3}
# AAL (mricron's aal.nii.gz numbering) structures, left and right merged; rare classes on purpose
AAL_STRUCTURES = {"caudate": (71, 72), "putamen": (73, 74), "pallidum": (75, 76), "thalamus": (77, 78),
                  "hippocampus": (37, 38), "amygdala": (41, 42)}
AAL_LABELS = {"background": 0, **{name: value for value, name in enumerate(AAL_STRUCTURES, start=1)}}
MNI_FILES = {"t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
             "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
             "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"}
MRICRON_TEMPLATES = Path("/usr/share/mricron/templates")
AAL_FILES = {"t1": "ch2.nii.gz", "atlas": "aal.nii.gz"}
# the 1 mm templates are block-averaged by this factor (2 mm voxels) before any warp
TEMPLATE_DOWNSAMPLING = 2
# a voxel is brain tissue when P(GM) + P(WM) reaches this; the larger of the two names it
TISSUE_PROBABILITY_THRESHOLD = 0.5
# radius of the closing of the tissue mask that gives the intracranial envelope (its non-tissue voxels are CSF)
ENVELOPE_CLOSING_RADIUS_MM = 6.0
# the head is where the T1 exceeds this fraction of its reference intensity
HEAD_INTENSITY_FRACTION = 0.1
# percentile of the head's T1 intensities that becomes intensity 1 of the normalised template
INTENSITY_REFERENCE_PERCENTILE = 99.0
DESCRIPTIONS = {
    "mni": "Brain phantom (cctrnet) from the MNI152 2009a T1: random diffeomorphic warps, bias, contrast, Rician "
           "noise, thick axial slices. Labels from the tissue probability maps: CSF (intracranial, incl. "
           "ventricles), grey matter, white matter.",
    "aal": "Brain phantom (cctrnet) from the Colin27 T1 and the AAL atlas: random diffeomorphic warps, bias, "
           "contrast, Rician noise, thick axial slices. Labels: subcortical structures, left and right merged.",
}
INSTALL_HINTS = {"mni": "pip install --no-deps nilearn   (or: pip install -e .[reproduce])",
                 "aal": "apt-get install mricron-data"}


class TemplateNotFoundError(FileNotFoundError):
    """The files of a template source are not installed; the message says what to install."""


@dataclass(frozen=True)
class BrainTemplate:
    """A template image and its label map on one grid, both (z, y, x).

    ``image_zyx`` is normalised (the head's bright tissue near 1); ``field_of_view_zyx_mm`` is the box,
    in the template frame (mm from voxel (0, 0, 0)'s centre along the array axes), that every subject's
    volume covers (the head in plane, the brain through plane). ``geometry`` places the grid in physical space.
    """

    image_zyx: np.ndarray
    label_zyx: np.ndarray
    spacing_zyx_mm: tuple[float, float, float]
    labels: dict[str, int]
    field_of_view_zyx_mm: tuple[tuple[float, float], ...]
    geometry: Geometry
    source: str = "custom"

    @classmethod
    def from_arrays(cls, image_zyx: np.ndarray, label_zyx: np.ndarray, spacing_zyx_mm: Sequence[float],
                    labels: dict[str, int], source: str = "custom") -> "BrainTemplate":
        """A template whose field of view is the bounding box of its labels, on an identity grid at the origin."""
        spacing = tuple(float(s) for s in spacing_zyx_mm)
        box = _bounding_box_mm(label_zyx > 0, spacing)
        geometry = Geometry(image_zyx.shape, spacing[::-1], (0.0, 0.0, 0.0))
        return cls(np.asarray(image_zyx, np.float32), np.asarray(label_zyx, np.uint8), spacing, dict(labels), box,
                   geometry, source)

    @property
    def extent_zyx_mm(self) -> np.ndarray:
        return (np.asarray(self.image_zyx.shape) - 1) * np.asarray(self.spacing_zyx_mm)


@dataclass(frozen=True)
class BrainPhantomConfig(GeneratorConfig):
    """Ranges from which every subject draws its anatomy, acquisition and appearance (uniformly)."""

    in_plane_spacing_mm_range: Range = (1.5, 2.0)
    # slice thickness = slice spacing (contiguous slices), like a clinical 2D stack
    slice_thickness_mm_range: Range = (4.0, 6.0)
    # points through each slice's thickness whose mean is the voxel (partial volume); labels: their majority
    slab_samples: int = 5
    # margin around the template's field of view (head in plane, brain through plane)
    crop_margin_mm: float = 6.0
    # velocity field: noise on a control grid, Gaussian smoothing in control cells, largest |velocity|
    control_spacing_mm: float = 16.0
    control_smoothing_cells: float = 1.0
    max_velocity_mm_range: Range = (3.0, 8.0)
    field_spacing_mm: float = 4.0
    squaring_steps: int = 6
    max_rotation_deg: float = 5.0
    max_scale_change: float = 0.08
    max_translation_mm: float = 8.0
    # largest |log| of the multiplicative bias field (a random quadratic polynomial) over the volume
    max_bias_log_amplitude: float = 0.3
    # contrast: intensity ** gamma of the normalised template
    gamma_range: Range = (0.7, 1.4)
    intensity_scale_range: Range = (300.0, 1200.0)
    # standard deviation of the Rician noise relative to the normalised bright-tissue intensity (1)
    noise_fraction_range: Range = (0.01, 0.05)

    def __post_init__(self) -> None:
        self.check_ranges(("in_plane_spacing_mm_range", "slice_thickness_mm_range", "gamma_range",
                           "intensity_scale_range"))
        self.check_ranges(("max_velocity_mm_range", "noise_fraction_range"), low_may_be_zero=True)
        if self.slab_samples < 1 or self.squaring_steps < 0:
            raise ValueError(f"BrainPhantomConfig: slab_samples must be >= 1 and squaring_steps >= 0, "
                             f"got {self.slab_samples}, {self.squaring_steps}")
        if not 0 <= self.max_scale_change < 1:
            raise ValueError(f"BrainPhantomConfig.max_scale_change must be in [0, 1), got {self.max_scale_change}")


# --- templates ------------------------------------------------------------------------------------
def nilearn_data_folder() -> Path:
    """nilearn's packaged data folder, found without importing nilearn (its import is slow and heavy)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise TemplateNotFoundError(f"source 'mni' needs the Python package nilearn, which is not installed: "
                                    f"{INSTALL_HINTS['mni']}")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def template_files(source: str) -> dict[str, Path]:
    """The files of a source, checked to exist; a missing one raises ``TemplateNotFoundError`` naming the fix."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    folder, names = (nilearn_data_folder(), MNI_FILES) if source == "mni" else (MRICRON_TEMPLATES, AAL_FILES)
    files = {key: folder / name for key, name in names.items()}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise TemplateNotFoundError(f"source {source!r}: missing {', '.join(missing)}; install: {INSTALL_HINTS[source]}")
    return files


@lru_cache(maxsize=2)
def load_template(source: str = "mni") -> BrainTemplate:
    """The template of a source at 2 mm, with its labels and field of view (cached per process)."""
    from cctrnet.dataset.image_io import read_image

    files = template_files(source)
    t1, geometry = read_image(files["t1"])
    if source == "mni":
        gm, wm = (_block_mean(read_image(files[key])[0]) / 255.0 for key in ("gm", "wm"))
        tissue = gm + wm >= TISSUE_PROBABILITY_THRESHOLD
        spacing_mm = float(np.mean(geometry.spacing_xyz)) * TEMPLATE_DOWNSAMPLING
        envelope = _closed_and_filled(tissue, ENVELOPE_CLOSING_RADIUS_MM / spacing_mm)
        label = np.where(tissue, np.where(gm >= wm, MNI_LABELS["GM"], MNI_LABELS["WM"]),
                         np.where(envelope, MNI_LABELS["CSF"], 0)).astype(np.uint8)
        brain, labels = envelope, MNI_LABELS
    else:
        atlas = read_image(files["atlas"], np.int32)[0]
        table = np.zeros(int(atlas.max()) + 1, np.uint8)
        for value, regions in enumerate(AAL_STRUCTURES.values(), start=1):
            table[list(regions)] = value
        label = _block_majority(table[atlas], len(AAL_LABELS))
        brain, labels = _block_mean((atlas > 0).astype(np.float32)) >= 0.5, AAL_LABELS
    image = _block_mean(t1)
    reference = np.percentile(image[image > 0], INTENSITY_REFERENCE_PERCENTILE)
    image = (image / reference).astype(np.float32)
    spacing = tuple(float(s) * TEMPLATE_DOWNSAMPLING for s in geometry.spacing_zyx)
    head_box = _bounding_box_mm(image > HEAD_INTENSITY_FRACTION, spacing)
    brain_box = _bounding_box_mm(brain, spacing)
    corner = geometry.index_zyx_to_physical_xyz(np.full(3, (TEMPLATE_DOWNSAMPLING - 1) / 2))
    coarse = Geometry(image.shape, spacing[::-1], tuple(corner), geometry.direction_xyz)
    return BrainTemplate(image, label, spacing, dict(labels), (brain_box[0], head_box[1], head_box[2]), coarse, source)


def _block_mean(volume: np.ndarray, factor: int = TEMPLATE_DOWNSAMPLING) -> np.ndarray:
    shape = [n // factor for n in volume.shape]
    cropped = volume[: shape[0] * factor, : shape[1] * factor, : shape[2] * factor].astype(np.float32)
    return cropped.reshape(shape[0], factor, shape[1], factor, shape[2], factor).mean(axis=(1, 3, 5))


def _block_majority(label: np.ndarray, num_labels: int, factor: int = TEMPLATE_DOWNSAMPLING) -> np.ndarray:
    """Most frequent label of each block (ties: the lower value)."""
    fractions = np.stack([_block_mean(label == value, factor) for value in range(num_labels)])
    return fractions.argmax(axis=0).astype(np.uint8)


def _closed_and_filled(mask: np.ndarray, radius_vox: float) -> np.ndarray:
    from scipy.ndimage import binary_closing, binary_fill_holes

    radius = int(np.ceil(radius_vox))
    offsets = np.arange(-radius, radius + 1)
    ball = (offsets[:, None, None] ** 2 + offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2) <= radius_vox ** 2
    padded = np.pad(mask, radius + 1)
    closed = binary_closing(padded, ball)[(slice(radius + 1, -radius - 1),) * 3]
    return binary_fill_holes(closed)


def _bounding_box_mm(mask: np.ndarray, spacing_zyx_mm: Sequence[float]) -> tuple[tuple[float, float], ...]:
    if not mask.any():
        raise ValueError("the template's mask is empty: no field of view can be derived")
    box = []
    for axis, spacing in enumerate(spacing_zyx_mm):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append((float(present[0] * spacing), float(present[-1] * spacing)))
    return tuple(box)


# --- subjects -------------------------------------------------------------------------------------
def generate_brain_subject(template: BrainTemplate, seed: int, config: BrainPhantomConfig | None = None,
                           slice_thickness_mm: float | None = None) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """One subject: image (int16, (z, y, x)), label (uint8, (z, y, x)) and its ``Geometry``.

    The same template, seed and config always give byte-identical arrays and the same geometry.
    ``slice_thickness_mm`` overrides the config's range.
    """
    import torch

    from dataset_conversion.deformation import random_subject_warp, sample_volume

    config = config or BrainPhantomConfig()
    rng = np.random.default_rng(int(seed))
    in_plane_mm = rng.uniform(*config.in_plane_spacing_mm_range)
    thickness_mm = rng.uniform(*config.slice_thickness_mm_range) if slice_thickness_mm is None else float(slice_thickness_mm)
    box = np.asarray(template.field_of_view_zyx_mm) + np.array([-1.0, 1.0]) * config.crop_margin_mm
    centre = box.mean(axis=1)
    warp = random_subject_warp(rng, template.extent_zyx_mm, centre, config.field_spacing_mm, config.control_spacing_mm,
                               config.control_smoothing_cells, rng.uniform(*config.max_velocity_mm_range),
                               config.squaring_steps, config.max_rotation_deg, config.max_scale_change,
                               config.max_translation_mm)
    step_zyx = np.array([thickness_mm, in_plane_mm, in_plane_mm])
    shape_zyx = tuple(int(n) for n in np.ceil((box[:, 1] - box[:, 0]) / step_zyx).astype(int))
    first_zyx = centre - (np.asarray(shape_zyx) - 1) / 2 * step_zyx
    offsets = ((np.arange(config.slab_samples) + 0.5) / config.slab_samples - 0.5) * thickness_mm
    axes = [torch.from_numpy((first_zyx[a] + np.arange(shape_zyx[a]) * step_zyx[a]).astype(np.float32)) for a in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    slab = points[None].repeat(config.slab_samples, 1, 1, 1, 1)
    slab[..., 0] += torch.from_numpy(offsets.astype(np.float32))[:, None, None, None]
    template_index = warp(slab) / torch.tensor(template.spacing_zyx_mm, dtype=torch.float32)

    gamma = rng.uniform(*config.gamma_range)
    image = torch.from_numpy(template.image_zyx)[None]
    fine = sample_volume(image, template_index, "bilinear", "zeros")[0].clamp(min=0) ** gamma
    intensity = fine.mean(dim=0).numpy().astype(np.float64)
    label_samples = sample_volume(torch.from_numpy(template.label_zyx.astype(np.float32))[None], template_index,
                                  "nearest", "zeros")[0].round().to(torch.uint8)
    values = sorted(template.labels.values())
    counts = torch.stack([(label_samples == value).sum(dim=0) for value in values])
    label = np.asarray(values, np.uint8)[counts.argmax(dim=0).numpy()]

    intensity *= _bias_field(rng, shape_zyx, rng.uniform(0.0, config.max_bias_log_amplitude))
    sigma = rng.uniform(*config.noise_fraction_range)
    scale = rng.uniform(*config.intensity_scale_range)
    image_out = rician_int16(intensity * scale, sigma * scale, rng, np.float64)

    origin_index = first_zyx / np.asarray(template.spacing_zyx_mm)
    origin_xyz = template.geometry.index_zyx_to_physical_xyz(origin_index)
    geometry = Geometry(shape_zyx, tuple(step_zyx[::-1]), tuple(float(v) for v in origin_xyz),
                        template.geometry.direction_xyz)
    return image_out, label, geometry


def _bias_field(rng: np.random.Generator, shape_zyx: Sequence[int], max_log_amplitude: float) -> np.ndarray:
    """exp of a random quadratic polynomial of the normalised coordinates, scaled so max |log| is the amplitude."""
    coordinates = np.meshgrid(*[np.linspace(-1.0, 1.0, n) for n in shape_zyx], indexing="ij")
    exponents = [(a, b, c) for a in range(3) for b in range(3) for c in range(3) if 0 < a + b + c <= 2]
    coefficients = rng.uniform(-1.0, 1.0, size=len(exponents))
    log_field = sum(k * coordinates[0] ** a * coordinates[1] ** b * coordinates[2] ** c
                    for k, (a, b, c) in zip(coefficients, exponents))
    largest = float(np.abs(log_field).max())
    return np.exp(log_field * (max_log_amplitude / largest)) if largest > 0 else np.ones(shape_zyx)


# --- dataset --------------------------------------------------------------------------------------
def generate_brain_dataset(
    raw_root: Path,
    dataset_id: int = 2,
    name: str = "BrainPhantom",
    num_training: int = 20,
    num_test: int = 10,
    num_unlabeled: int = 0,
    seed: int = 0,
    source: str = "mni",
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
    config: BrainPhantomConfig | None = None,
    slice_thickness_mm: float | None = None,
    template: BrainTemplate | None = None,
    show_progress: bool = True,
) -> Path:
    """Write ``raw_root/DatasetXXX_Name`` like ``generate_phantom_dataset`` and return its path.

    ``template`` (e.g. a synthetic one in tests) replaces the ``source``'s template.
    """
    config = config or BrainPhantomConfig()
    template = template or load_template(source)
    spec = GeneratedDatasetSpec(
        dataset_id=dataset_id, name=name, case_prefix=CASE_PREFIX, channel_names=CHANNEL_NAMES,
        labels=template.labels,
        description=DESCRIPTIONS.get(template.source, "Brain phantom (cctrnet), custom template."),
        num_training=num_training, num_test=num_test, num_unlabeled=num_unlabeled, seed=seed,
        file_ending=file_ending, progress_label="brain phantom",
        generator_info={"program": "cctr_generate_brain", "seed": seed, "source": template.source,
                        "slice_thickness_mm": slice_thickness_mm, "config": config.to_dict()})
    return write_generated_dataset(
        raw_root, spec,
        lambda subject_seed: generate_brain_subject(template, subject_seed, config, slice_thickness_mm),
        overwrite=overwrite, show_progress=show_progress)


def write_preview_png(path: Path, template: BrainTemplate, seed: int = 0, num_subjects: int = 3,
                      slices_per_subject: int = 4, config: BrainPhantomConfig | None = None) -> Path:
    """Save a figure of a few axial slices of the first training subjects, labels overlaid."""
    import matplotlib

    from dataset_conversion.preview import write_subjects_preview

    num_labels = max(template.labels.values())
    colours = [matplotlib.colormaps["tab10"](index % 10)[:3] for index in range(num_labels)]
    names = [f"{name} ({matplotlib.colors.to_hex(colours[value - 1])})"
             for name, value in template.labels.items() if value > 0]
    subjects = [(case_id(CASE_PREFIX, row), *generate_brain_subject(template, case_seed(seed, row), config))
                for row in range(num_subjects)]
    return write_subjects_preview(path, subjects, colours,
                                  f"Brain phantom, source {template.source}: " + ", ".join(names),
                                  slices_per_subject, include_end_slices=False, panel_width_inches=2.4)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cctr_generate_brain",
        description="Write a brain MRI dataset with real anatomy: a template (MNI152 2009a from nilearn, or Colin27 + "
                    "AAL from mricron-data) warped by random diffeomorphisms, with bias, contrast and noise, in thick "
                    "axial slices, in the raw layout DatasetXXX_Name/{imagesTr,labelsTr,imagesTs,labelsTs}.")
    add_generator_arguments(parser, 2, "BrainPhantom",
                            "only write a PNG of slices of the first 3 training subjects with labels, then exit")
    parser.add_argument("--num-training", type=int, default=20, help="training cases in imagesTr (default 20)")
    parser.add_argument("--num-test", type=int, default=10, help="test cases in imagesTs with labelsTs (default 10)")
    parser.add_argument("--num-unlabeled", type=int, default=0,
                        help="how many training cases (the last ones) are written without a label file (default 0)")
    parser.add_argument("--source", choices=SOURCES, default="mni",
                        help="template: mni (labels CSF 1, GM 2, WM 3; needs nilearn) or aal (six subcortical "
                             "structures; needs Debian's mricron-data) (default mni)")
    parser.add_argument("--slice-thickness", type=float, default=None, metavar="MM",
                        help="slice thickness = spacing in mm for every subject (default: random in 4-6 mm per subject)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.slice_thickness is not None and args.slice_thickness <= 0:
        raise SystemExit(f"cctr_generate_brain: error: --slice-thickness must be > 0, got {args.slice_thickness}")
    try:
        template = load_template(args.source)
    except TemplateNotFoundError as error:
        raise SystemExit(f"cctr_generate_brain: error: {error}") from None
    config = BrainPhantomConfig()
    if args.slice_thickness is not None:
        config = config.with_changes(slice_thickness_mm_range=(args.slice_thickness, args.slice_thickness))
    if args.preview is not None:
        print(f"preview written to {write_preview_png(args.preview, template, seed=args.seed, config=config)}")
        return
    args.raw_root = raw_root_or_default(args.raw_root)
    try:
        folder = generate_brain_dataset(args.raw_root, args.dataset_id, args.name, args.num_training, args.num_test,
                                        args.num_unlabeled, args.seed, args.source, args.file_ending, args.overwrite,
                                        config, template=template)
    except (FileExistsError, ValueError) as error:
        raise SystemExit(f"cctr_generate_brain: error: {error}") from None
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
