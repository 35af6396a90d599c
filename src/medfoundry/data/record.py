"""One sample as listed by a source, before any file is decoded."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import numpy as np

__all__ = [
    "DEFAULT_IGNORE_INDEX",
    "Box",
    "Pixels",
    "Record",
    "RecordReader",
    "TargetKind",
    "ignore_index_or_default",
]

TargetKind = Literal["label", "multilabel", "mask", "boxes", "image"]
"""What a task needs from each sample: a class index, per-class 1/0/missing, a mask, boxes, or
nothing but the image (unlabelled data, e.g. for masked-image pretraining)."""

DEFAULT_IGNORE_INDEX = 255
"""The mask value that is no class (unlabelled pixels), unless a task says otherwise."""


def ignore_index_or_default(ignore_index: int | None) -> int:
    """A task's ignore index, or ``DEFAULT_IGNORE_INDEX`` for task types without one.

    Examples:
        >>> ignore_index_or_default(None), ignore_index_or_default(0)
        (255, 0)
    """
    return DEFAULT_IGNORE_INDEX if ignore_index is None else ignore_index


class Box(NamedTuple):
    """An axis-aligned box in pixels of the original image, and its class index."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: int


class Pixels(NamedTuple):
    """A decoded sample at its own resolution.

    Attributes:
        image: ``(H, W, C)`` float32 in [0, 1], ``C`` is 1 (gray) or 3 (colour or CT windows).
        mask: ``(H, W)`` int64 class indices (or the task's ignore index), or ``None``.
        notes: What decoding changed on the way (alpha dropped, palette converted), one line each.
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    notes: tuple[str, ...] = ()


class RecordReader(Protocol):
    """Decodes the pixels of records that are not plain 2D image files (slices, frames, arrays).

    A source makes one reader per setting (e.g. per volume series) and attaches it to its records.
    Readers are picklable, so that DataLoader workers can decode.
    """

    def read(self, record: Record) -> Pixels:
        """Decode ``record`` (raises ``DataError`` naming the file)."""
        ...

    def cache_key(self, signature: Callable[[Path], str]) -> str:
        """Everything besides ``record.image`` / ``record.mask`` that changes the pixels: settings and
        any further files (``signature(path)`` fingerprints a file)."""
        ...


@dataclass(frozen=True)
class Record:
    """A sample's image, split and target (only the field its task needs is set).

    Attributes:
        image: Image file (for a slice or frame: the file it is in).
        split: ``train``, ``val``, ``test`` or ``None`` (assigned later).
        row: Row (or position) in the source, for error messages.
        label: Class index (classification).
        labels: Per-class 1.0 / 0.0 / NaN for missing (multilabel).
        mask: Mask file (segmentation); for a slice, the label volume.
        boxes: Boxes (detection).
        group: Patient / volume / subject id; samples of one group never straddle splits.
        center: Acquisition site, for cross-center evaluation.
        frame: Position inside a multi-image file: a slice of a volume (along the source's
            axis), a frame of a multi-frame DICOM, an item of a MedMNIST array.
        member: The array of a file that holds several (MedMNIST's ``train_images``), whose
            items ``frame`` counts.
        reader: Decodes this record; ``None`` means a plain 2D image file (PNG, JPEG, TIFF, BMP)
            or DICOM file, read with default intensity scaling.
    """

    image: Path
    split: str | None
    row: int
    label: int | None = None
    labels: tuple[float, ...] | None = None
    mask: Path | None = None
    boxes: tuple[Box, ...] | None = None
    group: str | None = None
    center: str | None = None
    frame: int | None = None
    member: str | None = None
    reader: RecordReader | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[Path, str | None, int | None]:
        """What tells samples apart: the file and the position inside it (many samples of a
        volume, multi-frame DICOM or MedMNIST file share one file)."""
        return self.image, self.member, self.frame

    @property
    def where(self) -> str:
        """The image (and position) for messages, e.g. ``ct.nii.gz [12]``, ``a.npz [val_images 3]``."""
        position = " ".join(str(p) for p in (self.member, self.frame) if p is not None)
        return f"{self.image} [{position}]" if position else str(self.image)
