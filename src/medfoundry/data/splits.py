"""Train / validation / test splits: given ones kept, the rest deterministic, grouped and stratified.

Records whose source gives a split keep it. The others are assigned by group (patient,
volume or series: a record without a group is its own group), so that the samples of one
patient never straddle splits. The validation and test shares therefore count groups, not
samples (a study's training fractions then count samples: ``fractions.py``). Groups are
stratified by their most common class (classification tasks) with scikit-learn's
``train_test_split``; where a class has too few groups for that, the rare classes are
pooled, and where even that fails the split is simply random. The same records and seed
always give the same split.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sklearn.model_selection import train_test_split

from medfoundry.data.record import Record

__all__ = ["SplitPolicy", "split_records"]


class SplitPolicy(BaseModel):
    """How a task's records without a given split are divided.

    Args:
        val_fraction: Share of groups for validation; ``None``: the run's ``data.val_fraction``.
        test_fraction: Share of groups held out for testing.
        stratify: Keep class proportions alike across splits (classification tasks).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    val_fraction: float | None = Field(default=None, ge=0, lt=1)
    test_fraction: float = Field(default=0.0, ge=0, lt=1)
    stratify: bool = True

    @model_validator(mode="after")
    def _leaves_training_data(self) -> SplitPolicy:
        if (self.val_fraction or 0) + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be below 1 (training needs data)")
        return self


def split_records(
    records: Sequence[Record],
    *,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.0,
    stratify: bool = True,
) -> dict[str, list[Record]]:
    """Group records by split, assigning those without one (see module docstring).

    Args:
        records: One task's records.
        val_fraction: Share of unassigned groups that go to val (at least one group when > 0
            and there are two or more groups).
        seed: Seeds the assignment.
        test_fraction: Share of unassigned groups that go to test (at least one when > 0 and
            there are three or more groups).
        stratify: Stratify groups by class where records carry class indices.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (lists may be empty), in source order.
    """
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        if record.split is None:
            groups.setdefault(record.group if record.group is not None else f"\0{i}", []).append(i)
    keys = list(groups)
    strata = {k: _majority([records[i].label for i in groups[k]]) for k in keys} if stratify else {}
    n_test = min(_count(test_fraction, len(keys), minimum_groups=3), max(len(keys) - 1, 0))
    n_val = min(_count(val_fraction, len(keys), minimum_groups=2), max(len(keys) - n_test - 1, 0))
    rest, test = _pick(keys, strata, n_test, seed)
    train, val = _pick(rest, strata, n_val, seed + 1)
    assigned = {
        i: split for split, chosen in (("val", val), ("test", test)) for k in chosen for i in groups[k]
    }
    splits: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
    for i, record in enumerate(records):
        split = record.split or assigned.get(i, "train")
        splits[split].append(record if record.split else replace(record, split=split))
    return splits


def _count(fraction: float, n: int, minimum_groups: int) -> int:
    if fraction <= 0 or n == 0:
        return 0
    return max(round(fraction * n), 1 if n >= minimum_groups else 0)


def _majority(labels: list[int | None]) -> int | None:
    counts = Counter(label for label in labels if label is not None)
    if not counts:
        return None
    return min(counts, key=lambda label: (-counts[label], label))


def _pick(keys: list[str], strata: dict[str, Any], k: int, seed: int) -> tuple[list[str], list[str]]:
    """Split ``keys`` into the rest and ``k`` chosen, stratified where possible."""
    if k == 0 or not keys:
        return keys, []
    labels = [strata.get(key) for key in keys]
    counts = Counter(labels)
    pooled = [label if counts[label] >= 2 else "rare" for label in labels]
    chosen: list[str] = []
    for stratify in [labels, pooled, None] if None not in counts else [None]:
        try:
            _, chosen = train_test_split(keys, test_size=k, stratify=stratify, random_state=seed % 2**32)
            break
        except ValueError:  # too few groups of some class for a stratified split
            continue
    chosen_set = set(chosen)
    return [key for key in keys if key not in chosen_set], [key for key in keys if key in chosen_set]
