"""cctr_report: a tiny trained model gives a page with every section and only embedded images; a folder
without registration, a one-branch run, a missing log or a run in progress give a page naming what is missing."""
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from cctrnet.planning.planner import DeviceSettings, PlannerSettings

SMALL_CPU_PLAN = PlannerSettings(cpu=DeviceSettings(8, 32, 4, 4, 20, (1, 1, 1, 1, 1, 1, 1)), min_patch_size=48)
FAST = {"num_workers": 0, "n_anchors": 50, "n_negatives": 50, "log_every": 1, "pseudo_label_quality_every": 2}
SECTION_IDS = ("dataset", "cases", "registration", "training", "metrics", "overlays")


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.section_ids, self.scripts_with_src = [], [], 0

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src", ""))
        if tag == "section":
            self.section_ids.append(values.get("id"))
        if tag in ("script", "link") and ("src" in values or "href" in values):
            self.scripts_with_src += 1


def _parse(path):
    page = _Page()
    page.feed(path.read_text())
    return page


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny phantom, a 4-iteration CCT-R run with --val (which writes report.html) and a one-branch run."""
    from dataset_conversion.phantom import generate_phantom_dataset
    from dataset_conversion.phantom_config import PhantomConfig
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset
    from cctrnet.training.train_run import train

    root = tmp_path_factory.mktemp("report")
    env = {"cctr_raw": root / "raw", "cctr_preprocessed": root / "pre", "cctr_results": root / "res"}
    monkeypatch = pytest.MonkeyPatch()
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    generate_phantom_dataset(env["cctr_raw"], dataset_id=8, name="TinyReport", num_training=4, num_test=2, seed=5,
                             config=PhantomConfig.tiny(), show_progress=False)
    plan_and_preprocess_dataset("8", settings=SMALL_CPU_PLAN, device_name="cpu", progress=False)
    two = train("8", "CCTRTrainer", num_labeled=2, iterations=4, device_name="cpu", overrides=FAST, progress=False,
                validate=True, validation_set="test")  # 2 labeled cases: nothing to hold out, the test set by name
    one = train("8", "LabeledOnlyTrainer", num_labeled=2, iterations=2, device_name="cpu", overrides=FAST,
                progress=False)
    yield {**env, "two": two, "one": one}
    monkeypatch.undo()


def test_a_trained_model_gives_every_section_with_embedded_images_only(trained):
    report = trained["two"] / "report.html"  # written by cctr_train itself
    assert report.is_file()
    page = _parse(report)
    assert [i for i in page.section_ids if i != "missing"] == list(SECTION_IDS)
    assert len(page.images) >= 5 and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert page.scripts_with_src == 0 and "http://" not in report.read_text() and "https://" not in report.read_text()
    text = report.read_text()
    for expected in ("loss_sup_A", "w_cps", "dice_pseudo_B", "lr_branch_a", "mean Dice", "class='sortable'",
                     "worst:", "best:", "Registered labels on unlabeled cases", "PlainConvUNet"):
        assert expected in text, expected


def test_the_cli_writes_elsewhere_and_a_one_branch_run_names_its_missing_curves(trained, tmp_path):
    output = tmp_path / "one.html"
    done = subprocess.run([sys.executable, "-m", "cctrnet.cli.report", "-m", str(trained["one"]), "-o", str(output)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    text = output.read_text()
    assert "curves loss_sup_B" in text and "a one-branch run" in text
    assert "validation / test metrics" in text  # no --val: named, the sections stay
    assert _parse(output).section_ids[0] == "missing"


def test_missing_log_registration_and_checkpoint_are_named_not_raised(trained, tmp_path, monkeypatch):
    from cctrnet.report.page import write_report

    copy = tmp_path / "copy"
    shutil.copytree(trained["two"], copy)
    (copy / "training_log.txt").unlink()
    (copy / "checkpoint_final.pth").unlink()  # a run in progress
    monkeypatch.setenv("cctr_preprocessed", str(tmp_path / "empty"))  # no registration to be found
    text = write_report(copy).read_text()
    assert f"{copy / 'training_log.txt'} does not exist" in text
    assert "registration report: the preprocessed dataset Dataset008_TinyReport was not found" in text
    assert "in progress" in text
    assert all(src.startswith("data:") for src in _parse(copy / "report.html").images)
    empty = tmp_path / "nothing"
    empty.mkdir()
    text = write_report(empty).read_text()
    assert "config.json does not exist" in text and "no training yet" in text


def test_cctr_evaluate_with_a_model_writes_the_report_next_to_the_predictions(trained, tmp_path):
    predictions = tmp_path / "pred"
    shutil.copytree(trained["two"] / "test", predictions, ignore=shutil.ignore_patterns("*.json", "*.html"))
    done = subprocess.run([sys.executable, "-m", "cctrnet.cli.evaluate", "-ref",
                           str(trained["cctr_raw"] / "Dataset008_TinyReport" / "labelsTs"), "-pred", str(predictions),
                           "-m", str(trained["two"]), "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = (predictions / "report.html").read_text()
    assert re.search(r"evaluated from <code>[^<]*pred/summary.json", text)


def test_the_cases_section_names_the_suggestions_near_ties(tmp_path):
    from cctrnet.report.sections import cases_section
    from cctrnet.report.sources import ReportSources

    suggestion = {"ids": ["p1a", "p1b"], "unit": "patient", "near_tie_share": 0.02, "registration_method": "affine",
                  "suggested": [{"rank": 1, "patient": "p1", "near_ties": [{"patient": "p7", "extra_cost_share": 0.007}]}]}
    sources = ReportSources(model_folder=tmp_path, labeled_cases={"labeled": ["p1a", "p1b"], "unlabeled": ["q"]},
                            registration_folder=tmp_path, suggestion=suggestion)
    html, _ = cases_section(sources)
    assert "Near ties (coverage cost at most 2 % higher" in html and "rank 1: p7 (+0.7 %)" in html
    suggestion["suggested"][0]["near_ties"] = []
    assert "Near ties" not in cases_section(sources)[0]
