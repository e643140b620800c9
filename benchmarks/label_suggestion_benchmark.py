"""Does ``cctr_suggest_labels`` choose better labeled cases than chance? (issue 15, "Measure the benefit")

For each trainer (LS = LabeledOnlyTrainer, CCT-R) and each number of labeled cases (1, 2), the suggested
cases and ``--draws`` choices drawn at random (seeded draws, the same for every trainer) are each trained with
every seed of ``--training-seeds``: every choice sees the same training seeds, so the training noise is not
confounded with the choice, and each choice's number is its mean over those seeds. Every run is evaluated on
the test cases (``--val-set test``: imagesTs), which is right here because nothing is chosen on these numbers,
they only report. The script is resumable: each finished run's test Dice is stored in ``OUTPUT/results.json``
at once, and a rerun skips it (a run stopped part-way is continued from its checkpoint). A case drawn again (or
the suggested case drawn) is the same training, so its finished run's result is recorded for it (``same_run_as``)
instead of a rerun; the draws are still counted one by one, as sampling with replacement. It prints, per
(trainer, N), the suggested cases' mean Dice over the training seeds, the random choices' mean, standard
deviation and range (of their per-choice means), and how many random choices the suggestion beat.

    python benchmarks/label_suggestion_benchmark.py -d 1 --iterations 2000 --draws 5 -o bench_suggest
    python benchmarks/label_suggestion_benchmark.py -d 1 --iterations 300 --draws 20 --choices random14  # one draw
    python benchmarks/label_suggestion_benchmark.py -d 9 --iterations 2 --draws 1 --training-seeds 0 \
        --trainers LabeledOnlyTrainer --labeled 1 -o /tmp/smoke   # smoke run

The dataset must be preprocessed and registered (``cctr_plan_and_preprocess -d ID``); the model folders go to
``OUTPUT/models/<choice>/`` (one results root per choice, so two choices can train with the same seed) under
their usual names (``<dataset>/<trainer>__labeled<N>__seed<S>``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

#: seeds of the random draws (which cases) start here; the training seeds are separate (--training-seeds)
DRAW_SEED_BASE = 1000
DEFAULT_TRAINING_SEEDS = (0, 1, 2)


def same_run(results: dict[str, Any], trainer: str, num_labeled: int, cases: list[str], seed: int,
             iterations: int) -> str | None:
    """The key of a finished run of ``trainer`` with exactly ``cases``, ``seed`` and ``iterations`` (another draw
    of the same cases, or the suggestion), or None."""
    for key, run in results.items():
        parts = key.split("/")
        if (len(parts) == 4 and parts[0] == trainer and parts[1] == str(num_labeled) and "same_run_as" not in run
                and sorted(run["cases"]) == sorted(cases) and run["seed"] == seed
                and run.get("iterations") == iterations):
            return key
    return None


def select_choices(suggested: list[str], draws: list[list[str]], only: list[str] | None
                   ) -> list[tuple[str, list[str]]]:
    """The (name, cases) choices to train: the suggestion and every draw, or only those named in ``only``."""
    choices = [("suggested", suggested)] + [(f"random{k}", d) for k, d in enumerate(draws)]
    if only is None:
        return choices
    unknown = sorted(set(only) - {name for name, _ in choices})
    if unknown:
        raise ValueError(f"--choices {' '.join(unknown)}: no such choice (suggested, random0 ... "
                         f"random{len(draws) - 1})")
    return [(name, cases) for name, cases in choices if name in only]


def _test_summary(model_folder: Path) -> Path:
    from cctrnet.training.validation import OUTPUT_SUBFOLDER, TEST_SET

    return model_folder / OUTPUT_SUBFOLDER[TEST_SET] / "summary.json"


def _test_dice(model_folder: Path) -> float:
    from cctrnet.utilities.file_io import load_json

    return float(load_json(_test_summary(model_folder))["mean"]["dice_percent"])


def _run(dataset: str, trainer: str, cases: list[str], seed: int, iterations: int, overrides: dict[str, Any],
         results_root: Path) -> float:
    import os

    from cctrnet.training.run_setup import prepare_run
    from cctrnet.training.train_run import model_folder_of, train
    from cctrnet.training.validation import TEST_SET

    os.environ["cctr_results"] = str(results_root)  # read by cctrnet.paths at each call
    setup = prepare_run(dataset, None, cases, seed)
    folder = model_folder_of(setup.dataset_name, trainer, len(cases), seed)
    if _test_summary(folder).is_file() and (folder / "checkpoint_final.pth").is_file():
        return _test_dice(folder)
    resume = (folder / "checkpoint_latest.pth").is_file() and not (folder / "checkpoint_final.pth").is_file()
    folder = train(dataset, trainer, labeled_cases=cases, seed=seed, iterations=None if resume else iterations,
                   device_name="auto", overrides=None if resume else overrides, progress=False, validate=True,
                   validation_set=TEST_SET, resume=resume)
    return _test_dice(folder)


def summarise(results: dict[str, Any], trainer: str, num_labeled: int) -> dict[str, Any] | None:
    """Per-choice means over the training seeds finished for every choice, and the suggestion's rank."""
    prefix = f"{trainer}/{num_labeled}/"
    per_choice: dict[str, dict[int, float]] = {}
    for key, value in results.items():
        if key.startswith(prefix) and "/seed" in key:
            choice = key[len(prefix):].split("/seed")[0]
            per_choice.setdefault(choice, {})[int(value["seed"])] = float(value["test_dice_percent"])
    if "suggested" not in per_choice or len(per_choice) < 2:
        return None
    seeds = sorted(set.intersection(*(set(v) for v in per_choice.values())))
    if not seeds:
        return None
    means = {choice: float(np.mean([dice[s] for s in seeds])) for choice, dice in per_choice.items()}
    random = [m for c, m in means.items() if c != "suggested"]
    return {"trainer": trainer, "labeled": num_labeled, "training_seeds": seeds, "suggested": means["suggested"],
            "suggested_per_seed": [per_choice["suggested"][s] for s in seeds],
            "random_means": random, "random_mean": float(np.mean(random)), "random_std": float(np.std(random)),
            "random_min": min(random), "random_max": max(random),
            "random_beaten": sum(means["suggested"] > m for m in random)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-d", "--dataset", required=True)
    parser.add_argument("--trainers", nargs="+", default=["LabeledOnlyTrainer", "CCTRTrainer"])
    parser.add_argument("--labeled", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--draws", type=int, default=5, help="random choices per (trainer, N) (default 5)")
    parser.add_argument("--choices", nargs="+", metavar="NAME",
                        help="train only these choices (suggested, random0, random1, ...), e.g. the draws a "
                             "prediction was written for; default all")
    parser.add_argument("--training-seeds", nargs="+", type=int, default=list(DEFAULT_TRAINING_SEEDS),
                        help="every choice is trained with each of these seeds (default 0 1 2)")
    parser.add_argument("--iterations", type=int, required=True, help="iterations per run (the benchmark budget)")
    parser.add_argument("--set", nargs="*", default=["num_workers=0"], metavar="KEY=VALUE")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    from cctrnet.dataset.labeled_selection import select_labeled_cases
    from cctrnet.dataset.raw_dataset import find_dataset_folder
    from cctrnet.paths import preprocessed_folder
    from cctrnet.preprocessing.case_storage import list_preprocessed_cases
    from cctrnet.registration.label_suggestion import suggest_labels
    from cctrnet.registration.stage import dataset_patients, labeled_cases_of
    from cctrnet.training.config import parse_set_arguments
    from cctrnet.utilities.file_io import load_json, save_json

    overrides = parse_set_arguments(args.set)
    folder = find_dataset_folder(args.dataset, preprocessed_folder())
    with_labels = labeled_cases_of(folder / "2d", list_preprocessed_cases(folder / "2d"))
    patients = dataset_patients(folder)
    results_path = args.output / "results.json"
    results: dict[str, Any] = load_json(results_path) if results_path.is_file() else {}
    for num_labeled in args.labeled:
        suggested = suggest_labels(folder, num_labeled)["ids"]
        unusable = [c for c in suggested if c not in with_labels]
        if unusable:
            print(f"suggested {unusable} have no label in {folder / '2d'}: this dataset cannot measure the choice",
                  file=sys.stderr)
            return 1
        # cctr_train's own rule: N cases, or every frame of N patients when dataset.json declares them
        draws = [select_labeled_cases(with_labels, num_labeled, DRAW_SEED_BASE + k, patients)
                 for k in range(args.draws)]
        for trainer in args.trainers:
            try:
                choices = select_choices(suggested, draws, args.choices)
            except ValueError as error:
                print(error, file=sys.stderr)
                return 2
            for seed in args.training_seeds:  # seed-major: a stopped run leaves every choice with equal seeds
                for name, cases in choices:
                    key = f"{trainer}/{num_labeled}/{name}/seed{seed}"
                    if key in results:
                        continue
                    same = same_run(results, trainer, num_labeled, cases, seed, args.iterations)
                    if same is not None:  # a case drawn again: the same training, so its result, not a rerun
                        results[key] = {**results[same], "same_run_as": same}
                        save_json(results, results_path)
                        print(f"{key}: {cases} -> the same run as {same}", flush=True)
                        continue
                    dice = _run(args.dataset, trainer, cases, seed, args.iterations, overrides,
                                args.output / "models" / name)
                    results[key] = {"cases": cases, "seed": seed, "test_dice_percent": dice,
                                    "iterations": args.iterations}
                    save_json(results, results_path)
                    print(f"{key}: {cases} -> test Dice {dice:.1f} %", flush=True)
    print(f"\n{'trainer':<20} {'N':>2} {'seeds':>5} {'suggested':>10} {'random mean':>12} {'std':>6} {'min':>6} "
          f"{'max':>6} {'beaten':>7}")
    summaries = []
    for trainer in args.trainers:
        for num_labeled in args.labeled:
            summary = summarise(results, trainer, num_labeled)
            if summary is None:
                continue
            summaries.append(summary)
            print(f"{trainer:<20} {num_labeled:>2} {len(summary['training_seeds']):>5} {summary['suggested']:>10.1f} "
                  f"{summary['random_mean']:>12.1f} {summary['random_std']:>6.1f} {summary['random_min']:>6.1f} "
                  f"{summary['random_max']:>6.1f} {summary['random_beaten']:>3}/{len(summary['random_means'])}")
    save_json({"iterations": args.iterations, "training_seeds": args.training_seeds, "draws": args.draws,
               "summaries": summaries}, args.output / "summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
