"""Mapping stored mask values to a task's class indices.

A source's ``mask_values`` is one of:

- absent: pixel value ``i`` is ``classes[i]`` (and the task's ``ignore_index`` is left alone);
  a mask that holds only 0 and the ignore index (a binary mask saved as 0/255) is then an
  error, since every foreground pixel would be dropped as unlabelled;
- a mapping ``{stored value: class name}``, e.g. ``{0: background, 255: lesion}``; a stored
  value that is neither listed nor the task's ``ignore_index`` is an error;
- ``instances``: an instance mask (0 = background, each object its own id), for a task with
  two classes (background and one object class): every id > 0 becomes class 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from medfoundry.errors import ConfigError, DataError

__all__ = ["MaskMapping", "MaskValues", "mask_mapping"]

MaskValues = dict[int, str] | Literal["instances"] | None
"""A source's ``mask_values`` setting (see module docstring)."""


@dataclass(frozen=True)
class MaskMapping:
    """``mask_values`` resolved against a task's classes.

    Attributes:
        lookup: Stored value -> class index, or ``None`` for identity.
        instances: Every id > 0 becomes class 1.
        ignore_index: Stored value passed through unchanged (unlabelled pixels).
        classes: The task's class names (to spell out the fix in messages).
    """

    lookup: tuple[tuple[int, int], ...] | None
    instances: bool
    ignore_index: int
    classes: tuple[str, ...] = ()

    def apply(self, mask: np.ndarray, where: str) -> np.ndarray:
        """``(H, W)`` stored values -> ``(H, W)`` int64 class indices.

        Raises:
            DataError: a stored value that the mapping does not list, or (without
                ``mask_values``) a mask of only 0 and the ignore index.
        """
        if self.instances:
            return np.where(mask == self.ignore_index, mask, (mask > 0).astype(np.int64))
        if self.lookup is None:
            self._check_not_binary(mask, where)
            return mask
        table = dict(self.lookup)
        values = np.unique(mask)
        unknown = [int(v) for v in values if int(v) not in table and int(v) != self.ignore_index]
        if unknown:
            raise DataError(
                f"{where}: mask value(s) {unknown[:10]} are not in mask_values "
                f"({', '.join(str(k) for k in table)}) nor the ignore index {self.ignore_index}"
            )
        out = mask.copy()
        for stored, index in self.lookup:
            out[mask == stored] = index
        return out

    def _check_not_binary(self, mask: np.ndarray, where: str) -> None:
        """A mask of only 0 and the ignore index read as class indices: a binary mask saved as
        0/255 whose foreground would silently count as unlabelled (and be left out of training
        and of every metric). Declaring ``mask_values`` says which reading is meant."""
        ignore = self.ignore_index
        values = set(np.unique(mask).tolist())
        if ignore not in values or not values <= {0, ignore}:
            return
        first = self.classes[0] if self.classes else "background"
        second = self.classes[1] if len(self.classes) > 1 else "lesion"
        raise DataError(
            f"{where}: mask holds only the values 0 and {ignore}, and without mask_values {ignore} is "
            f"the ignore index, so every foreground pixel would be dropped; write "
            f"mask_values: {{0: {first}, {ignore}: {second}}} in the task's source (or, if {ignore} "
            f"really marks unlabelled pixels, mask_values: {{0: {first}}})"
        )


def mask_mapping(
    mask_values: MaskValues, classes: list[str], ignore_index: int, *, where: str
) -> MaskMapping:
    """Resolve a source's ``mask_values`` against the task's classes.

    Raises:
        ConfigError: a class name that is not declared, or ``instances`` for a task that does
            not have exactly two classes.
    """
    if mask_values == "instances":
        if len(classes) != 2:
            raise ConfigError(
                f"{where}: mask_values 'instances' needs exactly 2 classes (background, object), "
                f"got {len(classes)}"
            )
        return MaskMapping(None, True, ignore_index)
    if not mask_values:
        return MaskMapping(None, False, ignore_index, tuple(classes))
    unknown = sorted({name for name in mask_values.values() if name not in classes})
    if unknown:
        raise ConfigError(
            f"{where}: mask_values names {', '.join(unknown)}, not declared classes ({', '.join(classes)})"
        )
    return MaskMapping(
        tuple((int(v), classes.index(name)) for v, name in mask_values.items()), False, ignore_index
    )
