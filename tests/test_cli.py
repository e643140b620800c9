"""Command-line entry points: --help without heavy imports, and the first command end to end."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cctrnet.utilities.file_io import load_json

ENTRY_MODULES = ["cctrnet.cli.plan_and_preprocess", "dataset_conversion.phantom", "dataset_conversion.acdc",
                 "dataset_conversion.synapse"]
for optional in ("cctrnet.cli.register", "cctrnet.cli.evaluate", "cctrnet.cli.train", "cctrnet.cli.predict"):
    if (Path(__file__).parents[1] / (optional.replace(".", "/") + ".py")).exists():
        ENTRY_MODULES.append(optional)


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_help_answers_without_importing_torch_or_simpleitk(module):
    code = (f"import sys; sys.argv = ['x', '--help']\nimport {module} as m\n"
            "try:\n    m.main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = [n for n in ('torch', 'SimpleITK', 'dynamic_network_architectures') if n in sys.modules]\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
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
