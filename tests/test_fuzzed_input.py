"""Property-based (hypothesis) tests: bad dataset.json contents and bad image/label files.

Every input either passes (then it is a valid dataset) or fails with ``PipelineError`` -- the exception
``cctr_plan_and_preprocess`` prints as ``error: ...`` -- whose every problem names a file of the dataset, and then
nothing is written to the preprocessed folder. Any other exception would be a traceback for the user.

Images are tiny MetaImage (.mha) files written by hand (a text header and raw voxels), so that geometry SimpleITK
itself refuses to write (NaN, zero or negative spacing, singular directions, 2D/4D, empty) can be fed to the reader.
The planner is replaced by a stub: the property is about the checks before it, and planning costs seconds.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cctrnet.plan_and_preprocess as pipeline
from cctrnet.plan_and_preprocess import PipelineError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# examples per property; the numbers tried are printed (pytest -s) and reported in documentation/benchmarks.md
EXAMPLES = {"dataset_json": 120, "files": 120, "folder_layout": 30}
FUZZ = settings(max_examples=1, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SHAPE_ZYX = (2, 3, 4)
VALID_JSON = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1, "b": 2}, "numTraining": 2,
              "file_ending": ".mha"}
MET_TYPES = {"MET_UCHAR": np.uint8, "MET_SHORT": np.int16, "MET_INT": np.int32, "MET_FLOAT": np.float32,
             "MET_DOUBLE": np.float64}


def write_mha(path: Path, array: np.ndarray, spacing: list[float] | None = None, origin: list[float] | None = None,
              direction: list[float] | None = None, element_type: str = "MET_FLOAT",
              dim_size: list[int] | None = None, components: int = 1) -> None:
    """A MetaImage file as any program might write it, nothing checked (x, y, z order in the header)."""
    array = np.ascontiguousarray(array)
    dims = dim_size if dim_size is not None else list(reversed(array.shape[:array.ndim - (components > 1)]))
    n = len(dims)
    header = {
        "ObjectType": "Image", "NDims": n, "BinaryData": "True", "BinaryDataByteOrderMSB": "False",
        "CompressedData": "False",
        "TransformMatrix": " ".join(map(repr, direction if direction is not None else np.eye(n).ravel().tolist())),
        "Offset": " ".join(map(repr, origin if origin is not None else [0.0] * n)),
        "ElementSpacing": " ".join(map(repr, spacing if spacing is not None else [1.0] * n)),
        "DimSize": " ".join(map(str, dims)),
        **({"ElementNumberOfChannels": components} if components > 1 else {}),
        "ElementType": element_type, "ElementDataFile": "LOCAL",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write("".join(f"{k} = {v}\n" for k, v in header.items()).encode())
        f.write(array.astype(MET_TYPES[element_type]).tobytes())


def blob(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = 10 + rng.standard_normal(SHAPE_ZYX)
    label = np.zeros(SHAPE_ZYX, np.uint8)
    label[:, 1, 1:3] = 1
    label[:, 2, 3] = 2
    return image, label


def valid_dataset(root: Path) -> Path:
    folder = root / "cctr_raw" / "Dataset001_Fuzz"
    for i in range(2):
        image, label = blob(i)
        write_mha(folder / "imagesTr" / f"case{i}_0000.mha", image)
        write_mha(folder / "labelsTr" / f"case{i}.mha", label, element_type="MET_UCHAR")
    (folder / "dataset.json").write_text(json.dumps(VALID_JSON))
    return folder


@contextmanager
def cctr_environment() -> Iterator[Path]:
    """Fresh cctr_raw/cctr_preprocessed folders (hypothesis runs many examples in one test function)."""
    root = Path(tempfile.mkdtemp(prefix="fuzz_"))
    saved = {k: os.environ.get(k) for k in ("cctr_raw", "cctr_preprocessed", "cctr_results")}
    for name in saved:
        (root / name).mkdir()
        os.environ[name] = str(root / name)
    try:
        yield root
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(root)


@pytest.fixture(autouse=True)
def stub_planner(monkeypatch):
    monkeypatch.setattr(pipeline, "plan_for_device", lambda *args, **kwargs: {"stub": True})
    monkeypatch.setattr(pipeline, "describe_plan", lambda plans: "  (stub plan)")


TRIED: dict[str, int] = {}


def check_outcome(root: Path, folder: Path, kind: str, must_name: tuple[str, ...] = ()) -> None:
    """The property: a valid dataset, or a PipelineError naming a dataset file for each problem, nothing written.

    ``must_name``: names of files whose fault no reader can accept; then an error is required, naming each.
    """
    TRIED[kind] = TRIED.get(kind, 0) + 1
    preprocessed = root / "cctr_preprocessed"
    try:
        out = pipeline.plan_and_preprocess_dataset("1", device_name="cpu", preprocess=False, progress=False)
    except PipelineError as error:
        message = str(error)
        for name in must_name:
            assert name in message, f"{name} is faulty but not named:\n{message}"
        problems = [line[4:] for line in message.splitlines() if line.startswith("  - ")]
        assert problems, message
        for problem in problems:
            assert problem.startswith(str(folder)), f"problem does not start with a file of the dataset: {problem}"
            assert "Traceback" not in problem
            assert len(problem) < 1000, problem
        assert list(preprocessed.iterdir()) == [], "files written although the dataset has problems"
        return
    assert not must_name, f"faulty file(s) {must_name} accepted"
    fingerprint = json.loads((out / "dataset_fingerprint.json").read_text())
    assert fingerprint["num_training_cases"] >= 1
    for spacing in fingerprint["spacings_zyx"]:
        assert all(math.isfinite(s) and s > 0 for s in spacing), spacing


# --- dataset.json ------------------------------------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=True),
                         st.text(max_size=6), st.sampled_from([".mha", ".nii.gz", "mha", ".", "", "MRI", "CT"]))
json_values = st.recursive(json_scalars, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(st.text(max_size=4), children, max_size=3)), max_leaves=6)
channel_keys = st.one_of(st.sampled_from(["0", "1", "00", "-1", "²", "٣", " 0", "0.0", "a", ""]), st.text(max_size=3))
label_values = st.one_of(st.integers(-2, 4), st.booleans(), st.floats(allow_nan=True), st.text(max_size=2),
                         st.lists(st.integers(0, 3), max_size=2), st.none())


@st.composite
def dataset_json_contents(draw) -> Any:
    content: dict[str, Any] = json.loads(json.dumps(VALID_JSON))
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(["delete", "replace", "labels", "channels", "extra", "top", "patients"]))
        key = draw(st.sampled_from(sorted(VALID_JSON)))
        if mutation == "delete":
            content.pop(key, None)
        elif mutation == "replace":
            content[key] = draw(json_values)
        elif mutation == "labels":
            content["labels"] = draw(st.dictionaries(st.text(max_size=4), label_values, max_size=4))
        elif mutation == "channels":
            content["channel_names"] = draw(st.dictionaries(channel_keys, json_scalars, max_size=3))
        elif mutation == "extra":
            content[draw(st.sampled_from(["name", "description", "extra", "patients"]))] = draw(json_values)
        elif mutation == "patients":
            content["patients"] = draw(st.dictionaries(st.text(max_size=3), st.lists(
                st.sampled_from(["case0", "case1", "ghost", ""]), max_size=3), max_size=3))
        else:
            return draw(json_values)
    return content


@settings(FUZZ, max_examples=EXAMPLES["dataset_json"])
@given(content=dataset_json_contents(), as_text=st.booleans())
def test_fuzzed_dataset_json(content, as_text):
    with cctr_environment() as root:
        folder = valid_dataset(root)
        text = json.dumps(content)
        if as_text and len(text) > 2:
            text = text[: len(text) // 2]  # a truncated file
        (folder / "dataset.json").write_text(text)
        check_outcome(root, folder, "dataset_json")


# --- image and label files ---------------------------------------------------------------------------------------
spacing_values = st.one_of(st.sampled_from([1.0, 0.5, 2.5]), st.sampled_from(
    [0.0, -1.0, -0.0, math.nan, math.inf, -math.inf, 1e-30, 1e30]), st.floats(allow_nan=True, allow_infinity=True))
special_directions = [
    [1, 0, 0, 0, 1, 0, 0, 0, 1], [-1, 0, 0, 0, 1, 0, 0, 0, 1], [0, 1, 0, 1, 0, 0, 0, 0, 1],
    [1, 0, 0, 1, 0, 0, 0, 0, 1], [0] * 9, [math.nan, 0, 0, 0, 1, 0, 0, 0, 1], [2, 0, 0, 0, 1, 0, 0, 0, 1],
]


@st.composite
def file_faults(draw) -> dict[str, Any]:
    fault: dict[str, Any] = {"target": draw(st.sampled_from(["image", "label"])),
                             "case": draw(st.integers(0, 1))}
    kind = draw(st.sampled_from(["values", "spacing", "origin", "direction", "dimension", "empty", "type",
                                 "components", "bytes", "shape"]))
    fault["kind"] = kind
    if kind == "values":
        fault["values"] = draw(st.lists(st.one_of(st.integers(-300, 300), st.floats(allow_nan=True)),
                                        min_size=1, max_size=4))
    elif kind == "spacing":
        fault["spacing"] = draw(st.lists(spacing_values, min_size=3, max_size=3))
    elif kind == "origin":
        fault["origin"] = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3))
    elif kind == "direction":
        fault["direction"] = draw(st.one_of(st.sampled_from(special_directions), st.lists(
            st.floats(-2, 2, allow_nan=False), min_size=9, max_size=9)))
    elif kind == "dimension":
        fault["shape"] = draw(st.sampled_from([(3, 4), (4,), (2, 2, 3, 4), (1, 2, 3, 4, 2)]))
    elif kind == "shape":
        fault["shape"] = draw(st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 5)))
    elif kind == "empty":
        fault["dim_size"] = draw(st.sampled_from([[0, 3, 2], [4, 0, 2], [0, 0, 0]]))
    elif kind == "type":
        fault["element_type"] = draw(st.sampled_from(sorted(MET_TYPES)))
    elif kind == "components":
        fault["components"] = draw(st.integers(2, 3))
    else:
        fault["bytes"] = draw(st.sampled_from([b"", b"ObjectType = Image\n", b"\x00" * 10, "NDims = 3\n".encode()]))
    return fault


def is_unacceptable(fault: dict[str, Any]) -> bool:
    """Whether this fault makes its file invalid whatever else is in the dataset."""
    kind = fault["kind"]
    if kind in ("dimension", "empty", "components", "bytes"):
        return True
    if kind == "spacing":
        return not all(math.isfinite(s) and 1e-6 <= abs(s) <= 1e6 for s in fault["spacing"])
    if kind == "direction":
        d = np.asarray(fault["direction"], dtype=float).reshape(3, 3)
        return not (np.all(np.isfinite(d)) and np.allclose(d.T @ d, np.eye(3), atol=1e-3))
    if kind == "values":
        values = fault["values"]
        if fault["target"] == "image":
            return not all(math.isfinite(v) for v in values)
        return not all(v in (0, 1, 2) for v in values)  # NaN, non-integer and undeclared values
    return False


def fault_file(fault: dict[str, Any]) -> str:
    return f"case{fault['case']}_0000.mha" if fault["target"] == "image" else f"case{fault['case']}.mha"


def apply_fault(folder: Path, fault: dict[str, Any]) -> None:
    case = fault["case"]
    image, label = blob(case)
    path = folder / ("imagesTr" if fault["target"] == "image" else "labelsTr") / \
        (f"case{case}_0000.mha" if fault["target"] == "image" else f"case{case}.mha")
    array = image if fault["target"] == "image" else label.astype(np.float32)
    element_type = "MET_FLOAT" if fault["target"] == "image" else "MET_UCHAR"
    kind = fault["kind"]
    if kind == "bytes":
        path.write_bytes(fault["bytes"])
        return
    kwargs: dict[str, Any] = {"element_type": element_type}
    if kind == "values":
        flat = array.astype(np.float64).ravel()
        flat[: len(fault["values"])] = fault["values"]
        array = flat.reshape(array.shape)
        kwargs["element_type"] = "MET_DOUBLE"
    elif kind in ("spacing", "origin", "direction"):
        kwargs[kind] = fault[kind]
    elif kind in ("dimension", "shape"):
        array = np.ones(fault["shape"], np.float32)
    elif kind == "empty":
        array = np.zeros(0, np.float32)
        kwargs["dim_size"] = fault["dim_size"]
    elif kind == "type":
        kwargs["element_type"] = fault["element_type"]
        array = np.clip(array, 0, 200)
    elif kind == "components":
        array = np.repeat(array[..., None], fault["components"], axis=-1)
        kwargs["components"] = fault["components"]
    write_mha(path, array, **kwargs)


@settings(FUZZ, max_examples=EXAMPLES["files"])
@given(faults=st.lists(file_faults(), min_size=1, max_size=2))
def test_fuzzed_image_and_label_files(faults):
    with cctr_environment() as root:
        folder = valid_dataset(root)
        for fault in faults:
            apply_fault(folder, fault)
        # a later fault on the same file replaces an earlier one
        last = {fault_file(f): f for f in faults}
        check_outcome(root, folder, "files", tuple(name for name, f in last.items() if is_unacceptable(f)))


# --- folder layout ------------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=EXAMPLES["folder_layout"])
@given(changes=st.lists(st.sampled_from([
    "no dataset.json", "dataset.json is a folder", "no imagesTr", "imagesTr is a file", "labelsTr is a file",
    "extra channel", "unnamed file", "label without image", "no label at all", "image is a folder",
    "label is a folder", "numTraining off", "second channel declared", "hidden file"]), min_size=1, max_size=3,
    unique=True))
def test_fuzzed_folder_layout(changes):
    with cctr_environment() as root:
        folder = valid_dataset(root)
        for change in changes:
            if change == "no dataset.json":
                (folder / "dataset.json").unlink(missing_ok=True)
            elif change == "dataset.json is a folder":
                (folder / "dataset.json").unlink(missing_ok=True)
                (folder / "dataset.json").mkdir()
            elif change == "no imagesTr" and (folder / "imagesTr").is_dir():
                shutil.rmtree(folder / "imagesTr")
            elif change == "imagesTr is a file" and (folder / "imagesTr").is_dir():
                shutil.rmtree(folder / "imagesTr")
                (folder / "imagesTr").write_text("x")
            elif change == "labelsTr is a file" and (folder / "labelsTr").is_dir():
                shutil.rmtree(folder / "labelsTr")
                (folder / "labelsTr").write_text("x")
            elif change == "extra channel" and (folder / "imagesTr").is_dir():
                write_mha(folder / "imagesTr" / "case0_0001.mha", blob(0)[0])
            elif change == "unnamed file" and (folder / "imagesTr").is_dir():
                write_mha(folder / "imagesTr" / "case9.mha", blob(0)[0])
            elif change == "label without image" and (folder / "labelsTr").is_dir():
                write_mha(folder / "labelsTr" / "ghost.mha", blob(0)[1])
            elif change == "no label at all" and (folder / "labelsTr").is_dir():
                shutil.rmtree(folder / "labelsTr")
            elif change == "image is a folder" and (folder / "imagesTr").is_dir():
                (folder / "imagesTr" / "case5_0000.mha").mkdir()
            elif change == "label is a folder" and (folder / "labelsTr").is_dir():
                (folder / "labelsTr" / "case1.mha").unlink(missing_ok=True)
                (folder / "labelsTr" / "case1.mha").mkdir()
            elif change in ("numTraining off", "second channel declared") and (folder / "dataset.json").is_file():
                content = json.loads((folder / "dataset.json").read_text())
                if change == "numTraining off":
                    content["numTraining"] = 3
                else:
                    content["channel_names"] = {"0": "MRI", "1": "T2"}
                (folder / "dataset.json").write_text(json.dumps(content))
            elif change == "hidden file" and (folder / "imagesTr").is_dir():
                (folder / "imagesTr" / ".DS_Store").write_bytes(b"\x00")
        check_outcome(root, folder, "folder_layout")


def test_report_how_many_cases_were_tried():
    """Runs last in this file: prints the examples tried per property (pytest -s shows it)."""
    print(f"\nhypothesis examples tried: {TRIED} (total {sum(TRIED.values())})")
    assert sum(TRIED.values()) >= 1
