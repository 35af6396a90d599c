"""A task's data from its spec: records read, checked and split, pixels cached.

Two steps, because a task type needs its classes before it can say what it ignores:

1. ``resolve_classes``: the declared classes, or those the source names;
2. ``load_task_data``: read the source, split, and prepare the cached arrays of the splits a
   job needs (``load_task_records`` stops before the pixels).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from medfoundry.data.cache import CacheSettings, PreparedSplit, prepare_arrays
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Record, TargetKind, ignore_index_or_default
from medfoundry.data.sources import SourceBase
from medfoundry.data.splits import SplitPolicy, split_records
from medfoundry.errors import DataError, merge_subjects
from medfoundry.safe_writes import remove_empty_folders

__all__ = [
    "DataSpec",
    "TaskData",
    "case_variants",
    "discard_new_caches",
    "ignore_index_or_default",
    "load_task_data",
    "load_task_records",
    "resolve_classes",
]


class DataSpec(Protocol):
    """The data-related part of a task spec (``medfoundry.tasks.TaskSpec`` is one)."""

    @property
    def name(self) -> str: ...
    def data_source(self) -> SourceBase:
        """The task's source (raises ``ConfigError`` when it has none)."""
        ...

    @property
    def classes(self) -> list[str]: ...
    @property
    def preprocessing(self) -> Preprocessing: ...
    @property
    def split(self) -> SplitPolicy: ...


@dataclass
class TaskData:
    """One task's data.

    Attributes:
        records: Every split's usable records (``train``, ``val``, ``test``).
        prepared: Cached arrays of the splits that were asked for.
        skipped: One line per problem of the samples left out by ``on_error: skip``.
        notes: What reading changed or passed over, one line per file (``validate-data``
            prints them): files that are not samples, alpha channels dropped, ...
    """

    records: dict[str, list[Record]]
    prepared: dict[str, PreparedSplit] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def discard_new_caches(tasks: Iterable[TaskData]) -> None:
    """Delete the cache entries these tasks built in this run (not those read from earlier runs),
    and the cache folders made for them: a run that fails leaves nothing behind, not even the
    caches of its good tasks."""
    made: list[Path] = []
    for data in tasks:
        for prepared in data.prepared.values():
            if not prepared.from_cache and prepared.arrays.folder is not None:
                shutil.rmtree(prepared.arrays.folder, ignore_errors=True)
                made += prepared.new_folders
    remove_empty_folders(sorted(set(made), key=lambda p: len(p.parts), reverse=True))


def resolve_classes(source: SourceBase, target: TargetKind, classes: list[str]) -> list[str]:
    """The declared ``classes``, or, when there are none, those the source names.

    Raises:
        ConfigError: the source cannot name its classes (the task must declare them).
        DataError: the source cannot be read, or names classes that differ only in case
            (``Benign`` and ``benign``: almost always one class spelt two ways).
    """
    if classes or target == "image":
        return list(classes)
    inferred = source.infer_classes(target)
    variants = case_variants(inferred)
    if variants:
        shown = "; ".join(" and ".join(f"'{name}'" for name in group) for group in variants)
        raise DataError(
            f"{source.location}: class names that differ only in case: {shown}; fix the labels, "
            "or declare the classes under the task's 'classes' if they really differ"
        )
    return inferred


def case_variants(classes: Sequence[str]) -> list[list[str]]:
    """Groups of class names that are equal but for case, e.g. ``[["Benign", "benign"]]``."""
    groups: dict[str, list[str]] = {}
    for name in classes:
        groups.setdefault(name.casefold(), []).append(name)
    return [group for group in groups.values() if len(group) > 1]


def load_task_records(
    name: str,
    source: SourceBase,
    target: TargetKind,
    *,
    classes: list[str],
    seed: int,
    val_fraction: float,
    ignore_index: int | None = None,
    require_val: bool = True,
    preprocessing: Preprocessing | None = None,
    split: SplitPolicy | None = None,
    on_error: Literal["raise", "skip"] = "raise",
) -> dict[str, list[Record]]:
    """Read and split one task's source (no pixels are decoded).

    Args:
        name: Task name (for messages).
        source: Where the records come from.
        target: What the task needs from each record.
        classes: The task's classes (see ``resolve_classes``).
        seed: Seeds the assignment of records without a given split.
        val_fraction: Share of unsplit groups that go to val (unless ``split`` sets one).
        ignore_index: Mask value of unlabelled pixels (segmentation); default 255.
        require_val: A task without validation samples is an error.
        preprocessing: The task's preprocessing (its intensity setting goes to the readers).
        split: The task's split policy.
        on_error: ``skip`` leaves out bad rows and files instead of raising.

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``.

    Raises:
        DataError: every problem found (missing files, bad labels, empty splits).
    """
    scanned, _, _ = _scan_and_split(
        source, target, classes, seed, val_fraction, ignore_index, preprocessing, split, on_error
    )
    _check_splits(name, source, scanned, require_val)
    return scanned


def load_task_data(
    spec: DataSpec,
    target: TargetKind,
    *,
    seed: int,
    val_fraction: float,
    size: int,
    cache: CacheSettings,
    ignore_index: int | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    prepare: Sequence[str] = ("train", "val"),
    require_val: bool = True,
) -> TaskData:
    """Read, split, check and cache one task's data.

    Args:
        spec: The task (its classes resolved).
        target: What the task needs from each record.
        seed: Seeds the split of records without a given one.
        val_fraction: Default share of groups for validation.
        size: Cached side when the spec's preprocessing gives none (the model's input size).
        cache: Where samples are cached.
        ignore_index: Mask value of unlabelled pixels; default 255.
        on_error: ``raise`` or ``skip`` (bad samples left out and listed in ``skipped``).
        prepare: Splits whose pixels are decoded and cached.
        require_val: A task without validation samples is an error.

    Raises:
        DataError: every problem of the task, one line each (naming file, row or key).
    """
    records, skipped, notes = _scan_and_split(
        spec.data_source(),
        target,
        spec.classes,
        seed,
        val_fraction,
        ignore_index,
        spec.preprocessing,
        spec.split,
        on_error,
    )
    data = TaskData(records, skipped=skipped, notes=notes)
    problems = []
    for split in prepare:
        if not records[split]:
            continue
        try:
            prepared = prepare_arrays(
                f"{spec.name}-{split}",
                records[split],
                target,
                size=spec.preprocessing.size or size,
                preprocessing=spec.preprocessing,
                num_classes=len(spec.classes),
                ignore_index=ignore_index_or_default(ignore_index),
                cache=cache,
                on_error=on_error,
            )
        except DataError as e:
            problems.extend(e.problems)
            continue
        data.prepared[split] = prepared
        data.records[split] = prepared.records
        data.skipped += prepared.problems
        data.notes += prepared.notes
    data.skipped = merge_subjects(data.skipped)
    if problems:
        discard_new_caches([data])  # a failed source leaves nothing behind, not even its good splits
        raise DataError(merge_subjects(problems))  # files failing alike in any split: one line
    _check_splits(spec.name, spec.data_source(), data.records, require_val)
    return data


def _scan_and_split(
    source: SourceBase,
    target: TargetKind,
    classes: list[str],
    seed: int,
    val_fraction: float,
    ignore_index: int | None,
    preprocessing: Preprocessing | None,
    split: SplitPolicy | None,
    on_error: str,
) -> tuple[dict[str, list[Record]], list[str], list[str]]:
    ignore = ignore_index_or_default(ignore_index)
    scan = source.scan(
        target, classes=classes, preprocessing=preprocessing or Preprocessing(), ignore_index=ignore
    )
    problems = merge_subjects(scan.problems)  # one line per problem, not per file
    if problems and on_error == "raise":
        raise DataError(problems)
    policy = split or SplitPolicy()
    fraction = val_fraction if policy.val_fraction is None else policy.val_fraction
    splits = split_records(
        scan.records,
        val_fraction=fraction,
        seed=seed,
        test_fraction=policy.test_fraction,
        stratify=policy.stratify,
    )
    return splits, problems, scan.notes


def _check_splits(name: str, source: SourceBase, splits: dict[str, list[Record]], require_val: bool) -> None:
    if not splits["train"]:
        raise DataError(f"task '{name}': {source.location} has no training samples")
    if require_val and not splits["val"]:
        raise DataError(
            f"task '{name}': {source.location} has no validation samples; add rows with split=val "
            "or set data.val_fraction (or the task's split.val_fraction) above 0"
        )
