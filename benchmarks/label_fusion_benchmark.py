"""Registered labels of one atlas (BRS) against multi-atlas fusion, on a prepared dataset's training cases.

For every labeled set drawn the way ``cctr_train --labeled N --seed S`` draws it (patients when dataset.json
declares them), every other training case gets its registered label by each rule of
``cctrnet.registration.label_fusion`` (brs, majority, unanimous), compared with its hidden label: mean
foreground Dice on the voxels the rule labels (ignored voxels left out) and coverage (the share of the truth's
foreground voxels the rule labels at all). Training cases' hidden labels only: no validation or test case is
read, so the numbers may choose the trainer's ``rsl_fusion`` setting. Needs the dataset preprocessed and
registered (cctr_plan_and_preprocess); computes no registration.

With ``--similarity-thresholds`` it also asks whether the local image similarity after warping says where a
registered label is wrong (issue 12, section 4): rule ``brs lncc>t`` is the BRS label with the voxels left out
where the local normalised cross-correlation between the unlabeled image and the BRS atlas's warped image (a
``--similarity-window`` square in each slice) is t or lower. It is a candidate setting only if it beats
``unanimous`` at the same coverage.

    python benchmarks/label_fusion_benchmark.py -d 3 --labeled 1 3 --seeds 0 1 2 3 4 \
        --methods affine affine_deformable --similarity-thresholds 0.2 0.4 0.6
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "label_fusion_benchmark.json"


def rule_quality(fused: np.ndarray, truth: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(mean foreground Dice on the labeled voxels, share of the truth's foreground the rule labels)."""
    from cctrnet.registration.settings import IGNORE_LABEL
    from cctrnet.training.pseudo_label_quality import pseudo_label_dice
    import torch

    dice = pseudo_label_dice(torch.from_numpy(fused.astype(np.int64)), torch.from_numpy(truth.astype(np.int64)),
                             num_classes)
    foreground = truth > 0
    coverage = float((fused[foreground] != IGNORE_LABEL).mean()) if foreground.any() else 1.0
    return dice, coverage


def local_ncc(image_a: np.ndarray, image_b: np.ndarray, window_px: int) -> np.ndarray:
    """Per-voxel normalised cross-correlation of two (z, y, x) images over a window_px square in each slice."""
    from scipy.ndimage import uniform_filter

    a, b = image_a.astype(np.float64), image_b.astype(np.float64)
    size = (1, window_px, window_px)
    mean_a, mean_b = uniform_filter(a, size), uniform_filter(b, size)
    variance_a = np.maximum(uniform_filter(a * a, size) - mean_a ** 2, 1e-6)
    variance_b = np.maximum(uniform_filter(b * b, size) - mean_b ** 2, 1e-6)
    return (uniform_filter(a * b, size) - mean_a * mean_b) / np.sqrt(variance_a * variance_b)


def warped_image(data, store, unlabeled: str, labeled: str) -> tuple[np.ndarray, np.ndarray]:
    """(the unlabeled image, the labeled case's image warped onto it), channel 0, preprocessed grid."""
    from cctrnet.registration.transforms import resample
    from cctrnet.registration.volumes import load_volume

    image_u, geometry_u = load_volume(data, unlabeled, 0)
    image_q, geometry_q = load_volume(data, labeled, 0)
    return image_u, resample(image_q, geometry_q, geometry_u, store.transform(labeled, unlabeled))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--labeled", type=int, nargs="+", default=[1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["affine", "affine_deformable"])
    parser.add_argument("--similarity-thresholds", type=float, nargs="*", default=[],
                        help="also the BRS label masked where the local NCC after warping is at most t")
    parser.add_argument("--similarity-window", type=int, default=9, help="in-plane window of the local NCC (px)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    from cctrnet.dataset.labeled_selection import select_labeled_cases
    from cctrnet.dataset.patients import patient_of_case
    from cctrnet.dataset.raw_dataset import find_dataset_folder
    from cctrnet.paths import preprocessed_folder, raw_folder
    from cctrnet.preprocessing.case_storage import list_preprocessed_cases, load_properties
    from cctrnet.registration import brs
    from cctrnet.registration.label_fusion import fuse_labels
    from cctrnet.registration.pair_store import PairStore, registration_folder
    from cctrnet.registration.settings import IGNORE_LABEL, RegistrationSettings
    from cctrnet.registration.volumes import load_label
    from cctrnet.utilities.file_io import load_json, save_json

    dataset = find_dataset_folder(args.dataset, preprocessed_folder())
    data = dataset / "2d"
    raw_json = load_json(find_dataset_folder(args.dataset, raw_folder()) / "dataset.json")
    patients = patient_of_case(raw_json)
    num_classes = len(raw_json["labels"])
    cases = [c for c in list_preprocessed_cases(data) if load_properties(data, c).get("is_labeled")]
    settings = RegistrationSettings()
    rows = []
    for method in args.methods:
        store = PairStore(registration_folder(dataset, "2d", method))
        scores = brs.load_scores(store)
        for labeled_count in args.labeled:
            draws = {tuple(select_labeled_cases(cases, labeled_count, seed, patients)) for seed in args.seeds}
            per_rule: dict[str, list[tuple[float, float]]] = {"brs": [], "majority": [], "unanimous": []}
            per_rule.update({f"brs lncc>{t:g}": [] for t in args.similarity_thresholds})
            for labeled in sorted(draws):
                for unlabeled in (c for c in cases if c not in labeled):
                    truth, _ = load_label(data, unlabeled)
                    atlases = [q for q in labeled if store.successful(q, unlabeled)]
                    chosen = brs.select_labeled(scores, unlabeled, atlases, settings)
                    if chosen is None:
                        continue
                    warped = {q: brs.registered_label(data, store, unlabeled, q) for q in atlases}
                    per_rule["brs"].append(rule_quality(warped[chosen], truth, num_classes))
                    for rule in ("majority", "unanimous"):
                        fused = fuse_labels(list(warped.values()), rule, num_classes)
                        per_rule[rule].append(rule_quality(fused, truth, num_classes))
                    if args.similarity_thresholds:
                        similarity = local_ncc(*warped_image(data, store, unlabeled, chosen), args.similarity_window)
                        for t in args.similarity_thresholds:
                            masked = np.where(similarity > t, warped[chosen], IGNORE_LABEL).astype(np.int16)
                            per_rule[f"brs lncc>{t:g}"].append(rule_quality(masked, truth, num_classes))
            for rule, values in per_rule.items():
                dice = np.array([d for d, _ in values if d == d])
                coverage = np.array([c for _, c in values])
                rows.append({"method": method, "labeled": labeled_count, "labeled_sets": len(draws), "rule": rule,
                             "cases": len(values), "dice_mean": float(dice.mean()) if dice.size else None,
                             "dice_std": float(dice.std(ddof=1)) if dice.size > 1 else None,
                             "coverage_mean": float(coverage.mean()) if coverage.size else None})
    unit = "patients" if patients else "cases"
    print(f"{'method':<18} {'N ' + unit:<11} {'sets':>4} {'rule':<14} {'cases':>5} {'Dice':>13} {'coverage':>8}")
    for r in rows:
        dice = "-" if r["dice_mean"] is None else f"{100 * r['dice_mean']:.1f} ± {100 * (r['dice_std'] or 0):.1f}"
        coverage = "-" if r["coverage_mean"] is None else f"{100 * r['coverage_mean']:.1f}"
        print(f"{r['method']:<18} {r['labeled']:<11} {r['labeled_sets']:>4} {r['rule']:<14} {r['cases']:>5} "
              f"{dice:>13} {coverage:>8}")
    save_json({"dataset": dataset.name, "date": datetime.date.today().isoformat(), "labeled_counts_in": unit,
               "seeds": args.seeds, "similarity_window_px": args.similarity_window, "rows": rows, "command": " ".join(["python", *sys.argv])}, args.output)
    print(f"written {args.output}")


if __name__ == "__main__":
    main()
