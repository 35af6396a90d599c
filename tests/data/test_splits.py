from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from medfoundry.data import Record, SplitPolicy, split_records


def _records(n: int, groups: int | None = None, classes: int = 2) -> list[Record]:
    return [
        Record(
            Path(f"{i}.png"), None, i, label=i % classes, group=None if groups is None else f"p{i % groups}"
        )
        for i in range(n)
    ]


def test_given_splits_are_kept_and_the_rest_assigned() -> None:
    records = [Record(Path("a.png"), "test", 2, label=0), *_records(10)]
    splits = split_records(records, val_fraction=0.2, seed=0)
    assert [r.image.name for r in splits["test"]] == ["a.png"]
    assert len(splits["val"]) == 2 and len(splits["train"]) == 8
    assert all(r.split == name for name, rs in splits.items() for r in rs)


def test_slices_of_one_patient_never_straddle_splits() -> None:
    records = _records(120, groups=12)  # 10 slices per patient
    splits = split_records(records, val_fraction=0.25, seed=3, test_fraction=0.25)
    patients = {name: {r.group for r in rs} for name, rs in splits.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert not (patients["val"] & patients["test"])
    assert [len(patients[s]) for s in ("train", "val", "test")] == [6, 3, 3]  # fractions count patients


def test_stratified_and_deterministic() -> None:
    records = _records(100, classes=4)
    a = split_records(records, val_fraction=0.2, seed=1)
    assert Counter(r.label for r in a["val"]) == {0: 5, 1: 5, 2: 5, 3: 5}
    assert a == split_records(records, val_fraction=0.2, seed=1)
    assert a["val"] != split_records(records, val_fraction=0.2, seed=2)["val"]


def test_rare_classes_and_tiny_sources_still_split() -> None:
    records = [*_records(20, classes=2), Record(Path("rare.png"), None, 99, label=5)]
    splits = split_records(records, val_fraction=0.2, seed=0)
    assert len(splits["val"]) == 4 and len(splits["train"]) == 17
    two = split_records(_records(2), val_fraction=0.01, seed=0)
    assert len(two["val"]) == 1 and len(two["train"]) == 1  # at least one validation sample
    assert [r.split for r in split_records(_records(1), val_fraction=0.5, seed=0)["train"]] == ["train"]


def test_policy_leaves_training_data() -> None:
    with pytest.raises(ValidationError, match="val_fraction \\+ test_fraction must be below 1"):
        SplitPolicy(val_fraction=0.5, test_fraction=0.5)
