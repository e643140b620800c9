"""GPU speed features of prediction, as settings with safe defaults: autocast precision, memory format, compile.

``auto`` means "the fastest setting known to be safe on this device": on CUDA bfloat16 autocast where the GPU
supports it (Ampere and newer; no scaler is needed at inference either way), else float16, and channels-last
tensors; on CPU every feature is off, so CPU results are exactly those of plain float32 execution.
``torch.compile`` is never chosen by ``auto``: its first call compiles for minutes and recompiles for each new
batch shape, which only pays off for large folders (``--compile``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRECISION_CHOICES = ("auto", "bfloat16", "float16", "float32")
from cctrnet.utilities.device import MEMORY_FORMAT_CHOICES, uses_channels_last


@dataclass(frozen=True)
class DeviceSpeedSettings:
    """What the user asked for (``auto`` or an explicit choice); ``resolve`` turns it into what runs."""

    precision: str = "auto"
    memory_format: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CHOICES:
            raise ValueError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {self.precision!r}")
        if self.memory_format not in MEMORY_FORMAT_CHOICES:
            raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMAT_CHOICES)}, "
                             f"got {self.memory_format!r}")

    def resolve(self, device: Any) -> "ResolvedSpeedSettings":
        """The settings in force on ``device`` (a torch.device or its name)."""
        import torch

        device = torch.device(device)
        on_cuda = device.type == "cuda"
        precision = self.precision
        if precision == "auto":
            precision = ("bfloat16" if _bfloat16_supported(device) else "float16") if on_cuda else "float32"
        if precision in ("float16", "bfloat16") and not on_cuda:
            raise ValueError(f"--precision {precision} is for CUDA; on {device.type} prediction runs in float32 "
                             "(use --precision auto or float32)")
        if precision == "bfloat16" and not _bfloat16_supported(device):
            raise ValueError(f"--precision bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 support "
                             "(use float16 or auto)")
        channels_last = uses_channels_last(device, self.memory_format)
        return ResolvedSpeedSettings(precision, channels_last, self.compile)


@dataclass(frozen=True)
class ResolvedSpeedSettings:
    precision: str  # bfloat16, float16 or float32 (no autocast)
    channels_last: bool
    compile: bool

    @property
    def autocast_dtype(self) -> Any:
        """The torch dtype of autocast, or None for plain float32."""
        import torch

        return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.precision)

    def describe(self) -> str:
        return (f"{self.precision}{' autocast' if self.precision != 'float32' else ''}, "
                f"{'channels-last' if self.channels_last else 'contiguous'}"
                f"{', torch.compile' if self.compile else ''}")

    def prepare_network(self, network: Any) -> Any:
        """The network in the memory format (and compiled) as these settings say; eval mode is kept."""
        import torch

        if self.channels_last:
            network = network.to(memory_format=torch.channels_last)
        if self.compile:
            network = torch.compile(network)
        return network

    def prepare_batch(self, batch: Any) -> Any:
        import torch

        return batch.contiguous(memory_format=torch.channels_last) if self.channels_last else batch


def _bfloat16_supported(device: Any) -> bool:
    import torch

    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        return False
    try:
        return bool(torch.cuda.is_bf16_supported())
    except (RuntimeError, AssertionError):  # a torch without this check, or a broken driver
        return False
