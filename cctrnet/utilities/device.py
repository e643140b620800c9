"""Choosing the torch device: CUDA when present, else CPU; ``--device`` overrides."""
from __future__ import annotations

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto"):
    """``auto`` -> cuda if available else cpu; ``cuda`` without a GPU is an error that says so."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA GPU (use --device cpu or auto)")
    return device


def gpu_description(device) -> tuple[str, float]:
    """(name, total memory in GB) of a CUDA device."""
    import torch

    properties = torch.cuda.get_device_properties(device)
    return properties.name, properties.total_memory / 1024**3


AUTOCAST_DTYPE_CHOICES = ("auto", "bfloat16", "float16")
MEMORY_FORMAT_CHOICES = ("auto", "channels_last", "contiguous")


def uses_channels_last(device, setting: str = "auto") -> bool:
    """Whether 2D convolutions on ``device`` run on channels-last tensors.

    ``auto``: on CUDA, where cuDNN's tensor-core kernels work in channels-last; not on CPU, where it made a
    training step of either planned network 10-12 % slower (benchmarks.md, "Training memory format").
    """
    import torch

    if setting not in MEMORY_FORMAT_CHOICES:
        raise ValueError(f"memory_format must be one of {', '.join(MEMORY_FORMAT_CHOICES)}, got {setting!r}")
    return setting == "channels_last" or (setting == "auto" and torch.device(device).type == "cuda")


def training_autocast_dtype(device, setting: str = "auto"):
    """The autocast dtype of mixed-precision training on ``device``, None on CPU (no autocast there).

    ``auto``: bfloat16 where the GPU supports it (Ampere and newer: float32's range, so no gradient scaler is
    needed), else float16 (with a scaler). An explicit ``bfloat16`` on a GPU without it is an error that says so.
    """
    import torch

    if setting not in AUTOCAST_DTYPE_CHOICES:
        raise ValueError(f"mixed_precision_dtype must be one of {', '.join(AUTOCAST_DTYPE_CHOICES)}, got {setting!r}")
    if torch.device(device).type != "cuda":
        return None
    supported = bool(torch.cuda.is_bf16_supported())
    if setting == "bfloat16" and not supported:
        raise ValueError("mixed_precision_dtype=bfloat16: this GPU has no bfloat16 support; use auto or float16")
    if setting == "float16" or not supported:
        return torch.float16
    return torch.bfloat16
