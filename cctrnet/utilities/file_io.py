"""Atomic writes: a file is written under a temporary name in its folder, then renamed.

A write that fails (disk full, read-only folder, no permission) leaves the previous complete file in place, removes
its temporary file and raises :class:`FileWriteError`, an ``OSError`` with the same ``errno`` whose message names the
file that could not be written.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class FileWriteError(OSError):
    """A file could not be written; the previous version of it (if any) is unchanged.

    ``errno`` is the failing call's, ``filename`` the file that could not be written, ``str()`` one line.
    """

    def __str__(self) -> str:
        return str(self.strerror)


def _write_error(path: Path, error: OSError) -> FileWriteError:
    reason = error.strerror or str(error)
    if error.filename and Path(error.filename).name not in (path.name, "") and \
            not Path(error.filename).name.startswith(f".{path.name}."):
        reason = f"{reason}: {error.filename}"  # the failing file is another one (a source being copied)
    kept = "its previous version is unchanged" if path.exists() else "nothing was left in its place"
    return FileWriteError(error.errno, f"{path}: could not be written ({reason}); {kept}", str(path))


@contextmanager
def atomic_path(final_path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``final_path``; rename it over ``final_path`` on success.

    The temporary name keeps the final suffix(es) so libraries that pick a format by extension
    (SimpleITK, numpy) behave as for the final name. An ``OSError`` raised inside the block or by the rename
    becomes a :class:`FileWriteError` naming ``final_path``.
    """
    final_path = Path(final_path)
    tmp_path: Path | None = None
    try:
        final_path.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(final_path.suffixes)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=f".tmp{suffix}", dir=final_path.parent)
        os.close(fd)
        tmp_path = Path(tmp_name)
        yield tmp_path
        # mkstemp creates the file readable by its owner only; give it the mode a plain open() would
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, final_path)
    except FileWriteError:
        raise
    except OSError as error:
        raise _write_error(final_path, error) from error
    finally:
        if tmp_path is not None and tmp_path.exists():
            try:
                tmp_path.unlink()
            except OSError:
                pass


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_json(obj: Any, path: str | os.PathLike, indent: int = 2) -> None:
    """Write JSON atomically (numpy scalars and arrays are converted)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=indent, default=_json_default)
            f.write("\n")


def load_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def save_npy(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a .npy file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
