"""Atomic writes: the final file has the mode a plain open() gives, and a failed write leaves nothing."""
import os
import stat

import numpy as np
import pytest

from cctrnet.utilities.file_io import atomic_path, load_json, save_json, save_npy


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, expected):
    previous = os.umask(umask)
    try:
        save_json({"a": np.int64(3)}, tmp_path / "x.json")
        save_npy(np.zeros(3), tmp_path / "x.npy")
    finally:
        os.umask(previous)
    for name in ("x.json", "x.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected
    assert load_json(tmp_path / "x.json") == {"a": 3}


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    save_json({"old": True}, tmp_path / "x.json")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.json") as temporary:
            temporary.write_text("half")
            raise RuntimeError("interrupted")
    assert load_json(tmp_path / "x.json") == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# --- disk full and read-only output: the previous complete file stays, the message names the file ----------------
import errno  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from cctrnet.utilities.file_io import FileWriteError  # noqa: E402


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("what", ["json", "npy", "image", "rename"])
def test_a_full_disk_keeps_the_previous_file_and_names_it(tmp_path, monkeypatch, what):
    from cctrnet.dataset.geometry import Geometry
    from cctrnet.dataset.image_io import write_image

    target = {"json": "x.json", "npy": "x.npy", "image": "x.nii.gz", "rename": "x.json"}[what]
    geometry = Geometry((2, 3, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))

    def write(value):
        if what in ("json", "rename"):
            save_json({"v": value}, tmp_path / target)
        elif what == "npy":
            save_npy(np.full(3, value), tmp_path / target)
        else:
            write_image(np.full((2, 3, 4), value, dtype=np.uint8), geometry, tmp_path / target)

    write(1)
    before = (tmp_path / target).read_bytes()
    if what == "json":
        monkeypatch.setattr(json, "dump", lambda obj, f, **kw: (f.write('{"half'), _disk_full()))
    elif what == "npy":
        monkeypatch.setattr(np, "save", lambda f, a: (f.write(b"\x93NUM"), _disk_full()))
    elif what == "image":
        import SimpleITK as sitk

        def half_image(image, name, *args):
            open(name, "wb").write(b"\x1f\x8b")
            raise RuntimeError("Exception thrown in SimpleITK WriteImage:\nitk::ERROR: could not write: disk full")

        monkeypatch.setattr(sitk, "WriteImage", half_image)
    else:
        monkeypatch.setattr(os, "replace", _disk_full)
    with pytest.raises(FileWriteError) as info:
        write(2)
    assert str(tmp_path / target) in str(info.value) and "could not be written" in str(info.value)
    assert "previous version is unchanged" in str(info.value)
    if what != "image":
        assert info.value.errno == errno.ENOSPC and "No space left" in str(info.value)
    assert isinstance(info.value, OSError) and info.value.filename == str(tmp_path / target)
    assert (tmp_path / target).read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [target]  # no temporary file left


def test_a_read_only_folder_names_the_file(tmp_path, monkeypatch):
    # tests run as root, for whom chmod does not block writes: the refusal is simulated where it happens
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    with pytest.raises(FileWriteError, match=r"x\.json: could not be written \(Read-only file system\); nothing") \
            as info:
        save_json({}, tmp_path / "x.json")
    assert info.value.errno == errno.EROFS and not (tmp_path / "x.json").exists()


def test_a_failing_copy_names_its_source_too(tmp_path):
    import shutil

    with pytest.raises(FileWriteError, match=r"kept\.pth: could not be written \(No such file or directory: .*gone"):
        with atomic_path(tmp_path / "kept.pth") as temporary:
            shutil.copyfile(tmp_path / "gone.pth", temporary)


def test_write_errors_survive_worker_processes():
    import pickle

    error = FileWriteError(errno.ENOSPC, "/x/y.npz: could not be written (No space left on device)", "/x/y.npz")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is FileWriteError and str(copy) == str(error) and copy.errno == errno.ENOSPC


def test_plan_and_preprocess_reports_a_failed_write_in_one_line(tmp_path, cctr_folders, monkeypatch):
    """The command line: a plan that cannot be written is one line naming plans.json, the old plan is kept."""
    from tests.conftest import write_raw_dataset

    write_raw_dataset(cctr_folders["cctr_raw"])
    code = [sys.executable, "-c",
            "import errno, sys, cctrnet.utilities.file_io as f\n"
            "real = f.save_json\n"
            "def save_json(obj, path, indent=2):\n"
            "    if str(path).endswith('plans.json'): raise f._write_error(__import__('pathlib').Path(path), "
            "OSError(errno.ENOSPC, 'No space left on device'))\n"
            "    real(obj, path, indent)\n"
            "f.save_json = save_json\n"
            "import cctrnet.plan_and_preprocess as p; p.save_json = save_json\n"
            "from cctrnet.cli.plan_and_preprocess import main\n"
            "sys.exit(main(['-d', '1', '--plan-only', '--no-progress', '--device', 'cpu']))\n"]
    result = subprocess.run(code, capture_output=True, text=True, env={**os.environ}, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert any("plans.json: could not be written (No space left on device)" in line for line in error_lines), \
        result.stderr
