"""What an encoder output level is, known before any forward pass: channels and stride."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FeatureLevel"]


@dataclass(frozen=True)
class FeatureLevel:
    """One pyramid level: channels and stride (input pixels per feature pixel)."""

    channels: int
    stride: float
