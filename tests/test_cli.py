"""Command-line entry points: --help without heavy imports, and the first command end to end."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cctrnet.utilities.file_io import load_json

SETUP_PY = Path(__file__).parents[1] / "setup.py"
# every console script of setup.py: "cctr_train=cctrnet.cli.train:main" -> ("cctr_train", "cctrnet.cli.train")
ENTRY_POINTS = re.findall(r'"(cctr_\w+)=([\w.]+):main"', SETUP_PY.read_text())
HEAVY = ("torch", "SimpleITK", "matplotlib", "dynamic_network_architectures")


def test_every_console_script_is_found():
    assert len(ENTRY_POINTS) >= 9 and ("cctr_train", "cctrnet.cli.train") in ENTRY_POINTS


@pytest.mark.parametrize("script, module", ENTRY_POINTS)
def test_help_and_argument_errors_answer_before_heavy_imports(script, module, tmp_path):
    """--help, an unknown option (and for cctr_train a dataset that does not exist) leave torch unimported."""
    extra = "assert m.main(['42']) == 1, 'missing dataset'\n" if script == "cctr_train" else ""
    code = (f"import sys\nimport {module} as m\n"
            "for argv, expected in ((['--help'], 0), (['--no-such-option'], 2)):\n"
            "    try:\n        m.main(argv)\n        raise AssertionError(argv)\n"
            "    except SystemExit as e:\n        assert e.code == expected, (argv, e.code)\n"
            f"{extra}heavy = [n for n in {HEAVY!r} if n in sys.modules]\nassert not heavy, heavy")
    env = {**os.environ, "cctr_preprocessed": str(tmp_path / "pre"), "cctr_raw": str(tmp_path / "raw")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout


def test_plan_and_preprocess_on_a_tiny_phantom(cctr_folders):
    from dataset_conversion.phantom import generate_phantom_dataset
    from dataset_conversion.phantom_config import PhantomConfig

    generate_phantom_dataset(cctr_folders["cctr_raw"], dataset_id=3, name="Tiny", num_training=4, num_test=1,
                             num_unlabeled=1, seed=1, config=PhantomConfig.tiny())
    command = [sys.executable, "-m", "cctrnet.cli.plan_and_preprocess", "-d", "3", "-np", "1", "--device", "cpu",
               "--no-progress"]
    first = subprocess.run(command, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    out = cctr_folders["cctr_preprocessed"] / "Dataset003_Tiny"
    plans = load_json(out / "plans.json")
    assert plans["planned_for"]["device"] == "cpu"
    fingerprint = load_json(out / "dataset_fingerprint.json")
    assert fingerprint["num_labeled_cases"] == 3 and fingerprint["num_unlabeled_cases"] == 1
    cases = sorted(p.name for p in (out / "2d").glob("*.json"))
    assert len(cases) == 4
    assert sum(load_json(out / "2d" / c)["is_labeled"] for c in cases) == 3
    second = subprocess.run(command, capture_output=True, text=True)
    assert second.returncode == 0 and "0 case(s), 4 already up to date" in second.stdout
    assert load_json(out / "plans.json") == plans  # identical inputs, identical plan


def _cli(cwd: Path, *words: str) -> subprocess.CompletedProcess:
    module = {"cctr_train": "cctrnet.cli.train", "cctr_predict": "cctrnet.cli.predict",
              "cctr_plan_and_preprocess": "cctrnet.cli.plan_and_preprocess", "cctr_register": "cctrnet.cli.register",
              "cctr_evaluate": "cctrnet.cli.evaluate", "cctr_generate_phantom": "dataset_conversion.phantom"}[words[0]]
    return subprocess.run([sys.executable, "-m", module, *words[1:]], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def suggested_commands(message: str) -> list[list[str]]:
    """Every ``cctr_*`` command line in a message, up to the punctuation that ends it."""
    found = re.findall(r"\bcctr_[a-z_]+(?: +[^\s;(),]+)*", message)
    return [shlex.split(text.rstrip(".")) for text in found if not text.startswith(("cctr_raw", "cctr_preprocessed",
                                                                                      "cctr_results"))]


def test_messages_name_the_folder_they_looked_in_and_how_it_was_chosen(tmp_path, monkeypatch):
    for name in ("cctr_raw", "cctr_preprocessed", "cctr_results"):
        monkeypatch.delenv(name, raising=False)
    unset = _cli(tmp_path, "cctr_train", "42")
    assert unset.returncode == 1
    assert (f"no preprocessed dataset '42' found.\n  looked in: {tmp_path.resolve() / 'cctr_preprocessed'} (the "
            "default ./cctr_preprocessed under the current directory, as the environment variable cctr_preprocessed "
            "is not set)") in unset.stderr
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path / "elsewhere"))
    set_ = _cli(tmp_path, "cctr_train", "42")
    assert f"looked in: {tmp_path.resolve() / 'elsewhere'} (set by the environment variable cctr_preprocessed)" in \
        set_.stderr
    assert "no raw dataset '42'" in set_.stderr and "cctr_raw is not set" in set_.stderr


def test_every_suggested_command_works(cctr_folders, tmp_path):
    """Walks a new user's path: each error suggests a command, the suggestion is run, and the next step works.

    Suggestions are run as printed; where an option only makes the step cheaper (no registration, the
    labeled-only trainer, no worker processes) it is appended after the printed words.
    """
    from cctrnet.cli.predict import build_parser as predict_parser
    from cctrnet.cli.train import build_parser as train_parser
    from cctrnet.utilities.file_io import save_json
    from tests.conftest import write_raw_dataset

    raw = write_raw_dataset(cctr_folders["cctr_raw"], num_labeled=3, num_unlabeled=1)
    parsers = {"cctr_train": train_parser(), "cctr_predict": predict_parser()}

    def suggestions(result: subprocess.CompletedProcess) -> list[list[str]]:
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        commands = suggested_commands(result.stderr)
        for words in commands:  # every suggestion is accepted by its command's own parser
            if words[0] in parsers:
                parsers[words[0]].parse_args(words[1:])
        return commands

    empty = tmp_path / "empty"
    empty.mkdir()
    no_input = _cli(tmp_path, "cctr_predict", "-i", str(empty), "-o", str(tmp_path / "out"))
    assert no_input.returncode == 2 and "no image to predict" in no_input.stderr

    not_prepared = suggestions(_cli(tmp_path, "cctr_train", "1"))
    assert ["cctr_plan_and_preprocess", "-d", "1"] in not_prepared
    cheap = ["-np", "1", "--registration", "none", "--no-progress"]
    assert _cli(tmp_path, "cctr_plan_and_preprocess", "-d", "1", *cheap).returncode == 0

    no_model = suggestions(_cli(tmp_path, "cctr_predict", "-i", str(raw / "imagesTr"), "-o", str(tmp_path / "out")))
    assert ["cctr_train", "1"] in no_model
    plans_path = cctr_folders["cctr_preprocessed"] / raw.name / "plans.json"
    plans = load_json(plans_path)
    plans["configurations"]["2d"]["num_iterations"] = 2  # the plan's length, so the suggestion runs as printed
    save_json(plans, plans_path)
    trained = _cli(tmp_path, "cctr_train", "1", "-tr", "LabeledOnlyTrainer", "--no-progress", "--threads", "1",
                   "--set", "num_workers=0")
    assert trained.returncode == 0, trained.stderr

    finished = suggestions(_cli(tmp_path, "cctr_train", "1", "-tr", "LabeledOnlyTrainer", "--c"))
    extend = next(words for words in finished if "--extend-to" in words)
    assert extend == ["cctr_train", "1", "-tr", "LabeledOnlyTrainer", "--extend-to", "4"]
    extended = _cli(tmp_path, *extend, "--no-progress", "--threads", "1")
    assert extended.returncode == 0, extended.stderr
