"""The slices of the training cases, one source per stream (labeled, unlabeled).

A labeled source gives each slice with its true label. An unlabeled source gives each slice with its
registered label (RSL; -1 where the warp left it undefined, or everywhere when RSL is off) and, only
when asked, the true label of a case whose label is hidden for the run, under the name
``hidden_truth``: for reporting pseudo-label quality on simulated datasets, never as a training target.

Volumes are memory-mapped lazily, per process, so that a source can be handed to worker processes
without copying the data.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from cctrnet.preprocessing.case_storage import case_files, load_preprocessed_case
from cctrnet.training.data.sampling import SliceSampling, draw_case_and_slice, draw_foreground_voxel

StreamRole = Literal["labeled", "unlabeled"]


def build_volume_index(case_ids: Sequence[str]) -> dict[str, int]:
    """Stable volume index of every training case: sorted case ids -> 0..N-1."""
    unique = sorted(set(case_ids))
    if len(unique) != len(case_ids):
        duplicates = sorted({c for c in case_ids if list(case_ids).count(c) > 1})
        raise ValueError(f"case ids must be unique, repeated: {duplicates}")
    return {case_id: index for index, case_id in enumerate(unique)}


@dataclass(frozen=True)
class CaseInfo:
    case_id: str
    volume_index: int
    shape_zyx: tuple[int, int, int]
    num_channels: int
    class_slices: dict[int, list[int]]  # empty for cases whose label is not read


@dataclass(frozen=True)
class SliceChoice:
    case_position: int  # position in the source's case list
    z: int
    foreground_yx: tuple[int, int] | None  # voxel the patch must contain (foreground oversampling)


class SliceSource:
    """Slices of one stream's cases, with the label channels that stream carries."""

    def __init__(self, folder: str | os.PathLike, case_ids: Sequence[str], role: StreamRole,
                 volume_index: Mapping[str, int], registered_labels: Mapping[str, np.ndarray] | None = None,
                 provide_hidden_truth: bool = False) -> None:
        if role not in ("labeled", "unlabeled"):
            raise ValueError(f"role must be 'labeled' or 'unlabeled', got {role!r}")
        if role == "labeled" and registered_labels:
            raise ValueError("registered labels belong to the unlabeled stream")
        self.folder = Path(folder)
        self.role = role
        self.provide_hidden_truth = bool(provide_hidden_truth and role == "unlabeled")
        self.registered_labels = dict(registered_labels) if registered_labels is not None else None
        self.cases = [self._case_info(case_id, volume_index) for case_id in case_ids]
        self._open: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    @property
    def label_channel_names(self) -> list[str]:
        return ["target", "hidden_truth"] if self.provide_hidden_truth else ["target"]

    @property
    def num_slices(self) -> int:
        return sum(case.shape_zyx[0] for case in self.cases)

    def _case_info(self, case_id: str, volume_index: Mapping[str, int]) -> CaseInfo:
        files = case_files(self.folder, case_id)
        if not files["properties"].exists():
            raise FileNotFoundError(f"preprocessed case {case_id!r} missing: no {files['properties']}")
        if case_id not in volume_index:
            raise KeyError(f"case {case_id!r} has no volume index (is it in the training set?)")
        data, seg, properties = load_preprocessed_case(self.folder, case_id)
        if data.ndim != 4:
            raise ValueError(f"{files['data']}: expected (c, z, y, x) data, found shape {data.shape}")
        shape_zyx = tuple(int(s) for s in data.shape[1:])
        class_slices: dict[int, list[int]] = {}
        if self.role == "labeled":
            if seg is None:
                raise ValueError(f"case {case_id!r} is in the labeled stream but {files['seg']} is not stored "
                                 "(properties say is_labeled false)")
            if tuple(seg.shape) != shape_zyx:
                raise ValueError(f"{files['seg']}: shape {seg.shape} does not match the data {shape_zyx}")
            if "class_slices" not in properties:
                raise ValueError(f"{files['properties']}: a labeled case needs 'class_slices'")
            class_slices = {int(c): [int(z) for z in zs] for c, zs in properties["class_slices"].items()}
        elif self.registered_labels is not None:
            registered = self.registered_labels.get(case_id)
            if registered is not None:
                if tuple(registered.shape) != shape_zyx or not np.issubdtype(registered.dtype, np.integer):
                    raise ValueError(f"registered label of case {case_id!r}: expected integer array of shape "
                                     f"{shape_zyx} (the preprocessed grid), got {registered.dtype} {registered.shape}")
        return CaseInfo(case_id, int(volume_index[case_id]), shape_zyx, int(data.shape[0]), class_slices)

    def _arrays(self, case: CaseInfo) -> tuple[np.ndarray, np.ndarray | None]:
        if case.case_id not in self._open:
            data, seg, _ = load_preprocessed_case(self.folder, case.case_id)
            if self.role == "unlabeled" and not self.provide_hidden_truth:
                seg = None  # a hidden label is never opened unless explicitly reported as hidden_truth
            self._open[case.case_id] = (data, seg)
        return self._open[case.case_id]

    def __getstate__(self) -> dict[str, Any]:
        # Memory maps would be pickled as full arrays; worker processes reopen them instead.
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

    def draw(self, rng: np.random.Generator, force_foreground: bool, sampling: SliceSampling) -> SliceChoice:
        """A slice; with ``force_foreground`` (labeled stream) one that contains a random foreground class."""
        if force_foreground and self.role == "labeled":
            position = int(rng.integers(len(self.cases)))
            case = self.cases[position]
            seg = self._arrays(case)[1]
            voxel = draw_foreground_voxel(rng, case.class_slices, lambda z: seg[z])
            if voxel is not None:
                return SliceChoice(position, voxel[0], (voxel[1], voxel[2]))
        position, z = draw_case_and_slice(rng, [c.shape_zyx[0] for c in self.cases], sampling)
        return SliceChoice(position, z, None)

    def slice_views(self, position: int, z: int) -> tuple[np.ndarray, list[np.ndarray | None]]:
        """Image (c, y, x) and label channels (y, x) of one slice, as views (nothing read yet)."""
        case = self.cases[position]
        data, seg = self._arrays(case)
        if self.role == "labeled":
            return data[:, z], [seg[z]]
        registered = None if self.registered_labels is None else self.registered_labels.get(case.case_id)
        channels = [None if registered is None else registered[z]]
        if self.provide_hidden_truth:
            channels.append(None if seg is None else seg[z])
        return data[:, z], channels
