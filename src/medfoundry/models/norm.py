"""GroupNorm sizing of the decoders and adapters (our own layers, not the backbone's)."""

from __future__ import annotations

from torch import nn

__all__ = ["group_count", "group_norm"]


def group_count(channels: int) -> int:
    """Up to 32 groups, each of at least 8 channels (FCOS's 32 x 8 at width 256).

    Not ``gcd(32, channels)``: narrow decoders would get 1-2 channels per group, which costs
    accuracy (Wu & He, "Group Normalization", ECCV 2018, Table 3), and a 1-channel group
    normalised over a 1x1 map (deep levels of small images) zeroes the features.

    Examples:
        >>> [group_count(c) for c in (8, 16, 48, 64, 256, 512)]
        [1, 2, 6, 8, 32, 32]
    """
    return max(g for g in range(1, 33) if channels % g == 0 and 8 * g <= max(channels, 8))


def group_norm(channels: int) -> nn.GroupNorm:
    """A GroupNorm for ``channels``; batch-independent, unlike BatchNorm."""
    return nn.GroupNorm(group_count(channels), channels)
