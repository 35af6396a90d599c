"""A cell's per-item test results, kept so that intervals and paired comparisons can be
recomputed later without running the cell again.

Each test set of a cell (``all``, or a center group) stores what its task's metric accumulator
keeps per test item (``TaskMetrics.items``): the predicted probabilities and labels of a
classification task, each image's per-class pixel counts of a segmentation task, each
detection's score and match flags of a detection task. One compressed ``.npz`` per cell, with
keys ``<test set>/<array>``; the items are in the test split's order, which the study fixes, so
the arrays of two cells of the same task line up item by item. Each test set also stores its
number of items and each item's group (patient, volume, block: ``Record.group``) as an index,
which the bootstrap resamples when it resamples groups (``bootstrap.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medfoundry.data.record import Record
from medfoundry.safe_writes import write_file_with

__all__ = ["ITEM_GROUPS", "N_ITEMS", "load_predictions", "save_predictions", "item_layout"]

N_ITEMS = "n_items"
"""Array (0-d) every test set stores: its number of test items ``N``, the axis resamples weight."""

ITEM_GROUPS = "item_groups"
"""Array ``(N,)`` of int: each test item's group as an index (studies from before it have none)."""


def item_layout(records: Sequence[Record]) -> dict[str, np.ndarray]:
    """``N_ITEMS`` and ``ITEM_GROUPS`` of a test set: groups numbered in order of first
    appearance; a record without a group is a group of its own.

    Examples:
        >>> from pathlib import Path
        >>> rs = [Record(Path(f"{i}.png"), "test", i, group=g) for i, g in enumerate(["a", None, "a", "b"])]
        >>> item_layout(rs)[ITEM_GROUPS].tolist()
        [0, 1, 0, 2]
    """
    index: dict[object, int] = {}
    groups = [
        index.setdefault(r.group if r.group is not None else ("", i), len(index))
        for i, r in enumerate(records)
    ]
    return {N_ITEMS: np.asarray(len(records)), ITEM_GROUPS: np.asarray(groups, dtype=np.int64)}


def save_predictions(path: Path, items: Mapping[str, Mapping[str, np.ndarray]]) -> Path:
    """Write ``{test set: {array name: array}}`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        f"{test}/{name}": np.asarray(array) for test, named in items.items() for name, array in named.items()
    }
    return write_file_with(path, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]


def load_predictions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``{test set: {array name: array}}`` as ``save_predictions`` wrote it; ``{}`` when missing."""
    if not Path(path).is_file():
        return {}
    items: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as stored:
        for key in stored.files:
            test, _, name = key.rpartition("/")
            items.setdefault(test, {})[name] = stored[key]
    return items
