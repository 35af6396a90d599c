"""The shared detection decoder: an FPN over the encoder's pyramid plus FCOS's two conv towers.

All detection tasks share it; each adds only its ``FCOSHead`` (``medfoundry.tasks.detection``).
The FPN (torchvision's) runs on the encoder levels of stride 8 and up, and stride-2 convolutions
add coarser levels (P6, P7 as in RetinaNet / FCOS [0]) up to ``num_levels``: strides
8, 16, 32, 64, 128 by default. The classification and box towers, each ``num_convs`` x
(3x3 conv, GroupNorm, ReLU), run on every level with the same weights [0]. GroupNorm [1]
rather than BatchNorm because each optimisation step sees one task's batch, whose statistics
would otherwise leak into the running averages of every task.

[0] Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019.
[1] Wu and He, "Group Normalization", ECCV 2018.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock

from medfoundry.errors import ConfigError
from medfoundry.models.norm import group_norm
from medfoundry.tasks.detection import MAX_LEVELS, DetectionFeatures

__all__ = ["DetectionFeatures", "FCOSDecoder"]

FINEST_STRIDE = 8
"""FCOS's finest level (P3), to which its per-level box size ranges (0-64 px first) are tied."""


class FCOSDecoder(nn.Module):
    """Feature pyramid and shared conv towers for FCOS heads.

    Args:
        in_channels: Channels of each encoder map, finest first.
        in_strides: Stride of each encoder map in input pixels, finest first; must include 8,
            and the maps of stride 8 and up must double (8, 16, 32, ...).
        channels: Width of the pyramid and the towers (the heads' ``in_channels``).
        num_convs: Conv layers per tower.
        num_levels: Output levels, 1 to 5, strides ``8 * 2**l``; levels beyond the encoder's
            coarsest map are made by stride-2 convolutions.

    Attributes:
        out_channels: Width of every output map.
        strides: Stride of each output level, known before the first forward.

    Raises:
        ConfigError: When the encoder has no stride-8 map, its strides do not double or a
            size is out of range.

    Examples:
        >>> decoder = FCOSDecoder([64, 128, 256, 512], [4, 8, 16, 32], channels=32)
        >>> maps = [torch.zeros(1, c, 64 // s, 64 // s) for c, s in zip([64, 128, 256, 512], [4, 8, 16, 32])]
        >>> out = decoder(maps)
        >>> out.strides, tuple(out.cls_feats[0].shape), tuple(out.box_feats[-1].shape)
        ((8, 16, 32, 64, 128), (1, 32, 8, 8), (1, 32, 1, 1))
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[float],
        *,
        channels: int = 64,
        num_convs: int = 2,
        num_levels: int = 5,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(in_strides):
            raise ConfigError(
                f"detection decoder: {len(in_channels)} in_channels {in_channels} but "
                f"{len(in_strides)} in_strides {in_strides}; give one of each per encoder map"
            )
        if not 1 <= num_levels <= MAX_LEVELS or channels < 1 or num_convs < 0:
            raise ConfigError(
                f"detection decoder: need 1 <= num_levels <= {MAX_LEVELS} (FCOS's strides 8-128), "
                f"channels >= 1 and num_convs >= 0, got "
                f"num_levels={num_levels}, channels={channels}, num_convs={num_convs}"
            )
        used = [i for i, s in enumerate(in_strides) if s >= FINEST_STRIDE][:num_levels]
        expected = [FINEST_STRIDE * 2**level for level in range(len(used))]
        if not used or [in_strides[i] for i in used] != expected:
            raise ConfigError(
                f"detection decoder: needs encoder maps at strides {expected or [FINEST_STRIDE]}..., got "
                f"strides {in_strides}; use an encoder with a stride-8 map (a plain ViT needs a simple "
                "feature pyramid first)"
            )
        self._num_inputs = len(in_channels)
        self._used = used
        num_extra = num_levels - len(used)
        self.fpn = FeaturePyramidNetwork(
            [in_channels[i] for i in used],
            channels,
            extra_blocks=_StridedLevels(channels, num_extra) if num_extra else None,
        )
        self.cls_tower = _tower(channels, num_convs)
        self.box_tower = _tower(channels, num_convs)
        self.out_channels = channels
        self.strides = tuple(FINEST_STRIDE * 2**level for level in range(num_levels))

    def forward(self, features: list[torch.Tensor]) -> DetectionFeatures:
        """Tower features per level.

        Args:
            features: The encoder's maps ``(B, in_channels[i], H / in_strides[i], W / in_strides[i])``.

        Returns:
            ``cls_feats`` and ``box_feats``, ``(B, out_channels, H_l, W_l)`` per level of ``strides``.
        """
        if len(features) != self._num_inputs:
            raise ValueError(
                f"FCOSDecoder was built for {self._num_inputs} encoder maps, got {len(features)} "
                f"of shapes {[tuple(f.shape) for f in features]}"
            )
        pyramid = list(self.fpn(OrderedDict((str(i), features[i]) for i in self._used)).values())
        return DetectionFeatures(
            cls_feats=[self.cls_tower(p) for p in pyramid],
            box_feats=[self.box_tower(p) for p in pyramid],
            strides=self.strides,
        )


class _StridedLevels(ExtraFPNBlock):
    """``num_levels`` coarser levels, each a stride-2 3x3 conv of the previous one.

    ``torchvision.ops.feature_pyramid_network.LastLevelP6P7`` generalised to any count: the
    first conv reads the coarsest FPN output, later ones its ReLU, with its initialisation.
    """

    def __init__(self, channels: int, num_levels: int) -> None:
        super().__init__()
        convs = [nn.Conv2d(channels, channels, 3, stride=2, padding=1) for _ in range(num_levels)]
        for conv in convs:
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(conv.get_parameter("bias"))  # typed, unlike the Optional ``conv.bias``
        self.convs = nn.ModuleList(convs)

    def forward(
        self, results: list[torch.Tensor], x: list[torch.Tensor], names: list[str]
    ) -> tuple[list[torch.Tensor], list[str]]:
        level = results[-1]
        for i, conv in enumerate(self.convs):
            level = conv(level if i == 0 else F.relu(level))
            results.append(level)
            names.append(f"extra{i}")
        return results, names


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, GroupNorm, ReLU), initialised as in FCOS."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        nn.init.normal_(conv.weight, std=0.01)
        nn.init.zeros_(conv.get_parameter("bias"))
        layers += [conv, group_norm(channels), nn.ReLU()]
    return nn.Sequential(*layers)
