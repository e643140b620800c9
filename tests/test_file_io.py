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
