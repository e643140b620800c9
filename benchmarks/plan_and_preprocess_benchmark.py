"""Plan-and-preprocess time per case: ``cctr_plan_and_preprocess`` next to nnU-Net v2's
``nnUNetv2_plan_and_preprocess -c 2d`` on the same generated phantom dataset, in one run.

nnU-Net v2 runs from its own virtual environment (see benchmarks/nnunet_env.sh); it is not a dependency
of cctrnet. Run from the repository root: ``python benchmarks/plan_and_preprocess_benchmark.py --help``
(or ``python -m benchmarks.plan_and_preprocess_benchmark``).
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

if __package__ in (None, ""):  # run as a file: make the sibling modules importable as ``benchmarks.*``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.environment import NNUNET_VENV  # noqa: E402
from benchmarks.machine_info import REPOSITORY_ROOT, installed_version, machine_info  # noqa: E402
from benchmarks.timed_command import PhaseMarker, TimedRun, run_timed  # noqa: E402

DEFAULT_RESULTS_FOLDER = REPOSITORY_ROOT / "benchmarks" / "results"
NNUNET_EXECUTABLE = "nnUNetv2_plan_and_preprocess"
CCTR_EXECUTABLE = "cctr_plan_and_preprocess"


@dataclass(frozen=True)
class Tool:
    """One timed command line: which family it belongs to and the arguments beyond the shared ones."""
    name: str
    family: str  # "cctrnet" or "nnunet"
    extra_arguments: tuple[str, ...]
    description: str


TOOLS = {
    "cctrnet": Tool("cctrnet", "cctrnet", (), "cctr_plan_and_preprocess --device cpu (integrity check always on)"),
    "cctrnet_native_spacing": Tool(
        "cctrnet_native_spacing", "cctrnet", ("--cpu-step-seconds", "1e6"),
        "cctrnet with an unlimited CPU step budget, so it keeps the median spacing like nnU-Net's 2d"),
    "nnunet": Tool("nnunet", "nnunet", ("--verify_dataset_integrity",),
                   "nnUNetv2_plan_and_preprocess -c 2d --verify_dataset_integrity"),
    "nnunet_no_integrity": Tool("nnunet_no_integrity", "nnunet", (),
                                "nnUNetv2_plan_and_preprocess -c 2d without the integrity check"),
}
# the like-for-like pair; the other two cost several minutes more on a 2-core machine (--tools to add them)
DEFAULT_TOOLS = ("cctrnet", "nnunet")

# (numerator, denominator): nnU-Net over cctrnet; the first is the like-for-like one (both check integrity)
RATIOS = (("nnunet", "cctrnet"), ("nnunet_no_integrity", "cctrnet"), ("nnunet", "cctrnet_native_spacing"))

MARKERS = {
    "cctrnet": (PhaseMarker("integrity_and_fingerprint", r"training case\(s\):"),
                PhaseMarker("plan", r"plan written to"), PhaseMarker("preprocess", None)),
    "nnunet": (PhaseMarker("integrity_and_fingerprint", r"^Experiment planning"),
               PhaseMarker("plan", r"^Plans were saved to"), PhaseMarker("preprocess", None)),
}
PLANS_FILE = {"cctrnet": "plans.json", "nnunet": "nnUNetPlans.json"}


@dataclass(frozen=True)
class BenchmarkSettings:
    num_processes: int = 2
    repetitions: int = 2
    dataset_id: int = 1
    num_training: int = 20
    seed: int = 0
    timeout_seconds: float = 900.0
    tools: tuple[str, ...] = DEFAULT_TOOLS


class BenchmarkError(RuntimeError):
    """The benchmark cannot start; the message says what is missing."""


def nnunet_executable(venv: Path) -> Path:
    """The venv's own ``nnUNetv2_plan_and_preprocess``; never one found on PATH."""
    executable = venv / "bin" / NNUNET_EXECUTABLE
    if not executable.is_file():
        raise BenchmarkError(f"{executable} not found: create nnU-Net's environment first with "
                             f"'bash benchmarks/nnunet_env.sh' (or pass --nnunet-venv)")
    return executable


def cctr_command_prefix() -> list[str]:
    """The installed entry point next to this interpreter (like the nnU-Net one), else ``python -m``."""
    script = Path(sys.executable).parent / CCTR_EXECUTABLE
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "cctrnet.cli.plan_and_preprocess"]


def build_command(tool: Tool, settings: BenchmarkSettings, nnunet_bin: Path) -> list[str]:
    n = str(settings.num_processes)
    if tool.family == "cctrnet":
        return [*cctr_command_prefix(), "-d", str(settings.dataset_id), "-np", n, "--device", "cpu",
                "--no-progress", *tool.extra_arguments]
    # -npfp sets the processes of the integrity check and fingerprint (nnU-Net's default is 8)
    return [str(nnunet_bin), "-d", str(settings.dataset_id), "-c", "2d", "-np", n, "-npfp", n, "--no_pbar",
            *tool.extra_arguments]


def tool_environment(family: str, raw_root: Path, run_folder: Path) -> dict[str, str]:
    """This process's environment with the tool's data folders pointed into ``run_folder``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("cctr_", "nnUNet_"))}
    prefix = "cctr_" if family == "cctrnet" else "nnUNet_"
    env[prefix + "raw"] = str(raw_root)
    env[prefix + "preprocessed"] = str(run_folder / "preprocessed")
    env[prefix + "results"] = str(run_folder / "results")
    return env


def count_preprocessed_cases(family: str, dataset_folder: Path) -> int:
    """Training cases the run wrote for its 2d configuration (one properties file per case)."""
    plans_path = dataset_folder / PLANS_FILE[family]
    if not plans_path.is_file():
        return 0
    from cctrnet.utilities.file_io import load_json

    data_folder = dataset_folder / load_json(plans_path)["configurations"]["2d"]["data_identifier"]
    pattern = "*_data.npy" if family == "cctrnet" else "*.pkl"
    return len(list(data_folder.glob(pattern)))


def plan_summary(family: str, dataset_folder: Path) -> dict[str, Any] | None:
    """The 2d configuration's spacing, patch, batch and network, read from the tool's plans file."""
    from cctrnet.utilities.file_io import load_json

    plans_path = dataset_folder / PLANS_FILE[family]
    if not plans_path.is_file():
        return None
    plans = load_json(plans_path)
    c = plans["configurations"]["2d"]
    if family == "cctrnet":
        return {"spacing_yx_mm": c["spacing_yx"], "patch_size_yx": c["patch_size_yx"],
                "batch_size": c["batch_size"], "labeled_per_batch": c["labeled_per_batch"],
                "median_shape_yx_after_resampling": c["median_shape_yx_after_resampling"],
                "networks": f"A {c['branch_a']['network_class']} {c['branch_a']['kwargs']['features_per_stage']}, "
                            f"B {c['branch_b']['network_class']}",
                "planned_for": plans["planned_for"]["device"]}
    architecture = c["architecture"]
    return {"spacing_yx_mm": c["spacing"], "patch_size_yx": c["patch_size"], "batch_size": c["batch_size"],
            "median_shape_yx_after_resampling": c["median_image_size_in_voxels"],
            "networks": f"{architecture['network_class_name'].rsplit('.', 1)[-1]} "
                        f"{list(architecture['arch_kwargs']['features_per_stage'])}",
            "configurations_planned": sorted(plans["configurations"])}


def prepare_dataset(work_folder: Path, settings: BenchmarkSettings) -> tuple[Path, Path, str]:
    """Generate the phantom (not timed) and link it into an nnU-Net raw root; returns (cctr raw, nnU-Net raw, name)."""
    from dataset_conversion.phantom import generate_phantom_dataset

    raw_root = work_folder / "raw"
    dataset_folder = generate_phantom_dataset(raw_root, dataset_id=settings.dataset_id,
                                              num_training=settings.num_training, seed=settings.seed,
                                              overwrite=True)
    nnunet_raw_root = work_folder / "nnunet_raw"
    nnunet_raw_root.mkdir(parents=True, exist_ok=True)
    link = nnunet_raw_root / dataset_folder.name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(dataset_folder.resolve(), target_is_directory=True)
    return raw_root, nnunet_raw_root, dataset_folder.name


def run_order(tools: Sequence[str], repetition: int) -> list[str]:
    """Tools rotated by one place per repetition, so slow drifts in the machine's load hit every tool alike."""
    shift = repetition % len(tools)
    return list(tools[shift:]) + list(tools[:shift])


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise_tool(name: str, runs: list[dict[str, Any]], num_cases: int) -> dict[str, Any]:
    """Medians over the successful runs of one tool."""
    ok = [r for r in runs if r["succeeded"]]
    walls = [r["wall_seconds"] for r in ok]
    phases: dict[str, float | None] = {}
    for phase in (ok[0]["phase_seconds"] if ok else {}):
        phases[phase] = _median([r["phase_seconds"][phase] for r in ok if r["phase_seconds"][phase] is not None])
    median_wall = _median(walls)
    return {"tool": name, "runs": len(runs), "successful_runs": len(ok),
            "median_wall_seconds": median_wall, "min_wall_seconds": min(walls) if walls else None,
            "max_wall_seconds": max(walls) if walls else None,
            "median_seconds_per_case": median_wall / num_cases if median_wall is not None else None,
            "median_cpu_seconds": _median([r["cpu_seconds"] for r in ok]),
            "median_phase_seconds": phases}


def ratios(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """nnU-Net / cctrnet of median wall time and of median CPU time, for each pair that both ran."""
    found = []
    for numerator, denominator in RATIOS:
        a, b = summaries.get(numerator), summaries.get(denominator)
        if not a or not b or not a["successful_runs"] or not b["successful_runs"]:
            continue
        found.append({"numerator": numerator, "denominator": denominator,
                      "wall_time_ratio": a["median_wall_seconds"] / b["median_wall_seconds"],
                      "cpu_time_ratio": (a["median_cpu_seconds"] / b["median_cpu_seconds"]
                                         if b["median_cpu_seconds"] else None)})
    return found


def run_benchmark(settings: BenchmarkSettings, nnunet_venv: Path, work_folder: Path) -> dict[str, Any]:
    """Generate the data, run every tool ``settings.repetitions`` times interleaved, and return the results."""
    from tqdm import tqdm

    unknown = [t for t in settings.tools if t not in TOOLS]
    if unknown:
        raise BenchmarkError(f"unknown tool(s) {unknown}; known: {sorted(TOOLS)}")
    uses_nnunet = any(TOOLS[t].family == "nnunet" for t in settings.tools)
    nnunet_bin = nnunet_executable(nnunet_venv) if uses_nnunet else Path()
    nnunet_python = str(nnunet_venv / "bin" / "python")
    info = machine_info()
    info["nnunetv2"] = installed_version("nnunetv2", nnunet_python) if uses_nnunet else None
    info["nnunetv2_in_main_environment"] = installed_version("nnunetv2")
    info["nnunet_venv"] = str(nnunet_venv)

    print(f"generating the phantom dataset ({settings.num_training} training cases) in {work_folder} (not timed)")
    raw_root, nnunet_raw_root, dataset_name = prepare_dataset(work_folder, settings)
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in settings.tools}
    plans: dict[str, Any] = {}
    total = settings.repetitions * len(settings.tools)
    with tqdm(total=total, desc="timed runs", unit="run") as bar:
        for repetition in range(settings.repetitions):
            for name in run_order(settings.tools, repetition):
                tool = TOOLS[name]
                run_folder = work_folder / "runs" / f"{name}_rep{repetition}"
                if run_folder.exists():
                    shutil.rmtree(run_folder)  # cctrnet skips up-to-date cases: every run starts empty
                tool_raw = raw_root if tool.family == "cctrnet" else nnunet_raw_root
                bar.set_postfix_str(f"repetition {repetition + 1}: {name}")
                timed: TimedRun = run_timed(build_command(tool, settings, nnunet_bin),
                                            tool_environment(tool.family, tool_raw, run_folder),
                                            MARKERS[tool.family], run_folder / "log.txt", settings.timeout_seconds)
                dataset_folder = run_folder / "preprocessed" / dataset_name
                cases = count_preprocessed_cases(tool.family, dataset_folder)
                record = asdict(timed)
                record.update(repetition=repetition, preprocessed_cases=cases,
                              succeeded=timed.succeeded and cases == settings.num_training)
                if not record["succeeded"]:
                    tqdm.write(f"{name} failed (exit code {timed.return_code}, {cases} of {settings.num_training} "
                               f"cases written); log: {timed.log_path}\n  " + "\n  ".join(timed.output_tail[-15:]))
                else:
                    record["output_tail"] = []
                    if name not in plans:
                        plans[name] = plan_summary(tool.family, dataset_folder)
                runs[name].append(record)
                bar.update(1)
    summaries = {name: summarise_tool(name, runs[name], settings.num_training) for name in settings.tools}
    loads = [r["load_average_1min_before"] for tool_runs in runs.values() for r in tool_runs]
    return {"benchmark": "plan_and_preprocess", "settings": asdict(settings), "dataset": dataset_name,
            "tools": {name: {"description": TOOLS[name].description,
                             "command": runs[name][0]["command"] if runs[name] else None} for name in settings.tools},
            "machine": info, "load_average_1min_before_runs": {"min": min(loads), "max": max(loads)},
            "summaries": summaries, "ratios": ratios(summaries), "plans_2d": plans, "runs": runs}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(result: dict[str, Any]) -> str:
    """A Markdown table of the medians, the ratios, the two plans and a note on noise."""
    settings = result["settings"]
    lines = [f"plan and preprocess, {result['dataset']}: {settings['num_training']} training cases, "
             f"-np {settings['num_processes']}, {settings['repetitions']} run(s) per tool, medians",
             "", "| tool | ok runs | wall s (min-max) | s per case | CPU s | fingerprint+integrity s | plan s | "
                 "preprocess s |", "|---|---|---|---|---|---|---|---|"]
    for name, s in result["summaries"].items():
        phases = s["median_phase_seconds"]
        lines.append(f"| {name} | {s['successful_runs']}/{s['runs']} | {_fmt(s['median_wall_seconds'])} "
                     f"({_fmt(s['min_wall_seconds'])}-{_fmt(s['max_wall_seconds'])}) | "
                     f"{_fmt(s['median_seconds_per_case'], 2)} | {_fmt(s['median_cpu_seconds'])} | "
                     f"{_fmt(phases.get('integrity_and_fingerprint'))} | {_fmt(phases.get('plan'))} | "
                     f"{_fmt(phases.get('preprocess'))} |")
    lines.append("")
    for r in result["ratios"]:
        lines.append(f"ratio {r['numerator']} / {r['denominator']}: wall {r['wall_time_ratio']:.2f}x, "
                     f"CPU {_fmt(r['cpu_time_ratio'], 2)}x")
    if result["plans_2d"]:
        lines += ["", "| plan (2d) | spacing y, x mm | patch | batch | median shape after resampling | networks |",
                  "|---|---|---|---|---|---|"]
        for name, p in result["plans_2d"].items():
            if p:
                spacing = ", ".join(f"{v:.3g}" for v in p["spacing_yx_mm"])
                lines.append(f"| {name} | {spacing} | {p['patch_size_yx']} | {p['batch_size']} | "
                             f"{p['median_shape_yx_after_resampling']} | {p['networks']} |")
    machine = result["machine"]
    load = result["load_average_1min_before_runs"]
    lines += ["", f"machine: {machine['usable_cpu_count']} usable CPU(s) ({machine['cpu_model']}), Python "
                  f"{machine['python']}, torch {machine['torch']}, nnunetv2 {machine.get('nnunetv2')}, cctrnet "
                  f"{machine['cctrnet_git']['commit']}{' (uncommitted changes)' if machine['cctrnet_git']['uncommitted_changes'] else ''}",
              f"noise: 1-minute load average before the runs was {load['min']:.1f}-{load['max']:.1f} on "
              f"{machine['usable_cpu_count']} CPU(s); other processes share the CPUs, so wall times are noisy "
              f"(compare min-max); CPU seconds are less affected by sharing than wall seconds"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-np", "--num-processes", type=int, default=BenchmarkSettings.num_processes,
                        help="worker processes for both tools (nnU-Net: -np and -npfp)")
    parser.add_argument("-r", "--repetitions", type=int, default=BenchmarkSettings.repetitions,
                        help="timed runs of each tool, interleaved")
    parser.add_argument("--tools", nargs="+", choices=sorted(TOOLS), default=list(DEFAULT_TOOLS),
                        help="command lines to time")
    parser.add_argument("--num-training", type=int, default=BenchmarkSettings.num_training,
                        help="training cases of the generated phantom")
    parser.add_argument("--dataset-id", type=int, default=BenchmarkSettings.dataset_id)
    parser.add_argument("--seed", type=int, default=BenchmarkSettings.seed, help="phantom seed")
    parser.add_argument("--timeout", type=float, default=BenchmarkSettings.timeout_seconds,
                        help="seconds after which one run is stopped and counted as failed")
    parser.add_argument("--nnunet-venv", type=Path, default=NNUNET_VENV,
                        help="nnU-Net's own virtual environment (env var CCTR_BENCH_NNUNET_VENV)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for the data and the runs (default: a new temporary folder)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work folder (logs, plans, data)")
    parser.add_argument("--output", type=Path, default=None,
                        help="result JSON (default: benchmarks/results/plan_and_preprocess_<date>.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num_processes < 1 or args.repetitions < 1 or args.num_training < 1:
        print("error: --num-processes, --repetitions and --num-training must be at least 1", file=sys.stderr)
        return 2
    settings = BenchmarkSettings(num_processes=args.num_processes, repetitions=args.repetitions,
                                 dataset_id=args.dataset_id, num_training=args.num_training, seed=args.seed,
                                 timeout_seconds=args.timeout, tools=tuple(dict.fromkeys(args.tools)))
    work_folder = args.work_dir or Path(tempfile.mkdtemp(prefix="cctr_bench_plan_and_preprocess_"))
    try:
        result = run_benchmark(settings, args.nnunet_venv.expanduser(), work_folder)
    except BenchmarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        if not args.keep_work and args.work_dir is None:
            shutil.rmtree(work_folder, ignore_errors=True)
    from cctrnet.utilities.file_io import save_json

    stamp = datetime.datetime.now().strftime("%Y%m%d_%H%M%S")
    output = args.output or DEFAULT_RESULTS_FOLDER / f"plan_and_preprocess_{stamp}.json"
    save_json(result, output)
    print("\n" + format_report(result) + f"\n\nresults: {output}")
    if args.keep_work or args.work_dir is not None:
        print(f"work folder kept: {work_folder}")
    failed = [name for name, s in result["summaries"].items() if s["successful_runs"] < s["runs"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
