"""On-disk store of pair registrations, keyed by (moving, fixed, method).

Layout under ``cctr_preprocessed/DatasetXXX_Name/registration/<configuration>/<method>/``::

    pairs/{moving}__to__{fixed}.json   record: status, reason, metric, iterations, seconds, engine
    pairs/{moving}__to__{fixed}.tfm    ITK transform (fixed points -> moving points), only when status ok;
                                       for affine_deformable its affine part
    pairs/{moving}__to__{fixed}.velocity.npz   affine_deformable: the stationary velocity field (float16)
    brs_scores.json                    cycle RMSE and MI per (unlabeled, labeled candidate)
    registered_labels/{unlabeled}__from__{labeled}.npy   int16 label on the unlabeled case's grid
    registration_report.json / .png    quality report

The transform (and field) is written before its record, so a pair is finished exactly when its record exists: a run
killed half-way resumes with the pairs that have records and recomputes nothing else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from cctrnet.registration.pair_result import PairResult
from cctrnet.utilities.file_io import atomic_path, load_json, save_json

_SEPARATOR = "__to__"


def registration_folder(preprocessed_dataset_folder: Path, configuration: str, method: str) -> Path:
    return Path(preprocessed_dataset_folder) / "registration" / configuration / method


class PairStore:
    """Reads and writes the pair records and transforms of one (dataset, configuration, method)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.pairs_folder = self.folder / "pairs"

    def record_path(self, moving: str, fixed: str) -> Path:
        return self.pairs_folder / f"{moving}{_SEPARATOR}{fixed}.json"

    def transform_path(self, moving: str, fixed: str) -> Path:
        return self.pairs_folder / f"{moving}{_SEPARATOR}{fixed}.tfm"

    def field_path(self, moving: str, fixed: str) -> Path:
        return self.pairs_folder / f"{moving}{_SEPARATOR}{fixed}.velocity.npz"

    def has(self, moving: str, fixed: str) -> bool:
        return self.record_path(moving, fixed).exists()

    def save(self, result: PairResult) -> None:
        """Write the field and transform (if any) then the record, each atomically."""
        if result.ok:
            if result.transform_text is None:
                raise ValueError(f"pair {result.moving} -> {result.fixed} is ok but has no transform")
            if result.field_bytes is not None:
                with atomic_path(self.field_path(result.moving, result.fixed)) as tmp:
                    tmp.write_bytes(result.field_bytes)
            with atomic_path(self.transform_path(result.moving, result.fixed)) as tmp:
                tmp.write_text(result.transform_text)
        save_json(result.record(), self.record_path(result.moving, result.fixed))

    def load(self, moving: str, fixed: str) -> PairResult | None:
        """The stored result, or None when the pair was never finished."""
        path = self.record_path(moving, fixed)
        if not path.exists():
            return None
        try:
            result = PairResult.from_record(load_json(path))
        except (ValueError, TypeError) as error:
            raise ValueError(f"registration record {path} is unreadable: {error}") from error
        if result.ok and not self.transform_path(moving, fixed).exists():
            raise FileNotFoundError(f"record {path} says ok but its transform {self.transform_path(moving, fixed)} is missing")
        return result

    def transform(self, moving: str, fixed: str, inverse: bool = False) -> Any:
        """The SimpleITK transform of a successful pair (fixed points -> moving points), or its inverse."""
        from cctrnet.registration.transforms import stored_transform

        field_path = self.field_path(moving, fixed)
        return stored_transform(self.transform_path(moving, fixed), field_path if field_path.exists() else None, inverse)

    def all_results(self) -> list[PairResult]:
        if not self.pairs_folder.is_dir():
            return []
        results = []
        for path in sorted(self.pairs_folder.glob(f"*{_SEPARATOR}*.json")):
            if path.name.startswith("."):
                continue
            moving, fixed = path.name[: -len(".json")].split(_SEPARATOR)
            results.append(self.load(moving, fixed))
        return results

    def successful(self, moving: str, fixed: str) -> bool:
        result = self.load(moving, fixed)
        return result is not None and result.ok

    # --- the settings the pairs were computed with ---------------------------------------------------
    SETTINGS_STAMP = "settings.json"

    def settings_mismatch(self, settings: dict[str, Any]) -> str | None:
        """Before new pairs are saved: stamp a store without pairs with ``settings`` (``to_dict()``, JSON types)
        and return None; with pairs, say how their settings differ from ``settings`` (None: they do not)."""
        stamp_path = self.folder / self.SETTINGS_STAMP
        if not (self.pairs_folder.is_dir() and any(self.pairs_folder.glob(f"*{_SEPARATOR}*.json"))):
            save_json(settings, stamp_path)
            return None
        if not stamp_path.is_file():
            return "not recorded (the store predates settings stamps)"
        stamped = load_json(stamp_path)
        keys = sorted(k for k in set(settings) | set(stamped) if settings.get(k) != stamped.get(k))
        if not keys:
            return None
        return "different in " + ", ".join(f"{k} ({stamped.get(k)} then, {settings.get(k)} now)" for k in keys)
