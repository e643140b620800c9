"""What the settings classes of the phantom generators share: copies with changes, dicts, range checks."""
from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Sequence

Range = tuple[float, float]


class GeneratorConfig:
    """Mixin for the frozen dataclasses that hold a generator's settings."""

    def with_changes(self, **changes: Any):
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_ranges(self, names: Sequence[str], low_may_be_zero: bool = False) -> None:
        """Each named field is ``(low, high)`` with ``0 < low <= high`` (``0 <= low`` when allowed)."""
        for name in names:
            low, high = getattr(self, name)
            if not (0 <= low if low_may_be_zero else 0 < low) or low > high:
                bound = "0 <=" if low_may_be_zero else "0 <"
                raise ValueError(f"{type(self).__name__}.{name} must be (low, high) with {bound} low <= high, "
                                 f"got {(low, high)}")

    def check_non_negative(self, names: Sequence[str]) -> None:
        for name in names:
            if getattr(self, name) < 0:
                raise ValueError(f"{type(self).__name__}.{name} must be >= 0, got {getattr(self, name)}")
