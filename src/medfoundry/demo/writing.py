"""Writing the demo database's files: 8-bit PNGs and CSV manifests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["save_png", "to_uint8", "write_csv"]


def to_uint8(image: np.ndarray, low_percentile: float = 1.0, high_percentile: float = 99.8) -> np.ndarray:
    """Linear scaling to 8 bits between two intensity percentiles (for 16-bit or float images)."""
    low, high = np.percentile(image, [low_percentile, high_percentile])
    scaled: np.ndarray = np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1) * 255
    return scaled.astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    """Save a ``(H, W)`` or ``(H, W, 3)`` uint8 array (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(array)).save(path)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """A manifest with the rows' keys as columns."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
