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
