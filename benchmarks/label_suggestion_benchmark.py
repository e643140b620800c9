"""Does ``cctr_suggest_labels`` choose better labeled cases than chance? (issue 15, "Measure the benefit")

For each trainer (LS = LabeledOnlyTrainer, CCT-R) and each number of labeled cases (1, 2), one run labels the
suggested cases and ``--draws`` runs label cases drawn at random (seeded, each draw its own seed, the same draws
for every trainer); every run is evaluated on the test cases (``--val --val-set test``: imagesTs), which is
right here because nothing is chosen on these numbers, they only report. The script is resumable: each
finished run's test Dice is stored in ``OUTPUT/results.json`` at once, and a rerun skips it (a run stopped
part-way is continued from its checkpoint). It prints, per (trainer, N), the suggested run's Dice and the
random runs' mean, standard deviation and range.

    python benchmarks/label_suggestion_benchmark.py -d 1 --iterations 2000 --draws 5 -o bench_suggest
    python benchmarks/label_suggestion_benchmark.py -d 9 --iterations 2 --draws 1 --trainers LabeledOnlyTrainer \
        --labeled 1 -o /tmp/smoke   # smoke run

The dataset must be preprocessed and registered (``cctr_plan_and_preprocess -d ID``); the model folders go to
``$cctr_results`` under their usual names (``<trainer>__labeled<N>__seed<S>``, the seed numbering the draw), so
an existing folder of the same name is reused when finished.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: seeds of the random draws start here, away from the default seed 0 of ordinary runs
DRAW_SEED_BASE = 1000
SUGGESTED_SEED = 999


def _test_summary(model_folder: Path) -> Path:
    from cctrnet.training.validation import OUTPUT_SUBFOLDER, TEST_SET

    return model_folder / OUTPUT_SUBFOLDER[TEST_SET] / "summary.json"


def _test_dice(model_folder: Path) -> float:
    from cctrnet.utilities.file_io import load_json

    return float(load_json(_test_summary(model_folder))["mean"]["dice_percent"])


def _run(dataset: str, trainer: str, cases: list[str], seed: int, iterations: int, overrides: dict[str, Any]) -> float:
    from cctrnet.training.run_setup import prepare_run
    from cctrnet.training.train_run import model_folder_of, train
    from cctrnet.training.validation import TEST_SET

    setup = prepare_run(dataset, None, cases, seed)
    folder = model_folder_of(setup.dataset_name, trainer, len(cases), seed)
    if _test_summary(folder).is_file() and (folder / "checkpoint_final.pth").is_file():
        return _test_dice(folder)
    resume = (folder / "checkpoint_latest.pth").is_file() and not (folder / "checkpoint_final.pth").is_file()
    folder = train(dataset, trainer, labeled_cases=cases, seed=seed, iterations=None if resume else iterations,
                   device_name="auto", overrides=None if resume else overrides, progress=False, validate=True,
                   validation_set=TEST_SET, resume=resume)
    return _test_dice(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--trainers", nargs="+", default=["LabeledOnlyTrainer", "CCTRTrainer"])
    parser.add_argument("--labeled", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--draws", type=int, default=5, help="random choices per (trainer, N) (default 5)")
    parser.add_argument("--iterations", type=int, required=True, help="iterations per run (the benchmark budget)")
    parser.add_argument("--set", nargs="*", default=["num_workers=0"], metavar="KEY=VALUE")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    from cctrnet.dataset.raw_dataset import find_dataset_folder
    from cctrnet.paths import preprocessed_folder
    from cctrnet.preprocessing.case_storage import list_preprocessed_cases
    from cctrnet.registration.label_suggestion import suggest_labels
    from cctrnet.registration.stage import labeled_cases_of
    from cctrnet.training.config import parse_set_arguments
    from cctrnet.utilities.file_io import load_json, save_json

    overrides = parse_set_arguments(args.set)
    folder = find_dataset_folder(args.dataset, preprocessed_folder())
    with_labels = labeled_cases_of(folder / "2d", list_preprocessed_cases(folder / "2d"))
    results_path = args.output / "results.json"
    results: dict[str, Any] = load_json(results_path) if results_path.is_file() else {}
    for num_labeled in args.labeled:
        suggested = suggest_labels(folder, num_labeled)["ids"]
        unusable = [c for c in suggested if c not in with_labels]
        if unusable:
            print(f"suggested {unusable} have no label in {folder / '2d'}: this dataset cannot measure the choice",
                  file=sys.stderr)
            return 1
        draws = [sorted(np.random.default_rng(DRAW_SEED_BASE + k).choice(with_labels, num_labeled, replace=False).tolist())
                 for k in range(args.draws)]
        for trainer in args.trainers:
            jobs = [("suggested", suggested, SUGGESTED_SEED)] + [(f"random{k}", d, DRAW_SEED_BASE + k)
                                                                 for k, d in enumerate(draws)]
            for name, cases, seed in jobs:
                key = f"{trainer}/{num_labeled}/{name}"
                if key in results:
                    continue
                dice = _run(args.dataset, trainer, cases, seed, args.iterations, overrides)
                results[key] = {"cases": cases, "seed": seed, "test_dice_percent": dice, "iterations": args.iterations}
                save_json(results, results_path)
                print(f"{key}: {cases} -> test Dice {dice:.1f} %", flush=True)
    print(f"\n{'trainer':<20} {'N':>2} {'suggested':>10} {'random mean':>12} {'std':>6} {'min':>6} {'max':>6}")
    for trainer in args.trainers:
        for num_labeled in args.labeled:
            random = [v["test_dice_percent"] for k, v in results.items()
                      if k.startswith(f"{trainer}/{num_labeled}/random")]
            chosen = results.get(f"{trainer}/{num_labeled}/suggested", {}).get("test_dice_percent")
            if random and chosen is not None:
                print(f"{trainer:<20} {num_labeled:>2} {chosen:>10.1f} {np.mean(random):>12.1f} {np.std(random):>6.1f} "
                      f"{min(random):>6.1f} {max(random):>6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
