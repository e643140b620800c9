"""progress.png: curves on panels of their own kind, each term its colour, each branch its line style."""
from cctrnet.training.progress_panels import panels_of, plot_progress, split_key


def _history(n: int = 40) -> dict:
    history = {}
    for term in ("loss_sup", "loss_cps", "loss_rsl", "loss_scl"):
        for branch in ("A", "B"):
            history[f"{term}_{branch}"] = [(i, 1.0 / i) for i in range(1, n + 1)]
    history["loss_total"] = [(i, 2.0 / i) for i in range(1, n + 1)]
    history["lr_branch_a"] = [(i, 5e-4 * (1 - i / (n + 1)) ** 0.9) for i in range(1, n + 1)]
    history["lr_branch_b"] = [(i, 1e-4 * (1 - i / (n + 1)) ** 0.9) for i in range(1, n + 1)]
    history["w_cps"] = [(i, 0.1 * i / n) for i in range(1, n + 1)]
    history["seconds_per_iteration"] = [(i, 0.3 + 0.01 * (i % 7)) for i in range(1, n + 1)]
    history["dice_pseudo_A"] = [(10, 0.4), (20, 0.5)]
    history["val_dice_mean"] = [(20, 0.55), (40, 0.6)]
    return history


def test_every_kind_of_curve_has_its_panel(tmp_path):
    titles = {title: (keys, scale) for title, keys, scale in panels_of(_history())}
    assert titles["learning rates"] == (["lr_branch_a", "lr_branch_b"], "log")
    assert titles["losses"][1] == "log" and "lr_branch_a" not in titles["losses"][0]
    assert titles["seconds per iteration"][0] == ["seconds_per_iteration"]
    assert titles["validation Dice"][0] == ["val_dice_mean"]
    assert "validation Dice" not in {t for t, _, _ in panels_of({"loss_total": [(1, 1.0)]})}


def test_terms_keep_their_colour_across_branches_and_differ_from_each_other(tmp_path):
    drawn = plot_progress(_history(), tmp_path / "progress.png")
    assert (tmp_path / "progress.png").stat().st_size > 10_000
    assert drawn["loss_cps_A"][1] == drawn["loss_cps_B"][1] and drawn["loss_cps_A"][2] != drawn["loss_cps_B"][2]
    losses = {split_key(k)[0]: v[1] for k, v in drawn.items() if v[0] == "losses"}
    assert len(set(map(tuple, losses.values()))) == len(losses) == 5  # sup, cps, rsl, scl, total
    assert split_key("lr_branch_b") == ("lr", "branch_b") and split_key("w_cps") == ("w_cps", "")
