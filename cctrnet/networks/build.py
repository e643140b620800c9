"""Building branch networks from the architecture entries a plan stores.

A plan stores each branch as ``{"network_class": NAME, "kwargs": {...}}`` with JSON values only; class
arguments (``conv_op``, ``norm_op``, ``nonlin``) are dotted import paths, resolved here. Names:
``PlainConvUNet`` and ``ResidualEncoderUNet`` (dynamic-network-architectures, 2D convolutions) and
``Primus2D`` (dynamic-network-architectures' Primus run on a slice as a depth-1 volume).
"""
from __future__ import annotations

import importlib
from typing import Any

_CLASS_ARGUMENTS = ("conv_op", "norm_op", "nonlin", "dropout_op")
NETWORK_CLASSES = ("PlainConvUNet", "ResidualEncoderUNet", "Primus2D")


def _resolve(dotted: str | None) -> Any:
    if dotted is None:
        return None
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_network(architecture: dict[str, Any], input_channels: int, num_classes: int):
    """Instantiate a branch network (torch.nn.Module taking (b, c, y, x) and returning logits)."""
    name = architecture["network_class"]
    kwargs = dict(architecture["kwargs"])
    if name in ("PlainConvUNet", "ResidualEncoderUNet"):
        from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

        for key in _CLASS_ARGUMENTS:
            if key in kwargs:
                kwargs[key] = _resolve(kwargs[key])
        cls = PlainConvUNet if name == "PlainConvUNet" else ResidualEncoderUNet
        return cls(input_channels=input_channels, num_classes=num_classes, **kwargs)
    if name == "Primus2D":
        return Primus2D(input_channels, num_classes, **kwargs)
    raise ValueError(f"unknown network_class {name!r} in the plan; known: {', '.join(NETWORK_CLASSES)}")


def _primus2d_class():
    import torch
    from dynamic_network_architectures.architectures.primus import Primus

    class _Primus2D(torch.nn.Module):
        """Primus on 2D slices: a (b, c, y, x) batch runs as (b, c, 1, y, x) volumes."""

        def __init__(self, input_channels: int, num_classes: int, patch_size_yx: list[int], embed_dim: int,
                     patch_embed_size_yx: list[int], depth: int, num_heads: int, **extra: Any):
            super().__init__()
            self.primus = Primus(
                input_channels, embed_dim, (1, *patch_embed_size_yx), num_classes, eva_depth=depth,
                eva_numheads=num_heads, input_shape=(1, *patch_size_yx), **extra,
            )

        def forward(self, x):
            return self.primus(x[:, :, None])[:, :, 0]

    return _Primus2D


def Primus2D(input_channels: int, num_classes: int, **kwargs: Any):
    return _primus2d_class()(input_channels, num_classes, **kwargs)
