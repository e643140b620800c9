"""A branch of the co-trained pair: a planned network that also hands out its last decoder feature map.

CCT-R's contrastive loss projects the decoder's last feature map (the input of the segmentation head).
dynamic-network-architectures returns only logits, so a forward hook captures that map:
- U-Nets (``PlainConvUNet``, ``ResidualEncoderUNet``): the output of the last decoder stage, full resolution.
- ``Primus2D``: the input of the patch decoder's final transposed convolution, at half resolution; it is
  upsampled bilinearly to the logits' resolution so features and predictions align pixel for pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cctrnet.networks.build import build_network


@dataclass
class BranchOutput:
    logits: torch.Tensor  # (b, classes, y, x)
    features: torch.Tensor | None  # (b, feature_channels, y, x), None unless asked for


def _feature_module(network: nn.Module, network_class: str) -> nn.Module:
    if network_class in ("PlainConvUNet", "ResidualEncoderUNet"):
        return network.decoder.stages[-1]
    if network_class == "Primus2D":
        return network.primus.up_projection.decode[-2]
    raise ValueError(f"no feature map known for network_class {network_class!r}")


class SegmentationBranch(nn.Module):
    """A planned network plus access to its last decoder feature map."""

    def __init__(self, architecture: dict[str, Any], input_channels: int, num_classes: int):
        super().__init__()
        self.network_class = architecture["network_class"]
        self.network = build_network(architecture, input_channels, num_classes)
        self._captured: torch.Tensor | None = None
        self._capture = False
        _feature_module(self.network, self.network_class).register_forward_hook(self._hook)
        self.feature_channels = self._count_feature_channels(architecture)

    def _count_feature_channels(self, architecture: dict[str, Any]) -> int:
        if self.network_class == "Primus2D":
            return _feature_module(self.network, self.network_class)[0].out_channels
        return int(architecture["kwargs"]["features_per_stage"][0])

    def _hook(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if self._capture:
            self._captured = output

    def forward(self, x: torch.Tensor, with_features: bool = False) -> BranchOutput:
        self._capture = with_features
        self._captured = None
        try:
            logits = self.network(x)
        finally:
            self._capture = False
        features = self._captured
        self._captured = None
        if features is not None:
            if features.dim() == 5:  # Primus: (b, c, 1, y, x)
                features = features[:, :, 0]
            if features.shape[-2:] != logits.shape[-2:]:
                features = F.interpolate(features, size=logits.shape[-2:], mode="bilinear", align_corners=False)
        return BranchOutput(logits, features)
