import math

import pytest
import torch

from cctrnet.networks.build import build_network
from cctrnet.planning.planner import PlannerSettings, plan_experiment
from cctrnet.planning.topology import unet_topology

DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2, "c": 3}}


def _fingerprint(shape=(10, 200, 180), spacing=(8.0, 1.6, 1.6), n=12):
    return {"dataset_name": "Dataset001_X", "spacings_zyx": [list(spacing)] * n, "shapes_after_crop_zyx": [list(shape)] * n,
            "channel_names": {"0": "MRI"}, "ct_channels": [], "foreground_intensity_properties_per_channel": {"0": {}}}


def test_topology_divisibility_and_nnunet_rules():
    topology = unet_topology((100, 75), (1.0, 1.0), 16, 256)
    # 100 -> 50 -> 25 -> 12.5 -> 6.25 (stop: next would be < 4): 4 strides in y; x: 75 -> ... 4.7: 4 strides
    assert topology.n_stages == 5
    assert all(p % t == 0 for p, t in zip(topology.patch_size_yx, topology.total_stride_yx))
    assert topology.features_per_stage == (16, 32, 64, 128, 256)
    anisotropic = unet_topology((128, 128), (1.0, 2.5), 16, 256)
    assert anisotropic.kernel_sizes[0] == (3, 1) and anisotropic.strides[1] == (2, 1)


def test_cpu_plan_is_deterministic_within_budget_and_divisible():
    first = plan_experiment(_fingerprint(), DATASET_JSON, "cpu")
    second = plan_experiment(_fingerprint(), DATASET_JSON, "cpu")
    assert first == second
    c = first["configurations"]["2d"]
    assert first["planned_for"]["device"] == "cpu"
    assert c["estimated_cost"]["within_budget"]
    assert c["estimated_cost"]["step_seconds_both_branches"] <= PlannerSettings().cpu_step_seconds_budget
    strides = c["branch_a"]["kwargs"]["strides"]
    for axis in range(2):
        assert c["patch_size_yx"][axis] % math.prod(s[axis] for s in strides) == 0
    assert c["batch_size"] % 2 == 0 and c["labeled_per_batch"] + c["unlabeled_per_batch"] == c["batch_size"]
    assert c["normalization"][0]["scheme"] == "ZScoreNormalization"


def test_tighter_cpu_budget_gives_cheaper_plan():
    generous = plan_experiment(_fingerprint(), DATASET_JSON, "cpu", PlannerSettings(cpu_step_seconds_budget=5.0))
    tight = plan_experiment(_fingerprint(), DATASET_JSON, "cpu", PlannerSettings(cpu_step_seconds_budget=0.3))
    cost = lambda p: p["configurations"]["2d"]["estimated_cost"]["step_seconds_both_branches"]  # noqa: E731
    assert cost(tight) < cost(generous) <= 5.0
    assert generous["configurations"]["2d"]["spacing_yx"][0] <= tight["configurations"]["2d"]["spacing_yx"][0]


def test_gpu_plan_uses_median_spacing_and_respects_memory():
    plan = plan_experiment(_fingerprint(n=200), DATASET_JSON, "cuda", gpu_name="test", gpu_total_memory_gb=6.0)
    c = plan["configurations"]["2d"]
    assert c["spacing_yx"] == [1.6, 1.6]
    assert plan["planned_for"]["gpu_memory_target_gb"] == pytest.approx(0.85 * 6.0)
    assert c["estimated_cost"]["memory_gb_both_branches"] <= 0.85 * 6.0
    bigger = plan_experiment(_fingerprint(n=200), DATASET_JSON, "cuda", PlannerSettings(gpu_memory_target_gb=40))
    assert bigger["configurations"]["2d"]["batch_size"] >= c["batch_size"]


def test_ct_channel_gets_ct_normalisation():
    fingerprint = _fingerprint()
    fingerprint.update(channel_names={"0": "CT"}, ct_channels=[0], foreground_intensity_properties_per_channel={
        "0": {"mean": 50.0, "std": 20.0, "percentile_00_5": -100.0, "percentile_99_5": 300.0}})
    (entry,) = plan_experiment(fingerprint, {**DATASET_JSON, "channel_names": {"0": "CT"}}, "cpu")[
        "configurations"]["2d"]["normalization"]
    assert entry["scheme"] == "CTNormalization" and entry["parameters"]["percentile_99_5"] == 300.0


def test_planned_networks_run_on_the_planned_patch():
    plan = plan_experiment(_fingerprint(shape=(10, 64, 64)), DATASET_JSON, "cpu")
    c = plan["configurations"]["2d"]
    x = torch.zeros((2, 1, *c["patch_size_yx"]))
    for branch in ("branch_a", "branch_b"):
        network = build_network(c[branch], 1, 4)
        with torch.no_grad():
            assert network(x).shape == (2, 4, *c["patch_size_yx"])
