"""Beyond-the-paper registered-label options (issue 12 §4): multi-atlas fusion and the fading RSL weight."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cctrnet.registration.label_fusion import fuse_labels
from cctrnet.registration.settings import IGNORE_LABEL
from cctrnet.training.config import TrainerConfig
from cctrnet.training.registered_label_fade import RegisteredLabelFade

X = IGNORE_LABEL


def test_majority_vote_takes_the_most_given_label_and_ignores_ties_and_uncovered_voxels():
    atlases = [np.array([[[1, 2, 0, X, 3]]]), np.array([[[1, 2, 2, X, X]]]), np.array([[[2, 0, 2, X, X]]])]
    fused = fuse_labels(atlases, "majority", num_classes=4)
    # voxel 0: 1,1,2 -> 1; voxel 1: 2,2,0 -> 2; voxel 2: 0,2,2 -> 2; voxel 3: nobody; voxel 4: only one atlas -> 3
    assert fused.tolist() == [[[1, 2, 2, X, 3]]]
    tie = fuse_labels([np.array([[[1]]]), np.array([[[2]]])], "majority", num_classes=3)
    assert tie.tolist() == [[[X]]]
    assert fused.dtype == np.int16


def test_unanimous_keeps_only_voxels_where_every_covering_atlas_agrees():
    atlases = [np.array([[[1, 2, 0, X, 3]]]), np.array([[[1, 2, 2, X, X]]]), np.array([[[1, 0, 2, X, X]]])]
    assert fuse_labels(atlases, "unanimous", num_classes=4).tolist() == [[[1, X, X, X, 3]]]


def test_fusion_rejects_an_unknown_rule_and_the_config_checks_it():
    with pytest.raises(ValueError, match="fusion rule"):
        fuse_labels([np.zeros((1, 1, 1))], "median", 2)
    with pytest.raises(ValueError, match="rsl_fusion"):
        TrainerConfig(rsl_fusion="median")


def test_fade_factor_is_the_ratio_of_agreements_capped_at_one():
    fade = RegisteredLabelFade(num_classes=2, momentum=0.0)  # momentum 0: this step's values alone
    registered = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    a = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0]])  # Dice with registered: 2*2/(2+4) = 2/3
    b = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0]])  # the same; the branches agree perfectly (Dice 1)
    assert fade.update([a, b], registered) == pytest.approx(2 / 3)
    # branches that agree less with each other than with the registered labels: no fading (capped at 1)
    b_far = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    fade_capped = RegisteredLabelFade(num_classes=2, momentum=0.0)
    assert fade_capped.update([a, b_far], registered) == 1.0


def test_fade_uses_running_means_survives_a_resume_and_is_one_for_a_single_branch():
    fade = RegisteredLabelFade(num_classes=2, momentum=0.5)
    registered = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    a = torch.tensor([[1, 1, 0, 0, 0, 0, 0, 0]])
    fade.update([a, a], registered)  # with registered 2/3, between 1
    fade.update([registered, registered], registered)  # with registered 1, between 1
    assert fade.with_registered == pytest.approx(0.5 * 2 / 3 + 0.5 * 1.0)
    restored = RegisteredLabelFade(num_classes=2, momentum=0.5)
    restored.load_state_dict(fade.state_dict())
    assert restored.factor == fade.factor == pytest.approx(5 / 6)
    empty = torch.zeros(1, 8, dtype=torch.long)  # no foreground anywhere: nothing to learn from this step
    assert restored.update([empty, empty], empty) == pytest.approx(5 / 6)
    assert RegisteredLabelFade(2, 0.9).update([a], registered) == 1.0
    assert math.isclose(RegisteredLabelFade(2, 0.9).factor, 1.0)


def test_local_ncc_of_the_label_fusion_benchmark_is_one_for_equal_and_minus_one_for_inverted_images():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.label_fusion_benchmark import local_ncc

    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 20, 20))
    assert np.allclose(local_ncc(image, 3.0 * image + 1.0, 5), 1.0, atol=1e-6)  # invariant to gain and offset
    assert np.allclose(local_ncc(image, -image, 5), -1.0, atol=1e-6)
    # unrelated noise: near zero on average, and slices do not mix (window only in-plane)
    other = rng.normal(size=(2, 20, 20))
    assert abs(local_ncc(image, other, 9).mean()) < 0.1
    mixed = image.copy()
    mixed[1] = other[1]
    assert np.allclose(local_ncc(image, mixed, 5)[0], 1.0, atol=1e-6)


def test_held_out_cases_are_a_seeded_share_never_all_and_none_without_a_fraction():
    from cctrnet.training.registered_label_fade import held_out_cases

    cases = [f"case{i:02d}" for i in range(10)]
    chosen = held_out_cases(reversed(cases), 0.2, seed=3)
    assert chosen == held_out_cases(cases, 0.2, seed=3) and len(chosen) == 2 and set(chosen) <= set(cases)
    assert held_out_cases(cases, 0.2, seed=4) != chosen or held_out_cases(cases, 0.2, seed=5) != chosen
    assert len(held_out_cases(cases, 0.01, seed=0)) == 1  # a positive share holds out at least one volume
    assert len(held_out_cases(cases[:2], 0.9, seed=0)) == 1  # ... and leaves RSL at least one
    assert held_out_cases(cases, 0.0, seed=0) == [] and held_out_cases(cases[:1], 0.5, seed=0) == []
    with pytest.raises(ValueError, match="rsl_fade_holdout_fraction"):
        TrainerConfig(rsl_fade_holdout_fraction=1.0)


def test_config_checks_the_registered_label_decay():
    with pytest.raises(ValueError, match="rsl_decay must be one of"):
        TrainerConfig(rsl_decay="exponential")
    with pytest.raises(ValueError, match="rsl_decay_end"):
        TrainerConfig(rsl_decay="cosine", rsl_decay_end=1.5)
