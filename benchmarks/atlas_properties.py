"""What makes a training case a good single atlas? Properties of the cases the suggestion benchmark trained on.

Reads the results of ``label_suggestion_benchmark.py`` (``OUTPUT/results.json``: every single-case choice trained
with several seeds) and, for every training case of the preprocessed dataset, measures properties of two kinds:

- **label-free** (what ``cctr_suggest_labels`` could use): number of slices, slice spacing, in-plane size, and the
  case's mean dissimilarity to the other cases from the stored registrations (the suggestion's matrix, and its
  image and deformation terms alone);
- **from labels** (known only after labeling, or oracle): foreground slices, structure volumes, the contrast of
  the LV cavity against the myocardium, and the *transfer Dice*, the mean Dice of the case's label carried by the
  stored registrations onto every other training case (their hidden labels; a failed pair counts 0).

It prints one row per case (the trained ones with their mean test Dice over the seeds) and, for each property, the
Spearman correlation with that Dice over the trained cases, and writes the whole as JSON. Nothing here chooses a
setting: the test Dice only reports (as in the suggestion benchmark), and with ten or so trained cases a
correlation is a hint to test on new draws, not a finding.

    python benchmarks/atlas_properties.py --preprocessed /work/repwork/cctr_preprocessed/Dataset001_CardiacPhantom \\
        --results /work/suggestbench2/results.json --trainer LabeledOnlyTrainer
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results" / "atlas_properties.json"
#: contrast is measured between these two label values (the ACDC convention: 3 LV cavity, 2 myocardium)
CONTRAST_LABELS = (3, 2)


def mean_test_dice(results: dict[str, dict[str, Any]], trainer: str) -> tuple[dict[str, float], list[int]]:
    """Single-case choices of ``trainer``: case -> mean test Dice over the training seeds that every trained case
    has finished (so no case's mean rests on other seeds), and those seeds."""
    per_case: dict[str, dict[int, float]] = {}
    for key, run in results.items():
        parts = key.split("/")  # trainer/N/choice/seedS; the old one-seed layout (no seed part) is left out
        if len(parts) != 4 or parts[0] != trainer or parts[1] != "1" or "test_dice_percent" not in run:
            continue
        per_case.setdefault(run["cases"][0], {})[int(run["seed"])] = float(run["test_dice_percent"])
    if not per_case:
        return {}, []
    shared = sorted(set.intersection(*(set(seeds) for seeds in per_case.values())))
    return {case: float(np.mean([seeds[s] for s in shared])) for case, seeds in per_case.items() if shared}, shared


def case_properties(data_folder: Path, case: str, label: np.ndarray | None) -> dict[str, Any]:
    """Properties of one case from its image and ``label`` (None: the label-free ones only)."""
    from cctrnet.registration.volumes import load_volume

    image, geometry = load_volume(data_folder, case, 0)
    spacing_xyz = geometry.spacing_xyz
    out: dict[str, Any] = {"slices": int(image.shape[0]), "slice_spacing_mm": float(spacing_xyz[2]),
                           "in_plane_pixels": int(image.shape[1] * image.shape[2])}
    if label is None:
        return out
    millilitres = float(np.prod(spacing_xyz)) / 1000.0
    out["foreground_slices"] = int(np.sum(label.reshape(label.shape[0], -1).max(axis=1) > 0))
    for value in sorted(int(v) for v in np.unique(label) if v > 0):
        out[f"volume_ml_{value}"] = float(np.sum(label == value)) * millilitres
    inside, outside = (image[label == v] for v in CONTRAST_LABELS)
    if inside.size and outside.size:
        out["contrast"] = float((inside.mean() - outside.mean()) / np.sqrt(0.5 * (inside.var() + outside.var())))
    return out


def transfer_dice(data_folder: Path, store, case: str, truths: dict[str, np.ndarray]) -> float:
    """Mean Dice of ``case``'s label registered onto each other case of ``truths`` (their labels; failed pair: 0)."""
    from cctrnet.registration import brs
    from cctrnet.registration.report import label_dice

    scores = [label_dice(brs.registered_label(data_folder, store, other, case), truth)
              if store.successful(case, other) else 0.0
              for other, truth in truths.items() if other != case]
    return float(np.mean(scores))


def centralities(store, cases: list[str], method: str) -> dict[str, dict[str, float]]:
    """Mean dissimilarity of each case to the others: the suggestion's, and its image and deformation terms."""
    from cctrnet.registration.dissimilarity import DissimilaritySettings, build_dissimilarity

    variants = {"dissimilarity": DissimilaritySettings(),
                "image_term": DissimilaritySettings(deformation_weight=0.0),
                "deformation_term": DissimilaritySettings(image_weight=0.0)}
    out: dict[str, dict[str, float]] = {case: {} for case in cases}
    for name, settings in variants.items():
        try:
            matrix = build_dissimilarity(store, cases, method, settings).values
        except ValueError:  # e.g. the deformation term of an affine store
            continue
        n = len(cases)
        for index, case in enumerate(cases):
            out[case][f"mean_{name}"] = float(matrix[index].sum() / (n - 1))
    return out


def correlations(rows: dict[str, dict[str, Any]], outcome: str = "test_dice") -> dict[str, dict[str, float]]:
    from scipy.stats import spearmanr

    trained = [case for case, row in rows.items() if row.get(outcome) is not None]
    names = sorted({k for case in trained for k, v in rows[case].items()
                    if k != outcome and isinstance(v, (int, float))})
    out = {}
    for name in names:
        cases = [c for c in trained if rows[c].get(name) is not None]
        values = [rows[c][name] for c in cases]
        if len(cases) < 4 or len(set(values)) < 2:
            continue
        result = spearmanr(values, [rows[c][outcome] for c in cases])
        out[name] = {"spearman": float(result.statistic), "p": float(result.pvalue), "cases": len(cases)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preprocessed", type=Path, required=True, help="the preprocessed dataset folder")
    parser.add_argument("--results", type=Path, required=True, help="label_suggestion_benchmark's results.json")
    parser.add_argument("--trainer", default="LabeledOnlyTrainer")
    parser.add_argument("--method", default="affine_deformable", help="the registrations to read")
    parser.add_argument("-c", "--configuration", default="2d")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    from benchmarks.machine_info import machine_info
    from cctrnet.preprocessing.case_storage import list_preprocessed_cases
    from cctrnet.registration.pair_store import PairStore, registration_folder
    from cctrnet.registration.volumes import load_label
    from cctrnet.utilities.file_io import load_json, save_json

    data_folder = args.preprocessed / args.configuration
    cases = sorted(list_preprocessed_cases(data_folder))
    if not args.results.is_file():
        raise SystemExit(f"{args.results}: no such file; run benchmarks/label_suggestion_benchmark.py first")
    results = load_json(args.results)
    trained, seeds = mean_test_dice(results, args.trainer)
    store = PairStore(registration_folder(args.preprocessed, args.configuration, args.method))
    central = centralities(store, cases, args.method)
    truths = {case: load_label(data_folder, case)[0] for case in cases}  # read once, used by every atlas
    rows: dict[str, dict[str, Any]] = {}
    for case in cases:
        rows[case] = {**case_properties(data_folder, case, truths[case]), **central[case],
                      "transfer_dice": transfer_dice(data_folder, store, case, truths),
                      "test_dice": trained.get(case)}
    table = correlations(rows)
    columns = sorted({k for row in rows.values() for k in row if k != "test_dice"})
    print("| case | " + " | ".join(columns) + " | test Dice (mean over seeds) |")
    print("|---" * (len(columns) + 2) + "|")
    for case, row in rows.items():
        cells = [f"{row[k]:.3g}" if isinstance(row.get(k), float) else str(row.get(k, "")) for k in columns]
        dice = "" if row["test_dice"] is None else f"{row['test_dice']:.1f}"
        print(f"| {case} | " + " | ".join(cells) + f" | {dice} |")
    print(f"\nSpearman correlation with the test Dice (mean over training seeds {seeds}) over the {len(trained)} "
          "trained cases:")
    print("| property | Spearman | p |\n|---|---|---|")
    for name, value in sorted(table.items(), key=lambda item: -abs(item[1]["spearman"])):
        print(f"| {name} | {value['spearman']:+.2f} | {value['p']:.3f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_json({"date": datetime.date.today().isoformat(), "machine": machine_info(), "trainer": args.trainer,
               "method": args.method, "training_seeds": seeds, "cases": rows, "correlations": table}, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
