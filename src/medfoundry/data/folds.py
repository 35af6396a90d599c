"""Cross-validation folds that keep groups whole (patients, volumes, spatial blocks).

Images of one group are alike: a probe trained on some slices of a patient and scored on the
others scores that patient, not the task. ``group_folds`` deals whole groups into ``k`` folds, so
every fold's images come from groups no other fold holds. Out-of-fold predictions then score
every image once, each by a model that saw none of its group (Roberts et al. 2017, "Cross-
validation strategies for data with temporal, spatial, hierarchical, or phylogenetic structure").

The deal: the distinct groups in sorted order, shuffled by ``seed``, dealt round robin: the folds'
numbers of groups differ by at most one (their numbers of images may differ more). A record
without a group is a group of its own.

Examples:
    >>> from pathlib import Path
    >>> from medfoundry.data.record import Record
    >>> records = [Record(Path(f"{i}.png"), "train", i, group=f"p{i // 3}") for i in range(12)]
    >>> folds = group_folds(records, 2, seed=0)
    >>> sorted(set(folds.tolist())), [len(set(folds[i : i + 3].tolist())) for i in range(0, 12, 3)]
    ([0, 1], [1, 1, 1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medfoundry.data.record import Record

__all__ = ["group_count", "group_folds"]


def _group_names(records: Sequence[Record]) -> list[tuple[int, str]]:
    """Each record's group as a sortable name: ``(0, group)``, or ``(1, position)`` for a record
    without one (its own group)."""
    return [(0, r.group) if r.group is not None else (1, str(i)) for i, r in enumerate(records)]


def group_count(records: Sequence[Record]) -> int:
    """How many groups ``records`` come from (a record without a group is its own)."""
    return len(set(_group_names(records)))


def group_folds(records: Sequence[Record], k: int, *, seed: int | Sequence[int]) -> np.ndarray:
    """Each record's fold, ``0 .. k - 1``: whole groups dealt as the module docstring says.

    Args:
        records: The records to deal.
        k: Number of folds, at least 2 and at most the number of groups.
        seed: Seeds the shuffle (``numpy.random.default_rng`` accepts a sequence of ints).

    Raises:
        ValueError: ``k`` below 2 or above the number of groups.
    """
    names = _group_names(records)
    distinct = sorted(set(names))
    if not 2 <= k <= len(distinct):
        raise ValueError(f"{k} folds need 2 to {len(distinct)} (the number of groups)")
    index = {name: i for i, name in enumerate(distinct)}
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold_of_group = np.empty(len(distinct), dtype=np.int64)
    fold_of_group[order] = np.arange(len(distinct)) % k
    return fold_of_group[[index[name] for name in names]]
