"""Per-task statistics and warnings, for ``medfoundry validate-data``."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from medfoundry.data.record import Record, TargetKind
from medfoundry.data.task_records import TaskData, case_variants

__all__ = ["COUNTED_AS", "FEW_EXAMPLES", "MAX_UPSAMPLING", "TaskSummary", "summarize_task"]

FEW_EXAMPLES = 5
"""A class with fewer examples than this gets a warning."""
MAX_UPSAMPLING = 4.0
"""Images enlarged more than this to the cached size get a warning: they are tiny for the task."""


@dataclass
class TaskSummary:
    """What a task's data holds.

    Attributes:
        name: Task name.
        target: What the task reads from each sample.
        classes: Class names.
        class_counts: Examples per class: samples (classification), positive samples
            (multilabel), images showing the class (segmentation), boxes (detection).
        split_sizes: Samples per split.
        image_sizes: Smallest and largest decoded ``(height, width)``.
        warnings: One line each.
        skipped: Problems of the samples left out by ``on_error: skip``, one line each.
        notes: What reading changed or passed over, one line per file.
    """

    name: str
    target: TargetKind
    classes: list[str]
    class_counts: dict[str, int]
    split_sizes: dict[str, int]
    image_sizes: tuple[tuple[int, int], tuple[int, int]] | None
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


COUNTED_AS: dict[TargetKind, str] = {
    "label": "samples",
    "multilabel": "positive samples",
    "mask": "images showing it",
    "boxes": "boxes",
    "image": "",
}
"""What a class count counts, per target kind (validate-data's table and the few-examples warning)."""


def summarize_task(name: str, target: TargetKind, classes: list[str], *, data: TaskData) -> TaskSummary:
    """Count a task's samples, classes and sizes, and collect warnings.

    Args:
        name: Task name.
        target: What the task reads.
        classes: Its classes.
        data: Its records and prepared splits (every split whose sizes and masks should count).
    """
    records = [r for split in ("train", "val", "test") for r in data.records[split]]
    counts = _class_counts(target, classes, records, data)
    sizes = [p.arrays.original_sizes() for p in data.prepared.values() if len(p.arrays)]
    image_sizes = None
    if sizes:
        stacked = np.concatenate(sizes)
        area = stacked[:, 0].astype(np.int64) * stacked[:, 1]
        (h1, w1), (h2, w2) = stacked[area.argmin()].tolist(), stacked[area.argmax()].tolist()
        image_sizes = ((h1, w1), (h2, w2))
    summary = TaskSummary(
        name,
        target,
        classes,
        counts,
        {split: len(data.records[split]) for split in ("train", "val", "test")},
        image_sizes,
        skipped=list(data.skipped),
        notes=list(data.notes),
    )
    summary.warnings = _warnings(target, classes, counts, data) + _upsampling_warnings(data)
    return summary


def _class_counts(
    target: TargetKind, classes: list[str], records: list[Record], data: TaskData
) -> dict[str, int]:
    counts: Counter[int] = Counter()
    if target == "label":
        counts.update(r.label for r in records if r.label is not None)
    elif target == "multilabel":
        for r in records:
            counts.update(i for i, v in enumerate(r.labels or ()) if v == 1)
    elif target == "boxes":
        counts.update(b.label for r in records for b in r.boxes or ())
    elif target == "mask":
        for prepared in data.prepared.values():
            masks = prepared.arrays.arrays.get("masks")
            if masks is None:
                continue
            for row in prepared.arrays.rows:
                present = np.unique(np.asarray(masks[row]))
                counts.update(int(v) for v in present if 0 <= v < len(classes))
    return {name: counts.get(i, 0) for i, name in enumerate(classes)}


def _warnings(target: TargetKind, classes: list[str], counts: dict[str, int], data: TaskData) -> list[str]:
    warnings = [
        f"classes {' and '.join(repr(name) for name in group)} differ only in case; are they one class?"
        for group in case_variants(classes)
    ]
    what = COUNTED_AS[target]
    for name, count in counts.items():
        if count < FEW_EXAMPLES:
            warnings.append(f"class '{name}' has {count} {what} (fewer than {FEW_EXAMPLES})")
    if target == "label":
        in_train = {r.label for r in data.records["train"]}
        missing = [name for i, name in enumerate(classes) if i not in in_train and counts.get(name)]
        if missing:
            warnings.append(f"class(es) {', '.join(missing)} have no training samples")
    if not data.records["val"]:
        warnings.append("no validation samples (set a val_fraction or give split=val rows)")
    splits_of: dict[str, set[str]] = defaultdict(set)
    for split in ("train", "val", "test"):
        for r in data.records[split]:
            if r.group is not None:
                splits_of[r.group].add(split)
    straddling = sorted(g for g, s in splits_of.items() if len(s) > 1)
    if straddling:
        warnings.append(
            f"{len(straddling)} group(s) appear in more than one given split (e.g. '{straddling[0]}'): "
            "samples of one patient leak between training and evaluation"
        )
    return warnings


def _upsampling_warnings(data: TaskData) -> list[str]:
    """Images enlarged more than ``MAX_UPSAMPLING`` times (along either axis) when cached."""
    warnings = []
    for split, prepared in data.prepared.items():
        arrays = prepared.arrays
        if not len(arrays):
            continue
        factors = np.asarray(arrays.arrays["geometry"][arrays.rows])[:, :2].max(axis=1)
        tiny = np.flatnonzero(factors > MAX_UPSAMPLING)
        if len(tiny):
            worst = int(tiny[np.argmax(factors[tiny])])
            height, width = arrays.original_sizes()[worst].tolist()
            warnings.append(
                f"{len(tiny)} {split} image(s) are enlarged more than {MAX_UPSAMPLING:g}x to the cached "
                f"{arrays.size} px, up to {factors[worst]:.1f}x ({width}x{height}: "
                f"{prepared.records[worst].where})"
            )
    return warnings
