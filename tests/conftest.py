"""Shared fixtures: isolated cctr_* folders and small hand-made raw datasets."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from cctrnet.dataset.dataset_json import write_dataset_json  # noqa: E402
from cctrnet.dataset.geometry import Geometry  # noqa: E402
from cctrnet.dataset.image_io import write_image  # noqa: E402

OBLIQUE_DIRECTION = tuple(np.array([[0.8660254, -0.5, 0.0], [0.4330127, 0.75, -0.5], [0.25, 0.4330127, 0.8660254]]).ravel())


def pytest_configure(config: pytest.Config) -> None:
    # cctrnet silences this dependency warning on import, but pytest restores the warning filters after
    # collection; the same narrow filter, as pytest's own setting
    config.addinivalue_line("filterwarnings", r"ignore:`torch\.jit\.interface` is deprecated:FutureWarning")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU; skipped without one (benchmarks/gpu_check.sh runs "
                                       "them with pytest -m cuda)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in cuda_items:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def single_torch_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine thread hand-offs dominate."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def cctr_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """cctr_raw, cctr_preprocessed and cctr_results pointing into the test's temporary folder."""
    folders = {name: tmp_path / name for name in ("cctr_raw", "cctr_preprocessed", "cctr_results")}
    for name, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(name, str(folder))
    return folders


def blob_case(seed: int, shape_zyx=(6, 32, 40), spacing_xyz=(1.5, 1.5, 6.0), origin_xyz=(-20.0, 10.0, 5.0),
              direction=OBLIQUE_DIRECTION) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """A small volume with two labeled ellipses on a noisy non-zero body, surrounded by zero padding."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*[np.arange(s) for s in shape_zyx], indexing="ij")
    cy, cx = shape_zyx[1] / 2 + rng.uniform(-2, 2), shape_zyx[2] / 2 + rng.uniform(-2, 2)
    label = np.zeros(shape_zyx, dtype=np.uint8)
    label[((y - cy) / 6) ** 2 + ((x - cx - 5) / 5) ** 2 < 1] = 1
    label[((y - cy) / 4) ** 2 + ((x - cx + 6) / 4) ** 2 < 1] = 2
    label[0] = 0
    image = 100 + 20 * rng.standard_normal(shape_zyx)
    image += 150 * (label == 1) + 300 * (label == 2)
    image[:, :3] = 0
    image[:, :, -2:] = 0
    return image.astype(np.float32), label, Geometry(shape_zyx, spacing_xyz, origin_xyz, direction)


def write_raw_dataset(root: Path, num_labeled: int = 3, num_unlabeled: int = 1, dataset_id: int = 1,
                      name: str = "Blobs", file_ending: str = ".nii.gz") -> Path:
    """A raw dataset of ``blob_case`` volumes under ``root``; returns its folder."""
    folder = root / f"Dataset{dataset_id:03d}_{name}"
    for index in range(num_labeled + num_unlabeled):
        image, label, geometry = blob_case(index)
        case = f"case{index:03d}"
        write_image(image, geometry, folder / "imagesTr" / f"{case}_0000{file_ending}")
        if index < num_labeled:
            write_image(label, geometry, folder / "labelsTr" / f"{case}{file_ending}")
    write_dataset_json(folder, {0: "MRI"}, {"background": 0, "a": 1, "b": 2}, num_labeled + num_unlabeled,
                       file_ending)
    return folder
