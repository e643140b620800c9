"""From a fingerprint to ``plans.json``: one 2D configuration sized for the hardware it will train on.

- Target in-plane spacing: the median in-plane spacing of the training cases (z is never resampled).
- Branch A: ``PlainConvUNet`` with nnU-Net's topology rules (:mod:`cctrnet.planning.topology`).
- Branch B: a network of another family (METHOD.md §2): ``Primus2D`` where the patch suits its patch
  embedding, else ``ResidualEncoderUNet``; ``branch_b`` in the settings forces one.
- GPU: the patch is the median slice; the batch is the largest even size whose estimated memory for both
  networks fits the GPU's memory target (and covers at most 5% of the dataset's slices, nnU-Net's rule).
- CPU: a compute budget (seconds per step for both networks together); while the estimate exceeds it,
  the in-plane spacing is made coarser (up to a limit), then the patch smaller, then the batch smaller.
The same fingerprint, settings and device always give the same plan.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cctrnet.planning.cost_model import StepCost, network_cost
from cctrnet.planning.topology import Topology, unet_topology

PLANS_NAME = "cctrPlans"
CONFIGURATION = "2d"
BRANCH_B_CHOICES = ("auto", "Primus2D", "ResidualEncoderUNet")


@dataclass
class DeviceSettings:
    base_features: int
    max_features: int
    batch_size: int
    min_batch_size: int
    num_iterations: int
    resenc_blocks_per_stage: tuple[int, ...]


@dataclass
class PlannerSettings:
    """Every number the planner uses; defaults documented in documentation/planning.md."""

    cpu: DeviceSettings = field(default_factory=lambda: DeviceSettings(16, 256, 8, 4, 2000, (1, 2, 2, 2, 2, 2, 2)))
    gpu: DeviceSettings = field(default_factory=lambda: DeviceSettings(32, 512, 32, 4, 30000, (1, 3, 4, 6, 6, 6, 6)))
    cpu_step_seconds_budget: float = 0.6  # both networks, forward + backward + step
    cpu_reference_gflops_per_second: float = 60.0  # 2-core reference machine, shared/MEASUREMENTS.md
    cpu_max_spacing_coarsening: float = 1.5
    min_patch_size: int = 64
    gpu_memory_target_gb: float | None = None  # None: 85% of the detected GPU's memory
    gpu_memory_fraction: float = 0.85
    max_batch_fraction_of_dataset: float = 0.05
    max_stages: int = 7
    min_feature_map_size: int = 4
    branch_b: str = "auto"
    primus_embed_dim: int = 396  # Primus-S
    primus_depth: int = 12
    primus_num_heads: int = 6


# --- architecture entries ---------------------------------------------------------------------------
_COMMON_CONV = {
    "conv_op": "torch.nn.Conv2d",
    "conv_bias": True,
    "norm_op": "torch.nn.InstanceNorm2d",
    "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
    "deep_supervision": False,
}


def plain_unet_architecture(topology: Topology) -> dict[str, Any]:
    n = topology.n_stages
    return {"network_class": "PlainConvUNet", "kwargs": {
        "n_stages": n, "features_per_stage": list(topology.features_per_stage),
        "kernel_sizes": [list(k) for k in topology.kernel_sizes], "strides": [list(s) for s in topology.strides],
        "n_conv_per_stage": [2] * n, "n_conv_per_stage_decoder": [2] * (n - 1), **_COMMON_CONV}}


def resenc_unet_architecture(topology: Topology, blocks_per_stage: tuple[int, ...]) -> dict[str, Any]:
    n = topology.n_stages
    blocks = list(blocks_per_stage) + [blocks_per_stage[-1]] * n
    return {"network_class": "ResidualEncoderUNet", "kwargs": {
        "n_stages": n, "features_per_stage": list(topology.features_per_stage),
        "kernel_sizes": [list(k) for k in topology.kernel_sizes], "strides": [list(s) for s in topology.strides],
        "n_blocks_per_stage": blocks[:n], "n_conv_per_stage_decoder": [1] * (n - 1), **_COMMON_CONV}}


def primus_embed_size(patch_size_yx: tuple[int, int]) -> int | None:
    """Patch embedding edge: 16 px for patches of 128 and more, 8 below; None where it does not divide."""
    size = 16 if min(patch_size_yx) >= 128 else 8
    return size if all(p % size == 0 for p in patch_size_yx) and min(patch_size_yx) >= 4 * size else None


def primus_architecture(patch_size_yx: tuple[int, int], settings: PlannerSettings) -> dict[str, Any] | None:
    embed = primus_embed_size(patch_size_yx)
    if embed is None:
        return None
    return {"network_class": "Primus2D", "kwargs": {
        "patch_size_yx": list(patch_size_yx), "embed_dim": settings.primus_embed_dim,
        "patch_embed_size_yx": [embed, embed], "depth": settings.primus_depth,
        "num_heads": settings.primus_num_heads, "init_values": 0.1, "scale_attn_inner": True}}


def branch_b_candidates(topology: Topology, settings: PlannerSettings, device_settings: DeviceSettings,
                        include_primus: bool = True) -> dict[str, dict[str, Any]]:
    out = {"ResidualEncoderUNet": resenc_unet_architecture(topology, device_settings.resenc_blocks_per_stage)}
    primus = primus_architecture(topology.patch_size_yx, settings) if include_primus else None
    if primus is not None:
        out["Primus2D"] = primus
    return out


def planner_settings_from_plans(plans: dict[str, Any]) -> PlannerSettings:
    """The settings a plan was made with (``plans["planner_settings"]``, as written by ``plan_experiment``)."""
    values = dict(plans["planner_settings"])
    for device in ("cpu", "gpu"):
        device_values = dict(values[device])
        device_values["resenc_blocks_per_stage"] = tuple(device_values["resenc_blocks_per_stage"])
        values[device] = DeviceSettings(**device_values)
    return PlannerSettings(**values)


def branch_b_of_family(plans: dict[str, Any], network_class: str) -> dict[str, Any]:
    """Branch B of family ``network_class`` at a plan's patch and branch-A topology, by the planner's rules.

    The plan's own entry when it is of that family; otherwise the candidate the planner built next to it
    (what ``--branch-b`` would choose at the same patch).
    """
    configuration = plans["configurations"][CONFIGURATION]
    if configuration["branch_b"]["network_class"] == network_class:
        return configuration["branch_b"]
    a = configuration["branch_a"]["kwargs"]
    topology = Topology(tuple(configuration["patch_size_yx"]), tuple(tuple(s) for s in a["strides"]),
                        tuple(tuple(k) for k in a["kernel_sizes"]), tuple(a["features_per_stage"]))
    settings = planner_settings_from_plans(plans)
    device_settings = settings.gpu if plans["planned_for"]["device"] == "cuda" else settings.cpu
    candidates = branch_b_candidates(topology, settings, device_settings)
    if network_class not in candidates:
        raise ValueError(f"no branch B of family {network_class!r} at the plan's patch "
                         f"{list(topology.patch_size_yx)}; possible: {', '.join(candidates)}")
    return candidates[network_class]


def choose_branch_b(candidates: dict[str, dict[str, Any]], settings: PlannerSettings) -> str:
    if settings.branch_b == "auto" or (settings.branch_b == "Primus2D" and len(candidates) == 1):
        return "Primus2D" if "Primus2D" in candidates else "ResidualEncoderUNet"
    if settings.branch_b not in candidates:
        raise ValueError(f"branch B {settings.branch_b!r} cannot run at the planned patch; "
                         f"possible: {', '.join(candidates)}")
    return settings.branch_b


# --- the planner --------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    spacing_yx: tuple[float, float]
    topology: Topology
    batch_size: int
    branch_a: dict[str, Any]
    branch_b_name: str
    branch_b_all: dict[str, dict[str, Any]]
    cost_a: StepCost
    cost_b: dict[str, StepCost]

    @property
    def branch_b(self) -> dict[str, Any]:
        return self.branch_b_all[self.branch_b_name]


def _candidate(spacing_yx, shape_yx, batch_size, settings, device_settings, channels, classes,
               fits=None, include_primus: bool = True) -> _Candidate:
    """Architectures and costs at one spacing, patch and batch; branch B chosen by ``fits`` where given.

    Counting Primus on the meta device takes seconds, so searches leave it out unless it is forced
    and it is added for the chosen configuration only.
    """
    topology = unet_topology(shape_yx, spacing_yx, device_settings.base_features, device_settings.max_features,
                             settings.max_stages, settings.min_feature_map_size)
    branch_a = plain_unet_architecture(topology)
    all_b = branch_b_candidates(topology, settings, device_settings,
                                include_primus or settings.branch_b == "Primus2D")
    patch = topology.patch_size_yx
    c = _Candidate(tuple(spacing_yx), topology, batch_size, branch_a, choose_branch_b(all_b, settings), all_b,
                   network_cost(branch_a, channels, classes, patch),
                   {k: network_cost(v, channels, classes, patch) for k, v in all_b.items()})
    if settings.branch_b == "auto" and fits is not None and not fits(c) and fits(c, "ResidualEncoderUNet"):
        c.branch_b_name = "ResidualEncoderUNet"  # Primus only where it runs at the planned cost
    return c


def _cpu_seconds(c: _Candidate, settings: PlannerSettings, name_b: str | None = None) -> float:
    gflops = c.cost_a.step_gflops(c.batch_size) + c.cost_b[name_b or c.branch_b_name].step_gflops(c.batch_size)
    return gflops / settings.cpu_reference_gflops_per_second


def _gpu_memory(c: _Candidate, name_b: str | None = None) -> float:
    return c.cost_a.memory_gb(c.batch_size) + c.cost_b[name_b or c.branch_b_name].memory_gb(c.batch_size)


def _shrink(shape_yx: tuple[int, int], min_patch: int) -> tuple[int, int]:
    """The larger axis 10% smaller (not below ``min_patch``)."""
    axis = int(np.argmax(shape_yx))
    out = list(shape_yx)
    out[axis] = max(min_patch, int(math.floor(out[axis] * 0.9)))
    return tuple(out)  # type: ignore[return-value]


def _cpu_steps(median_spacing_yx, median_extent_mm_yx, settings: PlannerSettings) -> list[tuple]:
    """Ever cheaper (spacing, shape, batch) settings: coarser spacing, then smaller patch, then smaller batch."""
    ds = settings.cpu
    steps, factor = [], 1.0
    while factor <= settings.cpu_max_spacing_coarsening + 1e-9:
        spacing = tuple(float(s) * factor for s in median_spacing_yx)
        shape = tuple(max(settings.min_patch_size, int(round(e / s))) for e, s in zip(median_extent_mm_yx, spacing))
        steps.append((spacing, shape, ds.batch_size))
        factor *= 1.1
    spacing, shape, batch = steps[-1]
    while max(shape) > settings.min_patch_size:
        shape = _shrink(shape, settings.min_patch_size)
        steps.append((spacing, shape, batch))
    while batch - 2 >= ds.min_batch_size:
        batch -= 2
        steps.append((spacing, shape, batch))
    return steps


def plan_cpu(median_spacing_yx, median_extent_mm_yx, channels, classes, settings: PlannerSettings) -> _Candidate:
    """The first (finest) step of :func:`_cpu_steps` within the budget, found by bisection."""
    steps = _cpu_steps(median_spacing_yx, median_extent_mm_yx, settings)

    def fits(c: _Candidate, name_b: str | None = None) -> bool:
        return _cpu_seconds(c, settings, name_b) <= settings.cpu_step_seconds_budget

    def at(i: int, include_primus: bool = False) -> _Candidate:
        spacing, shape, batch = steps[i]
        return _candidate(spacing, shape, batch, settings, settings.cpu, channels, classes, fits, include_primus)

    low, high = 0, len(steps) - 1
    if fits(at(high)):
        while low < high:
            middle = (low + high) // 2
            if fits(at(middle)):
                high = middle
            else:
                low = middle + 1
    # else: even the smallest configuration is over budget; it is used and the plan says so
    return at(high, include_primus=True)


def plan_gpu(median_spacing_yx, median_extent_mm_yx, channels, classes, total_slices: int, memory_target_gb: float,
             settings: PlannerSettings) -> _Candidate:
    ds = settings.gpu
    spacing = tuple(float(s) for s in median_spacing_yx)
    shape = tuple(max(settings.min_patch_size, int(round(e / s))) for e, s in zip(median_extent_mm_yx, spacing))
    for _ in range(100):
        c = _candidate(spacing, shape, ds.min_batch_size, settings, ds, channels, classes,
                       lambda cand, name_b=None: _gpu_memory(cand, name_b) <= memory_target_gb)
        patch_pixels = float(np.prod(c.topology.patch_size_yx))
        median_pixels = float(np.prod([e / s for e, s in zip(median_extent_mm_yx, spacing)]))
        cap = int(settings.max_batch_fraction_of_dataset * total_slices * median_pixels / patch_pixels)
        max_batch = max(ds.min_batch_size, min(ds.batch_size, cap - cap % 2))
        if _gpu_memory(c) <= memory_target_gb:
            fitting = [b for b in range(ds.min_batch_size, max_batch + 1, 2)
                       if c.cost_a.memory_gb(b) + c.cost_b[c.branch_b_name].memory_gb(b) <= memory_target_gb]
            c.batch_size = max(fitting)
            return c
        if max(shape) <= settings.min_patch_size:
            return c
        shape = _shrink(shape, settings.min_patch_size)
    return c


def plan_experiment(fingerprint: dict[str, Any], dataset_json: dict[str, Any], device: str,
                    settings: PlannerSettings | None = None, gpu_name: str | None = None,
                    gpu_total_memory_gb: float | None = None) -> dict[str, Any]:
    """The plan (a JSON-ready dict) for ``device`` ("cpu" or "cuda")."""
    settings = settings or PlannerSettings()
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if settings.branch_b not in BRANCH_B_CHOICES:
        raise ValueError(f"branch_b must be one of {BRANCH_B_CHOICES}, got {settings.branch_b!r}")
    spacings = np.asarray(fingerprint["spacings_zyx"], dtype=np.float64)
    shapes = np.asarray(fingerprint["shapes_after_crop_zyx"], dtype=np.float64)
    median_spacing = np.median(spacings, axis=0)
    median_extent_mm_yx = np.median(shapes[:, 1:] * spacings[:, 1:], axis=0)
    channels = len(dataset_json["channel_names"])
    classes = len(dataset_json["labels"])

    if device == "cpu":
        chosen = plan_cpu(median_spacing[1:], median_extent_mm_yx, channels, classes, settings)
        device_settings = settings.cpu
        planned_for = {"device": "cpu", "step_seconds_budget": settings.cpu_step_seconds_budget,
                       "reference_gflops_per_second": settings.cpu_reference_gflops_per_second}
    else:
        if settings.gpu_memory_target_gb is not None:
            target = float(settings.gpu_memory_target_gb)
        elif gpu_total_memory_gb is not None:
            target = round(settings.gpu_memory_fraction * gpu_total_memory_gb, 2)
        else:
            raise ValueError("planning for cuda needs the GPU's memory or --gpu-memory-target")
        total_slices = int(np.sum(shapes[:, 0]))
        chosen = plan_gpu(median_spacing[1:], median_extent_mm_yx, channels, classes, total_slices, target, settings)
        device_settings = settings.gpu
        planned_for = {"device": "cuda", "gpu_name": gpu_name, "gpu_memory_target_gb": target}

    batch = chosen.batch_size
    estimates = {"branch_a": _estimate(chosen.cost_a, batch, settings)}
    estimates["branch_b_candidates"] = {k: _estimate(v, batch, settings) for k, v in chosen.cost_b.items()}
    if device == "cpu":
        estimates["step_seconds_both_branches"] = round(_cpu_seconds(chosen, settings), 3)
        estimates["within_budget"] = bool(estimates["step_seconds_both_branches"] <= settings.cpu_step_seconds_budget)
    else:
        estimates["memory_gb_both_branches"] = round(_gpu_memory(chosen), 3)
    spacing_yx = [float(s) for s in chosen.spacing_yx]
    configuration = {
        "data_identifier": CONFIGURATION,
        "spacing_yx": spacing_yx,
        "spacing_coarsening_factor": round(spacing_yx[0] / float(median_spacing[1]), 4),
        "median_shape_yx_after_resampling": [int(round(e / s)) for e, s in zip(median_extent_mm_yx, spacing_yx)],
        "patch_size_yx": list(chosen.topology.patch_size_yx),
        "batch_size": batch,
        "labeled_per_batch": batch // 2,
        "unlabeled_per_batch": batch - batch // 2,
        "normalization": _normalization(fingerprint),
        "branch_a": chosen.branch_a,
        "branch_b": chosen.branch_b,
        "branch_b_rule": settings.branch_b,
        "num_iterations": device_settings.num_iterations,
        "estimated_cost": estimates,
    }
    return {
        "plans_name": PLANS_NAME,
        "dataset_name": fingerprint["dataset_name"],
        "planned_for": planned_for,
        "labels": dataset_json["labels"],
        "num_classes": classes,
        "channel_names": dataset_json["channel_names"],
        "original_median_spacing_zyx": [float(s) for s in median_spacing],
        "original_median_shape_after_crop_zyx": [float(s) for s in np.median(shapes, axis=0)],
        "planner_settings": asdict(settings),
        "configurations": {CONFIGURATION: configuration},
    }


def _estimate(cost: StepCost, batch: int, settings: PlannerSettings) -> dict[str, float]:
    return {
        "parameters_millions": round(cost.parameters / 1e6, 3),
        "step_gflops": round(cost.step_gflops(batch), 2),
        "cpu_step_seconds": round(cost.step_gflops(batch) / settings.cpu_reference_gflops_per_second, 3),
        "memory_gb": round(cost.memory_gb(batch), 3),
    }


def _normalization(fingerprint: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    ct = set(fingerprint["ct_channels"])
    for key, name in sorted(fingerprint["channel_names"].items(), key=lambda kv: int(kv[0])):
        if int(key) in ct:
            stats = fingerprint["foreground_intensity_properties_per_channel"][key]
            params = {k: stats[k] for k in ("mean", "std", "percentile_00_5", "percentile_99_5")}
            out.append({"channel": int(key), "name": name, "scheme": "CTNormalization", "parameters": params})
        else:
            out.append({"channel": int(key), "name": name, "scheme": "ZScoreNormalization", "parameters": {}})
    return out
