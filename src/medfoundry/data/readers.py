"""Decoding a record's pixels: 2D files here, slices and frames through their source's reader."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfoundry.data.images import decode_image, read_mask
from medfoundry.data.intensity import AutoIntensity
from medfoundry.data.masks import MaskMapping
from medfoundry.data.record import Pixels, Record

__all__ = ["FileReader", "decode_mask", "decode_record"]


@dataclass(frozen=True)
class FileReader:
    """Reads 2D image files (PNG, JPEG, TIFF, BMP, DICOM) and mask files (PNG, TIFF, NIfTI).

    Args:
        intensity: The task's intensity setting.
        mask_mapping: Stored mask values -> class indices; ``None`` keeps them.
    """

    intensity: Any = field(default_factory=AutoIntensity)
    mask_mapping: MaskMapping | None = None

    def read(self, record: Record) -> Pixels:
        notes: list[str] = []
        image = decode_image(record.image, intensity=self.intensity, frame=record.frame, notes=notes)
        return Pixels(image, self.read_mask(record, notes), tuple(notes))

    def read_mask(self, record: Record, notes: list[str] | None = None) -> np.ndarray | None:
        """The record's mask as class indices (without decoding the image), or ``None``."""
        if record.mask is None:
            return None
        mask = read_mask(record.mask, notes)
        if self.mask_mapping is not None:
            mask = self.mask_mapping.apply(mask, str(record.mask))
        return mask

    def cache_key(self, signature: Callable[[Path], str]) -> str:
        return repr((self.intensity, self.mask_mapping))


DEFAULT_READER = FileReader()


def decode_record(record: Record) -> Pixels:
    """Decode a record with its source's reader (2D files with default scaling when it has none).

    Returns:
        ``Pixels``: image ``(H, W, C)`` float32 in [0, 1] (``C`` 1 or 3), mask ``(H, W)`` int64 or None.

    Raises:
        DataError: naming the file (and frame) that cannot be decoded.
    """
    return (record.reader or DEFAULT_READER).read(record)


def decode_mask(record: Record) -> np.ndarray | None:
    """The record's mask as class indices, as ``decode_record`` gives it (stored values mapped,
    a slice of a label volume cut out), without decoding the image where the reader can.

    Raises:
        DataError: naming the file (and frame) that cannot be decoded.
    """
    reader = record.reader or DEFAULT_READER
    read_mask_only = getattr(reader, "read_mask", None)  # file and volume readers have it
    if read_mask_only is not None:
        mask: np.ndarray | None = read_mask_only(record)
        return mask
    return reader.read(record).mask
