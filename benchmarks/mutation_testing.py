"""Mutation testing of the core modules: do the tests notice a realistic one-line bug?

Each mutant changes one token of one line (an operator swap, an off-by-one constant, ``min``/``max`` or
``True``/``False`` exchanged, a dropped ``.detach()``, the first two arguments of a call swapped), on a scratch copy of
the tree under ``--scratch`` (never in the working tree). The tests related to the mutated module then run with a
timeout; a mutant is *killed* when they fail, *survived* when they pass, *timeout* when they run past it (counted as
killed: a hang is noticed too). Mutants are enumerated with ``tokenize`` (operators inside strings and comments are
never touched) and a seeded sample is drawn per module, so two runs with the same seed try the same mutants.

    python benchmarks/mutation_testing.py --sample 30 --seed 0 --tests-ref 9e8112a   # "before": old tests
    python benchmarks/mutation_testing.py --rerun benchmarks/results/mutation_before.json  # survivors, current tests

``--tests-ref REF`` takes ``tests/`` from a git commit (the suite before new tests); ``--rerun FILE`` runs again the
survivors recorded in FILE with the working tree's tests. One process at a time; ``OMP_NUM_THREADS=1``.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import tokenize
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# module -> the test files that exercise it (only these run for its mutants)
MODULES: dict[str, list[str]] = {
    "cctrnet/training/losses/supervised_contrastive.py": ["tests/test_losses.py"],
    "cctrnet/training/losses/registration_positives.py": ["tests/test_losses.py"],
    "cctrnet/training/losses/dice_ce.py": ["tests/test_losses.py"],
    "cctrnet/training/losses/cross_pseudo_supervision.py": ["tests/test_losses.py"],
    "cctrnet/training/losses/registration_supervision.py": ["tests/test_losses.py"],
    "cctrnet/training/memory_bank.py": ["tests/test_memory_bank.py"],
    "cctrnet/registration/point_mapping.py": ["tests/test_point_mapping.py", "tests/test_registration.py"],
    "cctrnet/registration/brs.py": ["tests/test_registration.py"],
    "cctrnet/registration/label_fusion.py": ["tests/test_registered_label_options.py"],
    "cctrnet/registration/velocity_field.py": ["tests/test_deformable_registration.py"],
    "cctrnet/preprocessing/preprocessor.py": ["tests/test_preprocessing.py"],
    "cctrnet/preprocessing/revert.py": ["tests/test_export_geometry.py", "tests/test_preprocessing.py"],
    "cctrnet/preprocessing/normalization.py": ["tests/test_preprocessing.py"],
    "cctrnet/dataset/integrity.py": ["tests/test_integrity.py", "tests/test_fuzzed_input.py"],
    "cctrnet/inference/export.py": ["tests/test_export_geometry.py", "tests/test_inference.py"],
    "cctrnet/evaluation/metrics.py": ["tests/test_evaluation.py"],
    # the trainers: the tests of tests/test_training.py that train them (the whole file takes minutes per mutant)
    "cctrnet/training/trainers/cross_teaching.py": [
        "tests/test_training.py::test_short_run_lowers_the_loss_and_writes_the_model_folder[LabeledOnlyTrainer]",
        "tests/test_training.py::test_short_run_lowers_the_loss_and_writes_the_model_folder[CPSTrainer]",
        "tests/test_training.py::test_short_run_lowers_the_loss_and_writes_the_model_folder[CTSTrainer]",
        "tests/test_training.py::test_short_run_lowers_the_loss_and_writes_the_model_folder[CCTRTrainer]",
        "tests/test_training.py::test_each_cross_teaching_branch_is_taught_by_the_other",
        "tests/test_training.py::test_fused_registered_labels_and_the_fading_weight_train",
        "tests/test_training.py::test_resume_continues_exactly"],
    "cctrnet/training/losses/masked_consistency.py": ["tests/test_losses.py"],
    "cctrnet/training/trainers/mean_teacher.py": [
        "tests/test_training.py::test_short_run_lowers_the_loss_and_writes_the_model_folder[UAMTTrainer]",
        "tests/test_training.py::test_the_mean_teacher_moves_towards_the_student",
        "tests/test_training.py::test_channels_last_training_gives_the_losses_of_contiguous_tensors[UAMTTrainer]"],
}

SWAPS = {"+": "-", "-": "+", "*": "/", "/": "*", "<": "<=", "<=": "<", ">": ">=", ">=": ">", "==": "!=",
         "!=": "==", "//": "/", "+=": "-=", "-=": "+=", "and": "or", "or": "and", "True": "False", "False": "True",
         "min": "max", "max": "min", "is": "is not"}


@dataclass
class Mutant:
    module: str
    line: int
    column: int
    kind: str
    original: str
    mutated: str
    status: str = "pending"
    seconds: float = 0.0
    killed_by: str = ""


def enumerate_mutants(module: str) -> list[Mutant]:
    source = (REPO / module).read_text()
    lines = source.splitlines()
    mutants: list[Mutant] = []
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    string_rows = {r for t in tokens if t.type == tokenize.STRING for r in range(t.start[0], t.end[0] + 1)}
    for index, token in enumerate(tokens):
        row, col = token.start
        if row > len(lines):
            continue
        line = lines[row - 1]
        if line.lstrip().startswith(("def ", "class ", "@", "import ", "from ", "raise ")) or "->" in line[:col]:
            continue
        text = token.string
        replacement = None
        kind = ""
        if token.type == tokenize.OP and text in SWAPS:
            previous = tokens[index - 1]
            if text in "+-" and previous.type == tokenize.OP and previous.string in "(,=[:":
                continue  # a sign, not a binary operator
            if text == "*" and previous.type == tokenize.OP and previous.string in "(,":
                continue  # *args
            replacement, kind = SWAPS[text], "operator"
        elif token.type == tokenize.NAME and text in SWAPS:
            replacement, kind = SWAPS[text], "name"
        elif token.type == tokenize.NUMBER and re.fullmatch(r"[0-9]", text):
            replacement, kind = str(int(text) + 1), "off-by-one"
        elif token.type == tokenize.NAME and text == "detach" and line[token.end[1]:].startswith("()") \
                and line[col - 1] == ".":
            replacement, kind = None, "dropped detach"
            mutated = line[:col - 1] + line[token.end[1] + 2:]
            mutants.append(Mutant(module, row, col, kind, line.strip(), mutated.strip()))
            continue
        if replacement is None or token.start[0] != token.end[0]:
            continue
        mutated = line[:col] + replacement + line[token.end[1]:]
        mutants.append(Mutant(module, row, col, kind, line.strip(), mutated.strip()))
    mutants.extend(m for m in _argument_swaps(module, lines) if m.line not in string_rows)
    return mutants


_CALL = re.compile(r"(\w+)\(([A-Za-z_][\w.\[\]]*), ([A-Za-z_][\w.\[\]]*)([,)])")


def _argument_swaps(module: str, lines: list[str]) -> list[Mutant]:
    out = []
    for row, line in enumerate(lines, start=1):
        stripped = line.lstrip()
        if stripped.startswith(("def ", "class ", "#", "@", '"', "'")):
            continue
        for match in _CALL.finditer(line):
            if match.group(1) in ("isinstance", "getattr", "setattr", "print", "range", "zip", "enumerate", "dict"):
                continue
            a, b = match.group(2), match.group(3)
            if a == b:
                continue
            mutated = line[:match.start(2)] + b + ", " + a + line[match.end(3):]
            out.append(Mutant(module, row, match.start(2), "swapped arguments", line.strip(), mutated.strip()))
    return out


def apply(tree: Path, mutant: Mutant) -> str:
    path = tree / mutant.module
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    old = lines[mutant.line - 1]
    indent = old[: len(old) - len(old.lstrip())]
    lines[mutant.line - 1] = indent + mutant.mutated + ("\n" if old.endswith("\n") else "")
    path.write_text("".join(lines))
    return original


def prepare_tree(scratch: Path, tests_ref: str | None) -> Path:
    tree = scratch / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".hypothesis", "results", ".venv", "*.egg-info")
    shutil.copytree(REPO, tree, ignore=ignore)
    if tests_ref:
        shutil.rmtree(tree / "tests")
        archive = subprocess.run(["git", "-C", str(REPO), "archive", tests_ref, "tests"], capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def run_tests(tree: Path, test_files: list[str], timeout_s: float) -> tuple[str, float, str]:
    files = [f for f in test_files if (tree / f.split("::")[0]).exists()]  # a file or a test's node id
    if not files:
        return "no tests", 0.0, ""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    start = time.perf_counter()
    try:
        result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *files],
                                cwd=tree, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start, ""
    failed = re.findall(r"^FAILED (\S+)", result.stdout, re.M)
    errors = re.findall(r"^ERROR (\S+)", result.stdout, re.M)
    status = "survived" if result.returncode == 0 else "killed"
    return status, time.perf_counter() - start, (failed or errors or [""])[0]


def compiles(tree: Path, module: str) -> bool:
    return subprocess.run([sys.executable, "-m", "py_compile", str(tree / module)], capture_output=True).returncode == 0


def run(mutants: list[Mutant], tree: Path, timeout_s: float, out: Path, meta: dict) -> None:
    for number, mutant in enumerate(mutants, start=1):
        original = apply(tree, mutant)
        try:
            if not compiles(tree, mutant.module):
                mutant.status = "invalid"
            else:
                mutant.status, mutant.seconds, mutant.killed_by = run_tests(tree, MODULES[mutant.module], timeout_s)
        finally:
            (tree / mutant.module).write_text(original)
        print(f"[{number}/{len(mutants)}] {mutant.status:8s} {mutant.seconds:5.0f} s  {mutant.module}:{mutant.line} "
              f"{mutant.kind}: {mutant.mutated[:90]}", flush=True)
        write_results(out, mutants, meta)


def write_results(out: Path, mutants: list[Mutant], meta: dict) -> None:
    counted = [m for m in mutants if m.status in ("killed", "survived", "timeout")]
    killed = sum(m.status in ("killed", "timeout") for m in counted)
    summary = {"mutants_run": len(counted), "killed": killed, "survived": len(counted) - killed,
               "survival_rate": round((len(counted) - killed) / len(counted), 3) if counted else None,
               "invalid": sum(m.status == "invalid" for m in mutants)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps({**meta, "summary": summary, "mutants": [asdict(m) for m in mutants]}, indent=1))
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=3, help="mutants drawn per module (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modules", nargs="*", default=None, help="a subset of the modules (paths)")
    parser.add_argument("--tests-ref", default=None, help="git commit whose tests/ to run (default: working tree)")
    parser.add_argument("--rerun", type=Path, default=None, help="rerun the survivors of this results file")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per mutant's test run")
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/cctr_mutation"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "mutation_testing.json")
    parser.add_argument("--list", action="store_true", help="only count the mutants per module")
    args = parser.parse_args(argv)

    if args.rerun:
        previous = json.loads(args.rerun.read_text())
        mutants = [Mutant(**{**m, "status": "pending", "seconds": 0.0, "killed_by": ""})
                   for m in previous["mutants"] if m["status"] == "survived"]
    else:
        rng = random.Random(args.seed)
        mutants = []
        for module in args.modules or list(MODULES):
            candidates = enumerate_mutants(module)
            if args.list:
                print(f"{len(candidates):5d}  {module}")
                continue
            mutants.extend(rng.sample(candidates, min(args.sample, len(candidates))))
        if args.list:
            return 0
    tree = prepare_tree(args.scratch, args.tests_ref)
    meta = {"date": time.strftime("%Y-%m-%d"), "seed": args.seed, "sample_per_module": args.sample,
            "tests_ref": args.tests_ref or "working tree", "rerun_of": str(args.rerun) if args.rerun else None,
            "timeout_s": args.timeout}
    run(mutants, tree, args.timeout, args.out, meta)
    summary = json.loads(args.out.read_text())["summary"]
    print(f"{summary['killed']} killed, {summary['survived']} survived of {summary['mutants_run']} "
          f"(survival rate {summary['survival_rate']}); {summary['invalid']} invalid; written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
