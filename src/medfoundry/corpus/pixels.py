"""Pixel values of database images: any intensity range to 8 bits."""

from __future__ import annotations

import numpy as np

__all__ = ["to_uint8"]


def to_uint8(image: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.8) -> np.ndarray:
    """Linear scaling to 8 bits between two intensity percentiles (for 16-bit or float images)."""
    low, high = np.percentile(image, [low_percentile, high_percentile])
    scaled: np.ndarray = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1) * 255
    return scaled.astype(np.uint8)
