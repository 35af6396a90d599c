"""Cross-validation folds keep groups whole, are balanced in groups and depend only on the seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medfoundry.data.folds import group_count, group_folds
from medfoundry.data.record import Record


def _records(groups: list[str | None]) -> list[Record]:
    return [Record(Path(f"{i}.png"), "train", i, label=i % 2, group=g) for i, g in enumerate(groups)]


def test_whole_groups_in_balanced_folds() -> None:
    groups = [f"p{i % 11}" for i in range(50)] + [None] * 3  # 11 patients, 3 ungrouped images
    records = _records(groups)
    folds = group_folds(records, 4, seed=7)
    assert group_count(records) == 14
    by_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds.tolist(), strict=True):
        if g is not None:
            by_group.setdefault(g, set()).add(f)
    assert all(len(f) == 1 for f in by_group.values())
    groups_per_fold = np.bincount(
        [next(iter(f)) for f in by_group.values()] + folds[-3:].tolist(), minlength=4
    )
    assert groups_per_fold.sum() == 14 and groups_per_fold.max() - groups_per_fold.min() <= 1
    np.testing.assert_array_equal(folds, group_folds(records, 4, seed=7))
    assert not np.array_equal(folds, group_folds(records, 4, seed=8))


def test_the_deal_does_not_depend_on_record_order() -> None:
    groups = [f"b{i % 9}" for i in range(36)]
    records = _records(groups)
    order = np.random.default_rng(0).permutation(len(records))
    shuffled = group_folds([records[i] for i in order], 3, seed=[1, 2])
    np.testing.assert_array_equal(shuffled, group_folds(records, 3, seed=[1, 2])[order])


@pytest.mark.parametrize("k", [1, 4])
def test_folds_outside_two_to_the_number_of_groups_are_refused(k: int) -> None:
    with pytest.raises(ValueError, match=f"{k} folds need 2 to 3"):
        group_folds(_records(["a", "b", "c", "a"]), k, seed=0)
