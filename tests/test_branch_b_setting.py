"""The trainer setting branch_b=<family>: branch B of that family at the plan's patch, as the planner builds it."""
import json

import pytest

from cctrnet.planning.planner import PlannerSettings, branch_b_of_family, plan_experiment
from cctrnet.training.config import TrainerConfig, parse_set_arguments

DATASET_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2, "c": 3}}
FINGERPRINT = {"dataset_name": "Dataset001_X", "spacings_zyx": [[8.0, 1.6, 1.6]] * 200,
               "shapes_after_crop_zyx": [[10, 200, 180]] * 200, "channel_names": {"0": "MRI"}, "ct_channels": [],
               "foreground_intensity_properties_per_channel": {"0": {}}}


def _plan(branch_b: str) -> dict:
    return plan_experiment(FINGERPRINT, DATASET_JSON, "cuda", PlannerSettings(branch_b=branch_b),
                           gpu_name="test", gpu_total_memory_gb=6.0)


def test_branch_b_setting_accepts_families_and_refuses_others():
    for value in ("plan", "same_as_a", "ResidualEncoderUNet", "Primus2D"):
        assert TrainerConfig().with_overrides(parse_set_arguments([f"branch_b={value}"])).branch_b == value
    with pytest.raises(ValueError, match="branch_b"):
        TrainerConfig().with_overrides({"branch_b": "UNETR"})


def test_family_at_the_plan_equals_the_planners_entry():
    resenc, primus = _plan("ResidualEncoderUNet"), _plan("Primus2D")
    c_resenc, c_primus = resenc["configurations"]["2d"], primus["configurations"]["2d"]
    assert c_resenc["patch_size_yx"] == c_primus["patch_size_yx"]  # GPU plans keep the patch for either family
    assert branch_b_of_family(primus, "ResidualEncoderUNet") == c_resenc["branch_b"]
    assert branch_b_of_family(resenc, "Primus2D") == c_primus["branch_b"]
    assert branch_b_of_family(resenc, "ResidualEncoderUNet") is c_resenc["branch_b"]
    from_disk = json.loads(json.dumps(resenc))  # as the trainer reads plans.json: tuples became lists
    assert branch_b_of_family(from_disk, "Primus2D") == json.loads(json.dumps(c_primus["branch_b"]))
