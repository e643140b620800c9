"""Outcome of registering one ordered pair (moving onto fixed) with one method."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

STATUS_OK = "ok"
STATUS_FAILED = "failed"


@dataclass
class PairResult:
    """What one registration produced; ``transform_text`` (ITK .tfm, the affine part) is None when it failed."""

    moving: str
    fixed: str
    method: str
    engine: str
    status: str
    reason: str | None = None
    metric_name: str = ""
    metric_initial: float | None = None
    metric_final: float | None = None
    iterations: int = 0
    seconds: float = 0.0
    #: quality checks of a deformable pair (folded fraction, inverse consistency in mm, displacement size)
    quality: dict[str, Any] = field(default_factory=dict)
    transform_text: str | None = field(default=None, repr=False)
    #: compressed velocity field of a deformable pair (npz bytes, see velocity_field.velocity_to_bytes)
    field_bytes: bytes | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    def record(self) -> dict[str, Any]:
        """The human-readable JSON record (without the transform, which has its own file)."""
        values = asdict(self)
        values.pop("transform_text")
        values.pop("field_bytes")
        return values

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "PairResult":
        fields = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        return cls(**fields)
