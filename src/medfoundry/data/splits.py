"""Assigning records without a given split to train / val."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from medfoundry.data.record import Record

__all__ = ["split_records"]


def split_records(records: Sequence[Record], val_fraction: float, seed: int) -> dict[str, list[Record]]:
    """Group records by split; those without one go to train or val at random (by ``seed``).

    Records whose source gives a split keep it. Of the rest, ``round(val_fraction * n)`` (at
    least one when ``val_fraction > 0`` and there are two or more) go to val, the others to train.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (lists may be empty), in source order.
    """
    unassigned = [i for i, r in enumerate(records) if r.split is None]
    n_val = int(round(val_fraction * len(unassigned)))
    if val_fraction > 0 and len(unassigned) >= 2:
        n_val = min(max(n_val, 1), len(unassigned) - 1)
    rng = np.random.default_rng(seed)
    to_val = set(rng.permutation(unassigned)[:n_val].tolist()) if unassigned else set()
    splits: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for i, record in enumerate(records):
        split = record.split or ("val" if i in to_val else "train")
        splits[split].append(record if record.split else replace(record, split=split))
    return splits
