"""A cell's per-item test results, kept so that intervals and paired comparisons can be
recomputed later without running the cell again.

Each test set of a cell (``all``, or a center group) stores what its task's metric accumulator
keeps per test item (``TaskMetrics.items``): the predicted probabilities and labels of a
classification task, each image's per-class pixel counts of a segmentation task, each
detection's score and match flags of a detection task. One compressed ``.npz`` per cell, with
keys ``<test set>/<array>``; the items are in the test split's order, which the study fixes, so
the arrays of two cells of the same task line up item by item.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medfoundry.safe_writes import write_file_with

__all__ = ["N_ITEMS", "load_predictions", "save_predictions"]

N_ITEMS = "n_items"
"""Array (0-d) every test set stores: its number of test items ``N``, the axis resamples weight."""


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
