"""Trainers on a tiny phantom: each lowers its loss, resume is exact, the model folder is complete."""
from pathlib import Path

import numpy as np
import pytest
import torch

from cctrnet.planning.planner import DeviceSettings, PlannerSettings
from cctrnet.training.trainers.registry import trainer_names

SMALL_CPU_PLAN = PlannerSettings(cpu=DeviceSettings(8, 32, 4, 4, 20, (1, 1, 1, 1, 1, 1, 1)), min_patch_size=48)
FAST = {"num_workers": 0, "n_anchors": 50, "n_negatives": 50, "log_every": 1, "learning_rate_cnn": 2e-3,
        "learning_rate_transformer": 1e-3}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    """A preprocessed and registered tiny phantom (6 training cases), shared by the tests of this module."""
    from dataset_conversion.phantom import generate_phantom_dataset
    from dataset_conversion.phantom_config import PhantomConfig
    from cctrnet.plan_and_preprocess import plan_and_preprocess_dataset

    root = tmp_path_factory.mktemp("training")
    env = {"cctr_raw": root / "raw", "cctr_preprocessed": root / "pre", "cctr_results": root / "res"}
    monkeypatch = pytest.MonkeyPatch()
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    generate_phantom_dataset(env["cctr_raw"], dataset_id=7, name="TinyTrain", num_training=6, num_test=1, seed=3,
                             config=PhantomConfig.tiny())
    plan_and_preprocess_dataset("7", settings=SMALL_CPU_PLAN, device_name="cpu", progress=False)
    yield env
    monkeypatch.undo()


def _trainer(name, iterations, folder, **overrides):
    from cctrnet.training.train_run import make_trainer

    return make_trainer("7", name, num_labeled=2, seed=0, iterations=iterations, device_name="cpu",
                        overrides={**FAST, **overrides}, output_folder=folder)


def _supervised_loss(trainer, batch):
    from cctrnet.training.losses.dice_ce import dice_ce_loss

    with torch.no_grad():
        trainer.branches.eval()
        return float(dice_ce_loss(trainer.branches["branch_a"](batch["labeled"]["image"]).logits, batch["labeled"]["target"]))


@pytest.mark.parametrize("name", trainer_names())
def test_short_run_lowers_the_loss_and_writes_the_model_folder(tiny_dataset, tmp_path, name):
    torch.manual_seed(0)
    trainer = _trainer(name, 12, tmp_path / name)
    loader = trainer.build_loader()
    fixed_batch = loader.next_batch()
    loader.close()
    before = _supervised_loss(trainer, fixed_batch)
    trainer.run(progress=False)
    after = _supervised_loss(trainer, fixed_batch)
    assert after < before, (before, after)
    for file in ("config.json", "plans.json", "dataset.json", "labeled_cases.json", "checkpoint_final.pth",
                 "checkpoint_latest.pth", "training_log.txt", "progress.png"):
        assert (tmp_path / name / file).exists(), file
    history = trainer.log.history
    assert len(history["loss_total"]) == 12 and all(v == v for _, v in history["loss_total"])
    # each trainer trains exactly its own terms and branches (a baseline that also learns from registered labels,
    # or a labeled-only run with a second branch, would still lower the loss)
    terms = {key for key in history if key.startswith("loss_") and key != "loss_total"}
    assert terms == EXPECTED_LOSS_TERMS[name], terms
    assert sorted(trainer.branches) == (["branch_a"] if name in ("LabeledOnlyTrainer", "UAMTTrainer")
                                        else ["branch_a", "branch_b"])
    if name in ("CPSTrainer", "CTSTrainer"):
        classes = [trainer.architectures[b]["network_class"] for b in ("branch_a", "branch_b")]
        assert (classes[0] == classes[1]) == (name == "CPSTrainer")  # CPS: two CNNs; CTS: a CNN and another family


def _terms(*names: str, branches: str = "AB") -> set[str]:
    return {f"loss_{n}_{b}" for n in names for b in branches}


EXPECTED_LOSS_TERMS = {
    "LabeledOnlyTrainer": _terms("sup", branches="A"),
    "CPSTrainer": _terms("sup", "cps"),
    "CTSTrainer": _terms("sup", "cps"),
    "CCTRTrainer": _terms("sup", "cps", "rsl", "scl"),
    "UAMTTrainer": _terms("sup", "consistency", branches="A"),
}


def test_resume_continues_exactly(tiny_dataset, tmp_path, monkeypatch):
    # bitwise equality needs deterministic kernels: multi-threaded CPU reductions may order sums differently
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    straight = _trainer("CCTRTrainer", 6, tmp_path / "straight")
    straight.loader = straight.build_loader()
    for _ in range(6):
        straight.train_one_iteration()

    first = _trainer("CCTRTrainer", 6, tmp_path / "resumed")
    first.loader = first.build_loader()
    for _ in range(3):
        first.train_one_iteration()
    first.save(tmp_path / "resumed" / "checkpoint_latest.pth")
    first.loader.close()

    resumed = _trainer("CCTRTrainer", 6, tmp_path / "resumed")
    resumed.load(tmp_path / "resumed" / "checkpoint_latest.pth")
    assert resumed.iteration == 3
    resumed.loader = resumed.build_loader()
    for _ in range(3):
        resumed.train_one_iteration()
    for key, value in straight.branches.state_dict().items():
        assert torch.equal(value, resumed.branches.state_dict()[key]), key
    assert straight.log.history["loss_total"] == resumed.log.history["loss_total"]
    straight.loader.close()
    resumed.loader.close()
    monkeypatch.undo()
    torch.set_num_threads(threads)


def test_labeled_cases_are_recorded_and_hidden_truth_is_reported(tiny_dataset, tmp_path):
    from cctrnet.utilities.file_io import load_json

    trainer = _trainer("CCTRTrainer", 4, tmp_path / "run", log_every=3, pseudo_label_quality_every=2)
    trainer.run(progress=False)
    chosen = load_json(tmp_path / "run" / "labeled_cases.json")
    assert len(chosen["labeled"]) == 2 and set(chosen["labeled"]).isdisjoint(chosen["unlabeled"])
    assert set(chosen["hidden_labels"]) == set(chosen["unlabeled"])  # every phantom case has a label
    # pseudo-label quality at iterations 2 and 4 (its own interval), in the history and in the text log
    measured = {iteration for key, points in trainer.log.history.items() if key.startswith("dice_pseudo")
                for iteration, _ in points}
    assert measured and measured <= {2, 4}
    log_lines = (tmp_path / "run" / "training_log.txt").read_text().splitlines()
    logged = {int(line.split(" it ")[1].split(":")[0]) for line in log_lines if "dice_pseudo" in line}
    assert logged == measured


def test_cross_teaching_refuses_a_run_without_unlabeled_cases(tiny_dataset, tmp_path):
    from cctrnet.training.train_run import TrainingRunError, make_trainer

    with pytest.raises((TrainingRunError, ValueError), match="unlabeled"):
        make_trainer("7", "CTSTrainer", num_labeled=None, device_name="cpu", overrides=FAST,
                     output_folder=tmp_path / "x")


def test_val_set_test_predicts_and_evaluates_the_test_cases(tiny_dataset, tmp_path):
    from cctrnet.training.train_run import train
    from cctrnet.utilities.file_io import load_json

    folder = train("7", "LabeledOnlyTrainer", num_labeled=2, iterations=2, device_name="cpu",
                   overrides=FAST, progress=False, validate=True, validation_set="test")
    summary = load_json(folder / "test" / "summary.json")
    assert summary["mean"]["dice_percent"] == summary["mean"]["dice_percent"]  # a number, not NaN
    assert len(list((folder / "test").glob("*.nii.gz"))) == 1  # the one test case
    assert not (folder / "validation").exists()  # test figures never land where validation ones go
    # the post-processing was decided at the end of training, from the training and registered labels only
    decision = load_json(folder / "postprocessing.json")
    assert decision["sources"]["labeled_cases"] == load_json(folder / "labeled_cases.json")["labeled"]
    # the fixture registers nothing, but the co-training tests of this module register their labeled set:
    # the registered labels of the 4 unlabeled cases are used when they exist, else the record says so
    registered = decision["sources"]["registered_labels"]
    assert registered["volumes"] == 4 or (registered["volumes"] == 0 and "no registration" in registered["not_used"])
    before = load_json(folder / "test" / "without_postprocessing" / "summary.json")
    assert before["num_cases_evaluated"] == 1


def _train(**kwargs):
    from cctrnet.training.train_run import train

    kwargs.setdefault("overrides", FAST)
    return train("7", "LabeledOnlyTrainer", num_labeled=2, device_name="cpu", progress=False, **kwargs)


def test_continue_goes_to_the_recorded_length_and_refuses_other_lengths(tiny_dataset):
    from cctrnet.training.run_record import read_run_record
    from cctrnet.training.train_run import TrainingRunError, make_trainer

    unfinished = make_trainer("7", "LabeledOnlyTrainer", num_labeled=2, seed=5, iterations=6, device_name="cpu",
                              overrides=FAST)
    folder = unfinished.output_folder
    unfinished.write_run_files()
    unfinished.loader = unfinished.build_loader()
    for _ in range(3):
        unfinished.train_one_iteration()
    unfinished.save(folder / "checkpoint_latest.pth")
    unfinished.loader.close()
    with pytest.raises(TrainingRunError, match=r"unfinished run; resume it with: cctr_train 7 .*--c"):
        _train(seed=5, iterations=6)
    with pytest.raises(TrainingRunError, match="recorded 6 iterations"):
        _train(seed=5, iterations=10, resume=True)
    with pytest.raises(TrainingRunError, match="--extend-to extends a finished run"):
        _train(seed=5, extend_to=10)
    with pytest.raises(TrainingRunError, match="recorded settings"):
        _train(seed=5, resume=True, overrides={**FAST, "learning_rate_cnn": 1.0})
    _train(seed=5, resume=True)  # no --iterations: the recorded length
    record = read_run_record(folder)
    assert record.finished and record.num_iterations == 6
    assert [i for i, _ in torch.load(folder / "checkpoint_final.pth", weights_only=True)["log"]["loss_total"]] == \
        list(range(1, 7))


def test_a_finished_run_is_refused_by_continue_and_extended_by_extend_to(tiny_dataset):
    from cctrnet.training.run_record import read_run_record
    from cctrnet.training.train_run import TrainingRunError

    folder = _train(seed=6, iterations=4)
    with pytest.raises(TrainingRunError, match=r"finished run of 4 iterations .*--c only continues unfinished runs.*"
                                               r"cctr_train 7 -tr LabeledOnlyTrainer --labeled 2 --seed 6 --extend-to 8"):
        _train(seed=6, resume=True)
    with pytest.raises(TrainingRunError, match="already has 4 iterations"):
        _train(seed=6, extend_to=4)
    final_before = (folder / "checkpoint_final.pth").read_bytes()
    _train(seed=6, extend_to=7)
    assert (folder / "checkpoint_final_4.pth").read_bytes() == final_before  # the finished model is kept
    final = torch.load(folder / "checkpoint_final.pth", weights_only=True)
    assert final["iteration"] == 7
    record = read_run_record(folder)
    assert record.num_iterations == 7 and record.settings["num_iterations"] == 7
    assert record.schedule.to_dict() == {"total_iterations": 7, "warmup_iterations": 4, "lr_segment_start": 4}
    assert [(e["from_iterations"], e["to_iterations"], e["kept_checkpoint"]) for e in record.extensions] == \
        [(4, 7, "checkpoint_final_4.pth")]
    assert "extended from 4 to 7 iterations" in (folder / "training_log.txt").read_text()
    # documented schedule: the learning rate restarts at its initial value, then decays over the extension
    lr = dict(final["log"]["lr_branch_a"])
    assert lr[5] == pytest.approx(FAST["learning_rate_cnn"]) and lr[4] < lr[7] < lr[6] < lr[5]
    with pytest.raises(TrainingRunError, match="finished run of 7 iterations"):
        _train(seed=6, resume=True)


@pytest.mark.parametrize("signum, expected_code", [(2, 130), (15, 143)])
def test_a_stop_signal_saves_stops_the_workers_and_prints_the_resume_command(tiny_dataset, signum, expected_code):
    import subprocess
    import sys
    import time

    import psutil

    command = [sys.executable, "-m", "cctrnet.cli.train", "7", "-tr", "LabeledOnlyTrainer", "--labeled", "2",
               "--seed", str(signum), "--iterations", "100000", "--device", "cpu", "--threads", "1", "--no-progress",
               "--set", "num_workers=2", "log_every=1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_folder = Path(tiny_dataset["cctr_results"]) / "Dataset007_TinyTrain" / f"LabeledOnlyTrainer__labeled2__seed{signum}"
    log = run_folder / "training_log.txt"
    deadline = time.monotonic() + 120
    while not (log.exists() and " it 2:" in log.read_text()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers, "the data loader should have started worker processes"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == expected_code, stderr
    assert "Traceback" not in stderr, stderr
    last_line = stderr.strip().splitlines()[-1]
    assert f"checkpoint {run_folder / 'checkpoint_latest.pth'}" in last_line
    assert last_line.endswith(f"resume with: cctr_train 7 -tr LabeledOnlyTrainer --labeled 2 --seed {signum} --c")
    assert (run_folder / "checkpoint_latest.pth").exists()
    time.sleep(0.5)
    alive = [w.pid for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"worker processes outlived the trainer: {alive}"


def test_fused_registered_labels_and_the_fading_weight_train(tiny_dataset, tmp_path):
    """rsl_fusion=majority gives every unlabeled case the vote of both labeled atlases; rsl_fade logs its factor."""
    from cctrnet.registration import brs
    from cctrnet.registration.label_fusion import fuse_labels

    trainer = _trainer("CCTRTrainer", 3, tmp_path / "fused", rsl_fusion="majority", rsl_fade=True,
                       rsl_fade_momentum=0.5)
    registration = trainer.registration
    unlabeled = sorted(registration.selected_labeled)[0]
    atlases = [q for q in trainer.setup.labeled_cases if registration.store.successful(q, unlabeled)]
    assert len(atlases) == 2
    expected = fuse_labels([brs.registered_label(registration.data_folder, registration.store, unlabeled, q)
                            for q in atlases], "majority", trainer.setup.num_classes)
    assert np.array_equal(registration.registered_label(unlabeled), expected)
    trainer.run(progress=False)
    factors = [v for _, v in trainer.log.history["rsl_fade"]]
    assert len(factors) == 3 and all(0.0 < f <= 1.0 for f in factors)


def test_held_out_registered_labels_measure_the_fade_and_never_teach(tiny_dataset, tmp_path, monkeypatch):
    """rsl_fade_holdout_fraction: the held-out volumes' registered labels reach the fade only, never L_rs."""
    import cctrnet.training.trainers.cross_teaching as cross_teaching
    from cctrnet.training.losses.dice_ce import IGNORE_INDEX

    trainer = _trainer("CCTRTrainer", 6, tmp_path / "held", rsl_fade=True, rsl_fade_holdout_fraction=0.5)
    held = trainer.rsl_fade_held_out
    assert held and set(held) < set(trainer.setup.unlabeled_cases)
    held_volumes = {trainer.setup.volume_index(case) for case in held}
    steps, rsl_targets, fade_targets = [], [], []
    original_losses, original_rsl = trainer.compute_losses, cross_teaching.registration_supervision_loss
    original_update = trainer.rsl_fade.update

    def compute_losses(batch):
        steps.append((batch["unlabeled"]["volume_index"].tolist(), batch["unlabeled"]["target"].clone()))
        return original_losses(batch)

    def update(predictions, registered):
        fade_targets.append(registered.clone())
        return original_update(predictions, registered)

    def rsl(logits, registered, *args, **kwargs):
        rsl_targets.append(registered.clone())
        return original_rsl(logits, registered, *args, **kwargs)

    monkeypatch.setattr(trainer, "compute_losses", compute_losses)
    monkeypatch.setattr(trainer.rsl_fade, "update", update)
    monkeypatch.setattr(cross_teaching, "registration_supervision_loss", rsl)
    trainer.run(progress=False)
    assert len(rsl_targets) == 2 * len(steps)  # both branches, every step
    seen_held = 0
    for step, (volumes, target) in enumerate(steps):
        rows = [v in held_volumes for v in volumes]
        for branch_target in rsl_targets[2 * step: 2 * step + 2]:
            for row, is_held in enumerate(rows):
                if is_held:
                    assert (branch_target[row] == IGNORE_INDEX).all()
                else:
                    assert torch.equal(branch_target[row], target[row])
        seen_held += sum(rows)
    assert seen_held > 0, "no held-out volume was drawn: the test checks nothing"
    assert sum(t.shape[0] for t in fade_targets) == seen_held  # the fade saw the held-out rows and no others
    assert "only measure the fade" in (trainer.output_folder / "training_log.txt").read_text()


def test_reps_maps_the_points_of_each_source_volume_to_every_bank_volume_in_one_call(tiny_dataset, tmp_path,
                                                                                      monkeypatch):
    """The trainer uses the point mapper's batched call, and it maps like the pair-by-pair call (NaN rows where
    no registration exists)."""
    from cctrnet.registration.point_mapping import MissingRegistrationError

    trainer = _trainer("CCTRTrainer", 4, tmp_path / "many")
    cases, mapper = trainer.setup.all_cases, trainer.registration.point_mapper
    targets = list(range(1, len(cases)))
    points = torch.tensor([[0.0, 3.0, 4.0], [1.0, 10.5, 7.25], [2.0, 20.0, 15.5]])
    many = trainer.map_points_to_many(0, targets, points)
    assert many.shape == (len(targets), 3, 3)
    for row, target in enumerate(targets):
        try:
            assert torch.allclose(many[row], mapper.map_points(cases[0], cases[target], points), atol=1e-4)
        except MissingRegistrationError:
            assert torch.isnan(many[row]).all()
    assert torch.isfinite(many).any()
    calls, batched = [], trainer.map_points_to_many
    monkeypatch.setattr(mapper, "map_points", lambda *args: pytest.fail("REPS mapped the points pair by pair"))
    monkeypatch.setattr(trainer, "map_points_to_many", lambda *args: calls.append(args[0]) or batched(*args))
    trainer.run(progress=False)
    assert calls, "REPS never looked up a registered positive: the test checks nothing"


# --- how the trainers combine their losses (issue 13: weak places) -----------------------------------------------
def test_each_cross_teaching_branch_is_taught_by_the_other(tiny_dataset, tmp_path, monkeypatch):
    import cctrnet.training.trainers.cross_teaching as cross_teaching

    calls = []
    original = cross_teaching.cross_pseudo_supervision_loss

    def recording(student_logits, teacher_logits, *args, **kwargs):
        calls.append((student_logits.detach().clone(), teacher_logits.detach().clone()))
        return original(student_logits, teacher_logits, *args, **kwargs)

    monkeypatch.setattr(cross_teaching, "cross_pseudo_supervision_loss", recording)
    trainer = _trainer("CTSTrainer", 4, tmp_path / "cts")
    loader = trainer.build_loader()
    batch = loader.next_batch()
    loader.close()
    trainer.compute_losses(batch)
    assert len(calls) == 2  # one per branch
    (student_a, teacher_of_a), (student_b, teacher_of_b) = calls
    assert not torch.equal(student_a, teacher_of_a) and not torch.equal(student_b, teacher_of_b)  # nobody self-taught
    assert torch.equal(teacher_of_a, student_b) and torch.equal(teacher_of_b, student_a)


def test_the_mean_teacher_moves_towards_the_student(tiny_dataset, tmp_path):
    trainer = _trainer("UAMTTrainer", 4, tmp_path / "uamt")
    student = trainer.branches["branch_a"]
    before = [p.detach().clone() for p in trainer.teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)  # the student has learnt something the teacher has not seen
    trainer.iteration = 9
    trainer.on_step_end({})
    decay = min(1 - 1 / 10, trainer.config.uamt_ema_decay)
    for old, new, s in zip(before, trainer.teacher.parameters(), student.parameters()):
        assert torch.allclose(new, decay * old + (1 - decay) * s, atol=1e-6)
    assert any(not torch.equal(old, new) for old, new in zip(before, trainer.teacher.parameters()))


def test_a_checkpoint_that_cannot_be_written_is_one_error_line_not_a_traceback(tiny_dataset, monkeypatch, capsys):
    import errno

    import cctrnet.training.trainers.base as base
    from cctrnet.cli.train import main
    from cctrnet.utilities.file_io import FileWriteError

    def full_disk(state, path, keep_previous=False):
        raise FileWriteError(errno.ENOSPC, f"could not write {path}: No space left on device", str(path))

    monkeypatch.setattr(base, "save_checkpoint", full_disk)
    code = main(["7", "-tr", "LabeledOnlyTrainer", "--labeled", "2", "--iterations", "2", "--seed", "11",
                 "--device", "cpu", "--no-progress", "--set", "num_workers=0"])
    error = capsys.readouterr().err
    assert code == 1
    assert "checkpoint_final.pth" in error and "No space left" in error and "--c" in error
    assert "Traceback" not in error


@pytest.mark.parametrize("name", ["CCTRTrainer", "UAMTTrainer"])
def test_channels_last_training_gives_the_losses_of_contiguous_tensors(tiny_dataset, tmp_path, name):
    """memory_format=channels_last (the CUDA default) runs every loss term on CPU too, with the same numbers."""
    histories = {}
    for memory_format in ("contiguous", "channels_last"):
        trainer = _trainer(name, 2, tmp_path / memory_format, memory_format=memory_format)
        assert trainer.channels_last == (memory_format == "channels_last")
        trainer.run(progress=False)
        if trainer.channels_last:
            weight = next(p for p in trainer.branches.parameters() if p.dim() == 4)
            assert weight.is_contiguous(memory_format=torch.channels_last)
        histories[memory_format] = trainer.log.history
    for term, values in histories["contiguous"].items():
        if term.startswith("loss_"):
            found = [v for _, v in histories["channels_last"][term]]
            assert found == pytest.approx([v for _, v in values], rel=1e-3, abs=1e-5), term


def test_a_step_without_a_confident_pixel_trains_with_a_zero_contrastive_loss(tiny_dataset, tmp_path):
    """anchor_threshold 1: no pixel is confident enough to be an anchor; SCL and REPS then add nothing."""
    trainer = _trainer("CCTRTrainer", 2, tmp_path / "no_anchors", anchor_threshold=1.0)
    trainer.run(progress=False)
    for branch in ("A", "B"):
        values = [v for _, v in trainer.log.history[f"loss_scl_{branch}"]]
        assert values == [0.0, 0.0], values
    assert all(v == v for _, v in trainer.log.history["loss_total"])


def test_compiled_networks_train_like_plain_ones_and_keep_their_checkpoint_keys(tiny_dataset, tmp_path):
    """compile=true (backend "eager": dynamo traces, nothing is code-generated, so the test stays fast on CPU)."""
    from cctrnet.training.checkpoint import load_checkpoint

    histories, keys = {}, {}
    for compiled in (False, True):
        trainer = _trainer("CTSTrainer", 2, tmp_path / f"compiled_{compiled}", compile=compiled,
                           compile_backend="eager")
        trainer.run(progress=False)
        histories[compiled] = [v for _, v in trainer.log.history["loss_total"]]
        state = load_checkpoint(tmp_path / f"compiled_{compiled}" / "checkpoint_final.pth")
        keys[compiled] = sorted(state["network_weights"]["branch_a"])
    assert histories[True] == pytest.approx(histories[False], rel=1e-4)
    assert keys[True] == keys[False]  # a compiled run's checkpoint loads into a plain network


def test_a_setting_of_a_switched_off_module_is_named_when_the_trainer_is_built(tiny_dataset, tmp_path, capsys):
    _trainer("LabeledOnlyTrainer", 2, tmp_path / "ls", w_rs=0.3)
    note = capsys.readouterr().out
    assert "w_rs change(s) nothing in this run of LabeledOnlyTrainer" in note and "w_rs needs rsl on" in note
    _trainer("LabeledOnlyTrainer", 2, tmp_path / "ls2")
    assert "change(s) nothing" not in capsys.readouterr().out


def test_decaying_registered_label_weight_scales_the_rsl_term(tiny_dataset, tmp_path, monkeypatch):
    """rsl_decay=linear: w_rs falls from w_rs to w_rs * rsl_decay_end over the run, and L_rs is scaled by it."""
    import cctrnet.training.trainers.cross_teaching as cross_teaching

    monkeypatch.setattr(cross_teaching, "registration_supervision_loss", lambda logits, target, batch_sum=None:
                        logits.new_ones(()))  # L_rs = 1: the logged term is the weight itself
    trainer = _trainer("CCTRTrainer", 4, tmp_path / "decay", w_rs=0.8, rsl_decay="linear", rsl_decay_end=0.25)
    trainer.run(progress=False)
    # steps at iterations 0..3 of 4: factor 1 - 0.75 * i / 4 -> 1, 0.8125, 0.625, 0.4375
    expected = [0.8, 0.65, 0.5, 0.35]
    assert [v for _, v in trainer.log.history["w_rs"]] == pytest.approx(expected)
    assert [v for _, v in trainer.log.history["loss_rsl_A"]] == pytest.approx(expected)
