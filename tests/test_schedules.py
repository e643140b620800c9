import math
from types import SimpleNamespace

import pytest

from cctrnet.training.schedules import (
    GaussianWarmupSchedule,
    PolyLearningRateSchedule,
    gaussian_warmup_weight,
    poly_learning_rate,
)


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_cps_weight_follows_gaussian_warmup():
    assert gaussian_warmup_weight(0, 1000) == pytest.approx(0.1 * math.exp(-5.0))
    assert gaussian_warmup_weight(500, 1000) == pytest.approx(0.1 * math.exp(-5.0 * 0.25))
    assert gaussian_warmup_weight(1000, 1000) == pytest.approx(0.1)
    assert gaussian_warmup_weight(250, 1000, max_weight=2.0, sharpness=1.0) == pytest.approx(2.0 * math.exp(-0.5625))


def test_cps_weight_is_monotonic_and_clipped():
    weights = [gaussian_warmup_weight(i, 100) for i in range(0, 101, 5)]
    assert all(a < b for a, b in zip(weights, weights[1:]))
    assert gaussian_warmup_weight(150, 100) == pytest.approx(0.1)
    assert gaussian_warmup_weight(-10, 100) == pytest.approx(0.1 * math.exp(-5.0))


def test_poly_learning_rate():
    assert poly_learning_rate(0, 40000, 5e-4) == pytest.approx(5e-4)
    assert poly_learning_rate(20000, 40000, 5e-4) == pytest.approx(5e-4 * 0.5**0.9)
    assert poly_learning_rate(40000, 40000, 5e-4) == 0.0
    assert poly_learning_rate(50000, 40000, 5e-4) == 0.0


def test_schedule_objects_match_functions_and_set_optimizer_lr():
    warmup = GaussianWarmupSchedule(total_iterations=200)
    assert warmup(37) == gaussian_warmup_weight(37, 200)
    poly = PolyLearningRateSchedule(initial_lr=1e-3, total_iterations=100)
    # apply() only touches param_groups; a stand-in avoids torch.optim's seconds-long first import
    optimizer = SimpleNamespace(param_groups=[{"lr": 1e-3}, {"lr": 5.0}])
    returned = poly.apply(optimizer, 30)
    assert returned == pytest.approx(1e-3 * 0.7**0.9)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([returned, returned])


def test_non_positive_total_is_rejected():
    with pytest.raises(ValueError, match="total_iterations"):
        gaussian_warmup_weight(0, 0)


def test_an_extension_restarts_the_learning_rate_and_holds_the_ramps():
    from cctrnet.training.schedules import ScheduleSpan

    first = ScheduleSpan.for_new_run(100)
    assert first.learning_rate(50, 1e-3) == poly_learning_rate(50, 100, 1e-3)
    extended = first.extended_to(300)
    assert extended.learning_rate(100, 1e-3) == pytest.approx(1e-3)
    assert extended.learning_rate(200, 1e-3) == pytest.approx(1e-3 * 0.5**0.9)
    assert extended.learning_rate(300, 1e-3) == 0.0
    # the ramps stay at the maximum they reached when the first run finished: no sawtooth
    assert first.ramp_weight(100) == extended.ramp_weight(100) == extended.ramp_weight(250) == pytest.approx(0.1)
    assert extended.ramp_weight(50) == first.ramp_weight(50)
    assert ScheduleSpan.from_dict(extended.to_dict()) == extended
    with pytest.raises(ValueError, match="beyond 100"):
        first.extended_to(100)


def test_decay_factor_by_hand():
    from cctrnet.training.schedules import decay_factor

    assert decay_factor(0.25, "linear", end=0.2) == pytest.approx(0.2 + 0.8 * 0.75)
    assert decay_factor(0.25, "cosine", end=0.2) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert decay_factor(0.5, "cosine") == pytest.approx(0.5)
    assert decay_factor(1.5, "linear", end=0.1) == pytest.approx(0.1)  # held at the end after the span
    assert decay_factor(0.7, "none", end=0.0) == 1.0
    with pytest.raises(ValueError, match="decay shape"):
        decay_factor(0.5, "step")
