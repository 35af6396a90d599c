"""Files of a task database: 8-bit PNG images and masks, CSV manifests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["PNG_COMPRESS_LEVEL", "save_png", "write_csv"]

PNG_COMPRESS_LEVEL = 1
"""zlib level of the PNG files: level 1 wrote 1.9-2.3x faster than Pillow's default 6 for 11 %
more bytes, and read back as fast (benchmarks/pretrain_throughput.py, docs/benchmarks.md)."""


def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write ``(H, W)`` or ``(H, W, 3)`` uint8 losslessly (creating the folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, compress_level=PNG_COMPRESS_LEVEL)


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """A manifest whose columns are every key of the rows, in first-seen order (missing: empty)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
