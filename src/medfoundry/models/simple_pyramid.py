"""Simple feature pyramid for plain (single-stride) ViT encoders, as in ViTDet [0].

From the last map at stride ``s`` it makes strides ``s/4``, ``s/2``, ``s`` and ``2s`` with
transposed convolutions and max pooling, so decoders built for hierarchical backbones work
unchanged on a ViT.

[0] Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV 2022.
"""

from __future__ import annotations

import torch
from torch import nn

from medfoundry.models.feature_level import FeatureLevel
from medfoundry.models.norm import group_norm

__all__ = ["SimplePyramid"]


class SimplePyramid(nn.Module):
    """Stride ``s`` map -> four maps at ``s/4, s/2, s, 2s`` with ``C/4, C/2, C, C`` channels.

    Args:
        channels: Channels of the input map.
        stride: Its stride.

    Examples:
        >>> pyramid = SimplePyramid(64, 16)
        >>> [tuple(f.shape) for f in pyramid(torch.rand(1, 64, 4, 4))]
        [(1, 16, 16, 16), (1, 32, 8, 8), (1, 64, 4, 4), (1, 64, 2, 2)]
    """

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.up4 = nn.Sequential(
            nn.ConvTranspose2d(channels, half, 2, stride=2),
            group_norm(half),
            nn.GELU(),
            nn.ConvTranspose2d(half, quarter, 2, stride=2),
        )
        self.up2 = nn.ConvTranspose2d(channels, half, 2, stride=2)
        self.down2 = nn.MaxPool2d(2, ceil_mode=True)
        self.feature_info: list[FeatureLevel] = [
            FeatureLevel(quarter, stride / 4),
            FeatureLevel(half, stride / 2),
            FeatureLevel(channels, stride),
            FeatureLevel(channels, stride * 2),
        ]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.up4(x), self.up2(x), x, self.down2(x)]
