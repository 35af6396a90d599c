"""Nested, stratified training subsets for data-fraction studies (1%, 5%, ... 100% of the labels).

``NestedFractions(records, seed)`` puts a split's records into one order; the subset for a
fraction ``f`` is a prefix of that order. Hence:

- **nested**: the 1% subset lies inside the 5% subset, which lies inside the 10% subset, ...;
- **deterministic**: the order depends only on the records and the seed;
- **stratified**: each record belongs to a *stratum*, and the order interleaves the strata
  systematically (the ``j``-th of ``n_s`` members of stratum ``s`` sits at position ``j / n_s``),
  so any prefix holds each stratum in proportion, to within one sampling unit;
- **covering**: the order starts with the fewest units that between them contain every class
  present in the split, so every subset has at least one example of each class.

Strata, one rule for every label type: a record's *classes* are the classes it shows — its
label (classification), its positive labels (multilabel; missing and negative ones do not
count), the values in its mask (segmentation, ``ignore_index`` left out), the classes of its
boxes (detection). Its stratum is the *rarest* of them (fewest sampling units showing it), so
rare classes drive stratification and common ones (such as background, which every mask
shows) follow. Records that show no class (multilabel all-negative, images without boxes,
unlabelled images) form one stratum of their own.

Sampling units: with ``keep_groups`` (the default, for held-out test sets), records that share
a ``group`` (patient, volume) are taken or left together, so a subset never holds part of a
patient; a group's classes are the union of its records'. Without it every record is its own
unit: a study's training fractions count labelled samples, not groups (the split already keeps
every group on one side, so a training subset cannot leak into validation or test). The size
of a subset is counted in records: the shortest prefix of units holding at least
``round(f * N)`` records (and at least the covering units, ``covering_size`` records).

Examples:
    >>> from pathlib import Path
    >>> from medfoundry.data.record import Record
    >>> records = [Record(Path(f"{i}.png"), "train", i, label=i % 4 // 3) for i in range(40)]
    >>> fractions = NestedFractions(records, seed=0)
    >>> small, large = fractions.indices(0.1), fractions.indices(0.5)
    >>> len(small), len(large), set(small) <= set(large)
    (4, 20, True)
    >>> sorted({records[i].label for i in small})  # both classes, in proportion 3:1
    [0, 1]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from medfoundry.data.readers import decode_mask
from medfoundry.data.record import Record
from medfoundry.errors import ConfigError

__all__ = ["NestedFractions", "record_classes"]


class NestedFractions:
    """One stratified order of a split's records; a fraction's subset is a prefix of it.

    Args:
        records: The records to draw from (usually a task's training split).
        seed: Seeds the order; each seed gives a different, equally stratified order.
        ignore_index: Mask value that is not a class (segmentation), e.g. 255.
        keep_groups: Take records that share a ``group`` together; ``False``: each record alone.
        classes: Each record's classes (``record_classes``), when already known: reading them
            decodes every mask of a segmentation task, once per ``NestedFractions`` otherwise.

    Raises:
        DataError: a mask cannot be read (segmentation records).
    """

    def __init__(
        self,
        records: Sequence[Record],
        seed: int,
        ignore_index: int | None = None,
        *,
        keep_groups: bool = True,
        classes: Sequence[frozenset[int]] | None = None,
    ) -> None:
        self.records = list(records)
        shown = (
            list(classes) if classes is not None else [record_classes(r, ignore_index) for r in self.records]
        )
        units = _units(self.records) if keep_groups else [[i] for i in range(len(self.records))]
        unit_classes = [frozenset().union(*(shown[i] for i in u)) for u in units]
        order, self._min_units = _covering_first(
            _interleaved(unit_classes, np.random.default_rng(seed)), unit_classes
        )
        self._units = [units[u] for u in order]
        self._cumulative = np.cumsum([len(u) for u in self._units])

    @property
    def covering_size(self) -> int:
        """Records in the smallest subset: the fewest units that show every class."""
        return int(self._cumulative[self._min_units - 1]) if self._min_units else 0

    def indices(self, fraction: float) -> list[int]:
        """Positions (into ``records``, ascending) of the subset for ``fraction`` in (0, 1].

        Raises:
            ConfigError: ``fraction`` is outside (0, 1].
        """
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"fraction {fraction} is outside (0, 1]; use e.g. 0.01 for 1% of the labels")
        if not self.records:
            return []
        wanted = max(1, round(fraction * len(self.records)))
        k = max(self._min_units, int(np.searchsorted(self._cumulative, wanted)) + 1)
        return sorted(i for unit in self._units[:k] for i in unit)

    def subset(self, fraction: float) -> list[Record]:
        """The records of the subset for ``fraction``, in their original order."""
        return [self.records[i] for i in self.indices(fraction)]


def record_classes(record: Record, ignore_index: int | None = None) -> frozenset[int]:
    """The classes a record shows (see the module docstring); empty when it shows none.

    Raises:
        DataError: the record's mask cannot be read.
    """
    if record.label is not None:
        return frozenset([record.label])
    if record.labels is not None:
        return frozenset(i for i, value in enumerate(record.labels) if value == 1.0)
    if record.mask is not None:
        mask = decode_mask(record)  # class indices: stored values mapped, volume slices cut out
        values = [] if mask is None else np.unique(mask).tolist()
        return frozenset(v for v in values if v != ignore_index)
    if record.boxes is not None:
        return frozenset(box.label for box in record.boxes)
    return frozenset()


def _units(records: list[Record]) -> list[list[int]]:
    """Record positions grouped into sampling units (a group, or a record without one)."""
    by_group: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for i, record in enumerate(records):
        if record.group is None:
            units.append([i])
        elif record.group in by_group:
            by_group[record.group].append(i)
        else:
            by_group[record.group] = [i]
            units.append(by_group[record.group])
    return units


def _interleaved(classes: list[frozenset[int]], rng: np.random.Generator) -> list[int]:
    """Unit positions, strata interleaved systematically, shuffled within each stratum."""
    counts = Counter(c for unit_classes in classes for c in unit_classes)
    strata: dict[int | None, list[int]] = {}
    for u, unit_classes in enumerate(classes):
        rarest = min(unit_classes, key=lambda c: (counts[c], c)) if unit_classes else None
        strata.setdefault(rarest, []).append(u)
    keys: list[tuple[float, float, int]] = []
    for members in strata.values():
        for j, u in enumerate(rng.permutation(members).tolist()):
            keys.append((j / len(members), float(rng.random()), u))
    return [u for _, _, u in sorted(keys)]


def _covering_first(order: list[int], classes: list[frozenset[int]]) -> tuple[list[int], int]:
    """Move forward the earliest units that show each class not yet shown, rarest class first.

    Returns:
        The new order and how many units at its front cover every class.
    """
    counts = Counter(c for unit_classes in classes for c in unit_classes)
    covering: list[int] = []
    shown: set[int] = set()
    for c in sorted(counts, key=lambda c: (counts[c], c)):
        if c not in shown:
            unit = next(u for u in order if c in classes[u])
            covering.append(unit)
            shown |= classes[unit]
    chosen = set(covering)
    covering.sort(key=order.index)
    return covering + [u for u in order if u not in chosen], len(covering)
