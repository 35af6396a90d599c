"""One sample as listed by a source, before any file is decoded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

__all__ = ["Box", "Record", "TargetKind"]

TargetKind = Literal["label", "multilabel", "mask", "boxes", "image"]
"""What a task needs from each sample: a class index, per-class 1/0/missing, a mask, boxes, or
nothing but the image (unlabelled data, e.g. for masked-image pretraining)."""


class Box(NamedTuple):
    """An axis-aligned box in pixels of the original image, and its class index."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: int


@dataclass(frozen=True)
class Record:
    """A sample's image path, split and target (only the field its task needs is set).

    Attributes:
        image: Image file.
        split: ``train``, ``val``, ``test`` or ``None`` (assigned later).
        row: Row (or position) in the source, for error messages.
        label: Class index (classification).
        labels: Per-class 1.0 / 0.0 / NaN for missing (multilabel).
        mask: Mask file (segmentation).
        boxes: Boxes (detection).
        group: Patient / volume / subject id; samples of one group never straddle splits.
        center: Acquisition site, for cross-center evaluation.
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
