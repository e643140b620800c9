"""Projection head of the contrastive loss: per pixel, a small MLP (two 1x1 convolutions), then unit length.

Decision: no normalisation layer between the convolutions (conv-ReLU-conv). The head is then a function
of each pixel alone, so projecting only the pixels that SCL samples, or a strided subset of a slice for
the memory bank, gives exactly the vectors the full map would hold; BatchNorm would make them depend on
which pixels share the batch. ``ProjectorSettings(batch_norm=True)`` gives conv-BN-ReLU-conv.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ProjectorSettings:
    hidden_channels: int = 256
    out_channels: int = 128
    batch_norm: bool = False


class ProjectionHead(nn.Module):
    """Maps decoder features (b, in_channels, h, w) or per-pixel vectors (n, in_channels) to unit vectors.

    The 1x1 convolutions are held as linear layers applied to channels-last pixels: the same maps, and
    much faster than a convolution on a list of (n, c, 1, 1) vectors.
    """

    def __init__(self, in_channels: int, settings: ProjectorSettings = ProjectorSettings()) -> None:
        super().__init__()
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        layers: list[nn.Module] = [nn.Linear(in_channels, settings.hidden_channels, bias=not settings.batch_norm)]
        if settings.batch_norm:
            layers.append(nn.BatchNorm1d(settings.hidden_channels))
        layers += [nn.ReLU(inplace=True), nn.Linear(settings.hidden_channels, settings.out_channels)]
        self.layers = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = settings.out_channels

    def forward(self, decoder_features: torch.Tensor) -> torch.Tensor:
        if decoder_features.ndim not in (2, 4) or decoder_features.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (b, {self.in_channels}, h, w) or (n, {self.in_channels}), got {tuple(decoder_features.shape)}"
            )
        if decoder_features.ndim == 2:
            return F.normalize(self.layers(decoder_features), dim=1)
        b, c, h, w = decoder_features.shape
        pixels = decoder_features.permute(0, 2, 3, 1).reshape(b * h * w, c)
        projected = F.normalize(self.layers(pixels), dim=1)
        return projected.reshape(b, h, w, self.out_channels).permute(0, 3, 1, 2)
