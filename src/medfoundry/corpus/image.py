"""One 2D image of the corpus with its labels, as the source families produce it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import numpy as np

__all__ = ["BoxLabel", "CorpusImage", "Label", "Split"]

BoxLabel: TypeAlias = tuple[int, int, int, int, str]
"""``(x1, y1, x2, y2, class)`` in pixels, ``x2``/``y2`` exclusive."""
Label: TypeAlias = str | np.ndarray | list[BoxLabel]
"""A class name (classification), a ``(H, W)`` uint8 mask of class indices (segmentation) or
boxes (detection)."""
Split: TypeAlias = Literal["train", "val", "test"]


@dataclass
class CorpusImage:
    """A 2D image written once, used by every task that labels it.

    Attributes:
        source: Key of the source it comes from (``SOURCES``).
        name: Unique within the source; becomes the file name (letters, digits, ``_``, ``-``).
        pixels: ``(H, W)`` or ``(H, W, 3)`` uint8.
        group: Subject, volume, specimen or slab it belongs to; a group never straddles
            splits.
        labels: Task name -> label (see ``Label``).
        split: A fixed split (held-out tasks); ``None``: decided from the group.
        columns: Extra manifest columns of its task rows (e.g. the patch centre's coordinates
            a label was derived from, so that tests and users can check the rule).
    """

    source: str
    name: str
    pixels: np.ndarray
    group: str
    labels: dict[str, Label] = field(default_factory=dict)
    split: Split | None = None
    columns: dict[str, str] = field(default_factory=dict)
