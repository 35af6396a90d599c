"""The shared U-Net pixel decoder: feature pyramid -> per-pixel embedding at input resolution.

Every segmentation task puts one 1x1 conv on this embedding, so a new segmentation task costs a
few parameters while the decoder itself learns from all of them [0]. Skip connections reach
every pyramid level; below the finest level the decoder keeps upsampling by two (U-Net style)
until it reaches the input resolution.

Cost: the blocks below the finest level work at 1/2 and 1/1 of the input resolution, where
every layer touches 4-16x the pixels of the stride-4 level. With two convolutions per block
they made the decoder cost more than a ResNet-18 encoder at 128 px (forward + backward); one
convolution per block there (``up_convs=1``, the default) made a classification + segmentation
step of ResNet-18 at 128 px faster with no worse validation losses (docs/benchmarks.md).

[0] Schäfer et al., Nature Computational Science 4, 495-509 (2024).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.models.norm import group_norm

__all__ = ["UNetPixelDecoder"]


def conv_block(in_channels: int, out_channels: int, convs: int = 2) -> nn.Sequential:
    """``convs`` 3x3 conv + GroupNorm + GELU layers (GroupNorm: batches hold one task at a time)."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
            group_norm(out_channels),
            nn.GELU(),
        ]
    return nn.Sequential(*layers)


class UNetPixelDecoder(nn.Module):
    """Top-down U-Net decoder shared by all segmentation tasks.

    Input: the encoder's maps, finest first, with channels ``in_channels`` and strides
    ``in_strides``. Output: ``(B, embed_dim, H, W)`` at the input image's size.

    Args:
        in_channels: Channels of each pyramid level, finest first.
        in_strides: Stride of each level, finest first (e.g. ``[4, 8, 16, 32]``).
        channels: Width of the decoder at the pyramid levels.
        embed_dim: Channels of the per-pixel embedding (16-32 in UMedPT).
        up_convs: 3x3 convolutions per block below the finest pyramid level (checkpoints of
            format 1 used 2).

    Examples:
        >>> dec = UNetPixelDecoder([8, 16], [4, 8], channels=16, embed_dim=4)
        >>> feats = [torch.rand(2, 8, 16, 16), torch.rand(2, 16, 8, 8)]
        >>> tuple(dec(feats, (64, 64)).shape)
        (2, 4, 64, 64)
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[float],
        *,
        channels: int = 64,
        embed_dim: int = 32,
        up_convs: int = 1,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        # one fusion block per level below the deepest: [upsampled deeper, lateral skip] -> channels
        self.fuse = nn.ModuleList(conv_block(2 * channels, channels) for _ in in_channels[:-1])
        # from the finest level's stride down to stride 1, halving width at each x2 step
        steps = max(0, round(math.log2(min(in_strides))))
        widths = [max(embed_dim, channels // 2 ** (i + 1)) for i in range(steps)]
        ins = [channels, *widths[:-1]]
        self.up = nn.ModuleList(conv_block(i, o, up_convs) for i, o in zip(ins, widths, strict=True))
        self.proj = nn.Conv2d(widths[-1] if widths else channels, embed_dim, 1)

    def forward(self, features: list[torch.Tensor], image_size: tuple[int, int]) -> torch.Tensor:
        x = self.laterals[-1](features[-1])
        for i in range(len(features) - 2, -1, -1):
            skip = self.laterals[i](features[i])
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = self.fuse[i](torch.cat([x, skip], dim=1))
        for block in self.up:
            x = block(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        if tuple(x.shape[-2:]) != tuple(image_size):
            x = F.interpolate(x, size=image_size, mode="bilinear", align_corners=False)
        embedding: torch.Tensor = self.proj(x)
        return embedding
