"""Checks that need file contents (not only the manifest), run before training starts."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medfoundry.data.images import image_size, read_mask
from medfoundry.data.record import Record
from medfoundry.errors import DataError

__all__ = ["check_mask_values"]


def check_mask_values(records: Iterable[Record], classes: list[str], ignore_index: int, where: str) -> None:
    """Every mask must have its image's size, and values that are class indices or ``ignore_index``.

    Raises:
        DataError: one line per bad mask, naming the file, the manifest row and what is wrong.
    """
    allowed = set(range(len(classes))) | {ignore_index}
    problems = []
    for record in records:
        if record.mask is None:
            continue
        try:
            mask = read_mask(record.mask)
            size = image_size(record.image)
        except DataError as e:
            problems.extend(e.problems)
            continue
        if mask.shape != size:
            problems.append(
                f"{where}, row {record.row}: mask {record.mask} is {mask.shape[1]}x{mask.shape[0]} but image "
                f"{record.image} is {size[1]}x{size[0]} (width x height)"
            )
            continue
        values = np.unique(mask)
        bad = sorted(set(values.tolist()) - allowed)
        if bad:
            problems.append(
                f"{where}, row {record.row}: mask {record.mask} has value(s) {bad[:10]} outside the "
                f"{len(classes)} declared classes (0..{len(classes) - 1}) and ignore_index {ignore_index}"
            )
    if problems:
        raise DataError(problems)
