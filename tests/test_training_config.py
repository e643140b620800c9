import subprocess
import sys

import pytest

from cctrnet.training.config import TrainerConfig, parse_set_arguments
from cctrnet.training.trainers.registry import get_trainer_class, trainer_names


def test_set_arguments_are_typed():
    overrides = parse_set_arguments(["w_rs=0.5", "scl=false", "n_anchors=10", "num_iterations=none", "branch_b=same_as_a"])
    assert overrides == {"w_rs": 0.5, "scl": False, "n_anchors": 10, "num_iterations": None, "branch_b": "same_as_a"}
    config = TrainerConfig().with_overrides(overrides)
    assert config.w_rs == 0.5 and not config.scl and config.tau == 0.1


def test_unknown_setting_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown setting 'w_foo'.*w_rs"):
        parse_set_arguments(["w_foo=1"])
    with pytest.raises(ValueError, match="expects bool"):
        parse_set_arguments(["scl=perhaps"])
    with pytest.raises(ValueError, match="key=value"):
        parse_set_arguments(["scl"])


def test_paper_defaults():
    c = TrainerConfig()
    assert (c.w_c, c.tau, c.n_anchors, c.n_negatives, c.anchor_threshold) == (1e-3, 0.1, 1000, 500, 0.5)
    assert (c.learning_rate_cnn, c.learning_rate_transformer, c.weight_decay, c.poly_power) == (5e-4, 1e-4, 5e-4, 0.9)
    assert (c.w_cps_max, c.bank_fraction, c.reps_w1, c.reps_w2) == (0.1, 0.2, 0.5, 0.5)
    assert c.w_rs == 0.3  # not the paper's 1: chosen on validation patients (benchmarks.md)
    assert (c.rsl_decay, c.rsl_decay_end) == ("cosine", 0.0)  # not the paper's constant weight: the same way


def test_registry_knows_every_trainer_and_refuses_others():
    for name in trainer_names():
        assert get_trainer_class(name).name == name
    with pytest.raises(ValueError, match="unknown trainer 'Nope'.*CCTRTrainer"):
        get_trainer_class("Nope")


def test_cli_lists_trainers_and_rejects_unknown_setting():
    help_text = subprocess.run([sys.executable, "-m", "cctrnet.cli.train", "--help"], capture_output=True, text=True)
    for name in trainer_names():
        assert name in help_text.stdout
    bad = subprocess.run([sys.executable, "-m", "cctrnet.cli.train", "1", "--set", "bogus=1"], capture_output=True,
                         text=True)
    assert bad.returncode != 0 and "unknown setting 'bogus'" in bad.stderr


def test_training_autocast_dtype_prefers_bfloat16_on_a_gpu_that_has_it(monkeypatch):
    import pytest
    import torch

    from cctrnet.utilities.device import training_autocast_dtype

    assert training_autocast_dtype("cpu") is None  # no autocast on CPU
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training_autocast_dtype("cuda") is torch.bfloat16
    assert training_autocast_dtype("cuda", "float16") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert training_autocast_dtype("cuda") is torch.float16
    with pytest.raises(ValueError, match="no bfloat16"):
        training_autocast_dtype("cuda", "bfloat16")
    with pytest.raises(ValueError, match="mixed_precision_dtype"):
        training_autocast_dtype("cpu", "int8")


def test_settings_of_a_switched_off_module_are_inert():
    from cctrnet.training.config import USED_ONLY_WITH, inert_settings

    labeled_only = TrainerConfig().with_overrides(get_trainer_class("LabeledOnlyTrainer").config_defaults).to_dict()
    inert = inert_settings(labeled_only)
    assert {"w_rs", "rsl_fusion", "registration_method", "w_cps_max", "w_c"} <= inert
    assert inert_settings(TrainerConfig().to_dict()) == set()  # CCT-R: every module on
    cts = TrainerConfig().with_overrides(get_trainer_class("CTSTrainer").config_defaults).to_dict()
    assert "w_rs" in inert_settings(cts) and "w_cps_max" not in inert_settings(cts)
    # REPS alone still loads the registrations, so the registration settings matter without RSL
    reps_only = TrainerConfig().with_overrides({"rsl": False}).to_dict()
    assert "w_rs" in inert_settings(reps_only) and "registration_method" not in inert_settings(reps_only)
    assert all(switch in TrainerConfig.field_names() for switches in USED_ONLY_WITH.values() for switch in switches)
    assert set(USED_ONLY_WITH) <= set(TrainerConfig.field_names())
