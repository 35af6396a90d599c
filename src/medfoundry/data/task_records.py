"""A task's records, checked and split, ready to become datasets."""

from __future__ import annotations

from medfoundry.data.checks import check_mask_values
from medfoundry.data.manifest import ManifestSource, read_manifest
from medfoundry.data.record import Record, TargetKind
from medfoundry.data.splits import split_records
from medfoundry.errors import DataError

__all__ = ["load_task_records"]


def load_task_records(
    name: str,
    source: ManifestSource,
    target: TargetKind,
    classes: list[str],
    seed: int,
    val_fraction: float,
    ignore_index: int | None = None,
    require_val: bool = True,
) -> dict[str, list[Record]]:
    """Read, check and split one task's source.

    Args:
        name: Task name (for messages).
        source: Where the records come from.
        target: What the task needs from each record.
        classes: Declared classes.
        seed: Seeds the train/val assignment of unsplit records.
        val_fraction: Share of unsplit records that go to val.
        ignore_index: Mask value allowed besides the class indices (segmentation).
        require_val: A task without validation samples is an error.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises:
        DataError: every problem found (missing files, bad labels or mask values, empty splits).
    """
    records = read_manifest(source, target, classes)
    if target == "mask":
        check_mask_values(records, classes, 255 if ignore_index is None else ignore_index, str(source.path))
    splits = split_records(records, val_fraction, seed)
    if not splits["train"]:
        raise DataError(f"task '{name}': {source.path} has no training samples")
    if require_val and not splits["val"]:
        raise DataError(
            f"task '{name}': {source.path} has no validation samples; add rows with split=val "
            "or set data.val_fraction > 0"
        )
    return splits
