"""A task's data as a study sees it: fixed train / val / test splits, nested training fractions
per seed, k-shot episodes, and, for cross-center runs, the records of each center.

The splits are fixed for the whole study (the same for every encoder, mode, fraction and
seed): rows keep the split their source gives; rows without one are split by ``split_seed``;
when the source has no test rows, ``test_fraction`` of each center's training rows (stratified,
whole groups, ``NestedFractions`` with ``split_seed``) is held out as the test set. So no group
(patient, volume) straddles train, validation and test. Training fractions are drawn from what
remains and count labelled samples, not groups: a fraction subsamples the training records,
stratified by class and nested across fractions (``NestedFractions`` without ``keep_groups``),
so that 1% of 1002 patches from 14 slabs is 10 patches, not one slab of 504. Validation and
test sets are always complete.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from medfoundry.data.few_shot import few_shot_indices
from medfoundry.data.fractions import NestedFractions, record_classes
from medfoundry.data.record import Record
from medfoundry.data.task_records import load_task_records
from medfoundry.errors import ConfigError, DataError
from medfoundry.tasks.spec import TaskSpec
from medfoundry.tasks.task_type import TaskType

__all__ = ["ALL", "StudyTaskData", "load_study_task_data"]

ALL = "all"
"""``train_center`` / ``test_center`` of results that pool every center."""


@dataclass
class StudyTaskData:
    """One task's fixed splits and the subsets drawn from them.

    Attributes:
        spec: The task spec.
        task: The task.
        splits: ``train``, ``val`` and ``test`` records (test never empty).
        centers: Center group -> its center values (empty when the task has no centers).
        digest: Hash of the records and their files' sizes and times (changes re-run cells).
        held_out: Training rows held out as the test set (0 when the source has test rows).
    """

    spec: TaskSpec
    task: TaskType
    splits: dict[str, list[Record]]
    centers: dict[str, frozenset[str]]
    digest: str
    held_out: int = 0
    _fractions: dict[int, NestedFractions] = field(default_factory=dict, repr=False)
    _train_classes: list[frozenset[int]] | None = field(default=None, repr=False)

    @property
    def records(self) -> list[Record]:
        """All records: train, then val, then test."""
        return [*self.splits["train"], *self.splits["val"], *self.splits["test"]]

    def train_fractions(self, seed: int) -> NestedFractions:
        """The stratified order of the training records for ``seed`` (record by record)."""
        if seed not in self._fractions:
            if self._train_classes is None:  # read once: for segmentation this decodes every mask
                self._train_classes = [
                    record_classes(r, self.task.ignore_index) for r in self.splits["train"]
                ]
            self._fractions[seed] = NestedFractions(
                self.splits["train"], seed, keep_groups=False, classes=self._train_classes
            )
        return self._fractions[seed]

    def train_subset(self, fraction: float, seed: int) -> list[Record]:
        """The nested, stratified training subset for ``fraction`` and ``seed``."""
        return self.train_fractions(seed).subset(fraction)

    def few_shot_subset(self, shots: int, episode: int) -> list[Record]:
        """``shots`` training records of every class present (classification), for ``episode``."""
        train = self.splits["train"]
        labels = [r.label if r.label is not None else -1 for r in train]  # classification: always set
        return [train[i] for i in few_shot_indices(labels, shots, episode)]

    def center_records(self, split: str, group: str) -> list[Record]:
        """Records of ``split`` whose center is in center group ``group``."""
        members = self.centers[group]
        return [r for r in self.splits[split] if r.center in members]


def load_study_task_data(
    spec: TaskSpec,
    task: TaskType,
    *,
    split_seed: int,
    val_fraction: float,
    test_fraction: float,
    centers: Mapping[str, Sequence[str]] | None = None,
) -> StudyTaskData:
    """Read and check a task's records and fix its splits (see the module docstring).

    Args:
        spec: The task's spec.
        task: The task built from it.
        split_seed: Seeds the assignment of rows without a split.
        val_fraction: Share of rows without a split that go to validation.
        test_fraction: Share of each center's training rows held out when there are no test rows.
        centers: Named groups of center values; default: each center value its own group.

    Raises:
        DataError: unreadable data, or no validation rows.
        ConfigError: a named center group lists a value the task does not have.
    """
    splits = load_task_records(
        spec.name,
        spec.data_source(),
        task.target,
        classes=spec.classes,
        seed=split_seed,
        val_fraction=val_fraction,
        ignore_index=task.ignore_index,
        preprocessing=spec.preprocessing,  # CT windows, intensity scaling: as in pretraining
        split=spec.split,
    )
    held_out = 0
    if not splits["test"]:
        splits["train"], splits["test"] = _hold_out(splits["train"], test_fraction, split_seed, task)
        held_out = len(splits["test"])
    present = sorted({r.center for records in splits.values() for r in records if r.center is not None})
    groups = _center_groups(spec.name, present, centers)
    return StudyTaskData(spec, task, splits, groups, _digest(splits), held_out)


def _hold_out(
    train: list[Record], fraction: float, seed: int, task: TaskType
) -> tuple[list[Record], list[Record]]:
    by_center: dict[str | None, list[int]] = {}
    for i, record in enumerate(train):
        by_center.setdefault(record.center, []).append(i)
    held: set[int] = set()
    for positions in by_center.values():
        if len(positions) > 1:
            chosen = NestedFractions([train[i] for i in positions], seed, task.ignore_index).indices(fraction)
            held.update(positions[j] for j in chosen)
    if not held or len(held) == len(train):
        raise DataError(
            f"too few training rows ({len(train)}) to hold out a test set; add rows with split=test"
        )
    return [r for i, r in enumerate(train) if i not in held], [r for i, r in enumerate(train) if i in held]


def _center_groups(
    task: str, present: list[str], centers: Mapping[str, Sequence[str]] | None
) -> dict[str, frozenset[str]]:
    if not present:
        return {}
    if centers is None:
        return {c: frozenset([c]) for c in present}
    unknown = sorted({c for values in centers.values() for c in values} - set(present))
    if unknown:
        raise ConfigError(
            f"centers: task '{task}' has no center(s) {', '.join(unknown)} "
            f"(its centers: {', '.join(present)})"
        )
    return {name: frozenset(values) for name, values in centers.items()}


def _digest(splits: dict[str, list[Record]]) -> str:
    digest = hashlib.sha256()
    for split, records in splits.items():
        for r in records:
            stat = r.image.stat()
            digest.update(f"{split}|{r}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
