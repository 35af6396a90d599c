"""Nested stratified subsets: nesting, determinism, proportions, coverage, groups, every label type."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from pathlib import Path

import pytest

from medfoundry.data.fractions import NestedFractions, record_classes
from medfoundry.data.record import Box, Record
from medfoundry.data.task_records import load_task_records
from medfoundry.errors import ConfigError
from medfoundry.tasks import TaskSpec

FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


def _labelled(counts: dict[int, int], group_size: int = 1) -> list[Record]:
    """Classification records, ``counts[c]`` of class c, interleaved; optionally grouped."""
    labels = [c for c, n in counts.items() for _ in range(n)]
    labels = labels[::2] + labels[1::2]
    return [
        Record(Path(f"{i}.png"), "train", i, label=c, group=f"p{i // group_size}" if group_size > 1 else None)
        for i, c in enumerate(labels)
    ]


def test_subsets_are_nested_deterministic_and_seed_dependent() -> None:
    records = _labelled({0: 300, 1: 150, 2: 50})
    subsets = [NestedFractions(records, seed=3).indices(f) for f in FRACTIONS]
    for small, large in zip(subsets, subsets[1:], strict=False):
        assert set(small) < set(large)
    assert subsets == [NestedFractions(records, seed=3).indices(f) for f in FRACTIONS]
    assert NestedFractions(records, seed=4).indices(0.1) != subsets[2]
    assert subsets[-1] == list(range(len(records)))


def test_subset_sizes_follow_the_fraction_and_classes_keep_their_proportions() -> None:
    counts = {0: 600, 1: 300, 2: 90, 3: 10}
    records = _labelled(counts)
    for seed in range(5):
        fractions = NestedFractions(records, seed)
        for f in FRACTIONS:
            chosen = fractions.subset(f)
            assert len(chosen) == round(f * len(records))
            per_class = Counter(r.label for r in chosen)
            for c, n in counts.items():
                assert per_class[c] >= 1, (f, c)
                assert abs(per_class[c] - f * n) <= 2, (seed, f, c, per_class[c], f * n)


def test_every_class_is_present_even_when_the_fraction_is_smaller_than_a_class() -> None:
    records = _labelled({0: 95, 1: 4, 2: 1})
    chosen = NestedFractions(records, seed=0).subset(0.01)
    assert {r.label for r in chosen} == {0, 1, 2}  # 3 records, more than 1% of 100


def test_groups_are_taken_whole_and_sizes_count_records() -> None:
    records = _labelled({0: 160, 1: 40}, group_size=4)
    fractions = NestedFractions(records, seed=1)
    for f in FRACTIONS:
        chosen = fractions.subset(f)
        per_group = Counter(r.group for r in chosen)
        assert set(per_group.values()) == {4}
        # whole groups of 4: at most 3 records over the target, unless two groups are needed to cover
        assert round(f * 200) <= len(chosen) < max(round(f * 200), 2 * 4) + 4


def test_multilabel_strata_cover_every_class_with_positives() -> None:
    # class 2 is positive only together with the rarer class 3, and twice alone
    nan = math.nan
    rows = [(1.0, 0.0, 0.0, 0.0)] * 60 + [(0.0, 1.0, nan, 0.0)] * 30 + [(0.0, 0.0, 1.0, 1.0)] * 3
    rows += [(0.0, 0.0, 1.0, 0.0)] * 2 + [(0.0, 0.0, 0.0, 0.0)] * 5
    records = [Record(Path(f"{i}.png"), "train", i, labels=labels) for i, labels in enumerate(rows)]
    assert record_classes(records[60]) == {1}  # missing labels are not positives
    for seed in range(5):
        chosen = NestedFractions(records, seed).subset(0.01)
        shown = set().union(*(record_classes(r) for r in chosen))
        assert shown == {0, 1, 2, 3}


def test_detection_strata_use_box_classes_and_images_without_boxes_form_a_stratum() -> None:
    records = [
        Record(Path(f"{i}.png"), "train", i, boxes=(Box(0, 0, 4, 4, i % 10 // 9),) if i % 2 else ())
        for i in range(100)
    ]
    chosen = NestedFractions(records, seed=0).subset(0.1)
    assert len(chosen) == 10
    assert {b.label for r in chosen for b in r.boxes or ()} == {0, 1}
    assert 3 <= sum(1 for r in chosen if not r.boxes) <= 7  # half the images have no boxes


def test_segmentation_strata_read_the_real_masks(small_db: Path) -> None:
    spec = TaskSpec(
        name="nuclei_seg",
        type="segmentation",
        classes=["background", "nucleus"],
        source={"path": small_db.parent / "nuclei_seg.csv"},
    )
    train = load_task_records(spec.name, spec.source, "mask", classes=spec.classes, seed=0, val_fraction=0.2)[
        "train"
    ]
    classes = [record_classes(r, ignore_index=255) for r in train]
    assert all(0 in c for c in classes) and any(1 in c for c in classes)
    chosen = NestedFractions(train, seed=0, ignore_index=255).subset(0.05)
    assert any(1 in record_classes(r) for r in chosen)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_a_config_error(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"outside \(0, 1\]"):
        NestedFractions(_labelled({0: 5, 1: 5}), seed=0).indices(fraction)


def test_segmentation_strata_are_classes_after_the_source_mapping(
    stardist_images: Path, tmp_path: Path
) -> None:
    # stardist's real instance mask stores one value per nucleus (1..N); mapped by
    # ``mask_values: instances`` the classes are background and nucleus, not N nucleus "classes"
    for split in ("train", "val"):
        shutil.copy(stardist_images / "img2d.tif", tmp_path / f"{split}.tif")
    (tmp_path / "nuclei.csv").write_text(
        f"image,mask,split\ntrain.tif,{stardist_images / 'mask2d.tif'},train\n"
        f"val.tif,{stardist_images / 'mask2d.tif'},val\n"
    )
    spec = TaskSpec(
        name="nuclei",
        type="segmentation",
        classes=["background", "nucleus"],
        source={"path": tmp_path / "nuclei.csv", "mask_values": "instances"},
    )
    (record,) = load_task_records(
        spec.name, spec.source, "mask", classes=spec.classes, seed=0, val_fraction=0.2
    )["train"]
    assert record_classes(record, ignore_index=255) == {0, 1}
