"""Test-set bootstrap: how much a score would move on another draw of test items, and whether one
encoder beats another on the same items.

A resample draws ``N`` test items with replacement; it is stored as a row of multiplicities
(``(B, N)`` weights, ``B`` resamples), which the task metrics score directly
(``TaskMetrics.score_items``). When the test items carry groups (patients, volumes, spatial
blocks: ``Record.group``) and ``unit`` is ``group`` (the default), a resample draws the ``G``
GROUPS with replacement instead and every item counts as often as its group was drawn: images of
one patient or one block are not independent, and resampling them one by one makes an interval
look surer than the test set allows [1]. Items without a group are groups of their own, so a
test set of independent images is resampled exactly as before. Resamples depend only on the
bootstrap seed, the test set's name, its size and its groups, so every cell of a task that is
scored on the same test set sees the *same* resamples: a paired comparison of two encoders is
the distribution of the difference of their scores, resample by resample, on identical items.
The intervals are percentile intervals [0], clipped to the range the quantity can take.

[0] Efron and Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall 1993, ch. 13.
[1] Field and Welsh, "Bootstrapping clustered data", J. R. Stat. Soc. B 69(3), 2007 (the
    cluster bootstrap: resample the clusters, keep each one whole).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from medfoundry.tasks.task_type import TaskMetrics

__all__ = [
    "FEW_GROUPS",
    "METRIC_RANGE",
    "MIN_GROUPS",
    "BootstrapUnit",
    "Resampler",
    "group_notes",
    "percentile_interval",
]

BootstrapUnit = Literal["group", "item"]

METRIC_RANGE = (0.0, 1.0)
"""Every task metric (accuracy, balanced accuracy, AUROC, ECE, Dice, mAP) lies in [0, 1]; a
difference of two of them in [-1, 1]."""

MIN_GROUPS = 4
"""Fewest groups a test set's resamples draw (4 groups: 35 distinct resamples; 3: only 10)."""

FEW_GROUPS = 10
"""Below this many groups in a test set, a study notes that its group-resampled intervals are coarse."""

CELLS_PER_CHUNK = 2_000_000
"""Resample weights held at once (rows x items): bounds memory on large test sets."""


@dataclass(frozen=True)
class Resampler:
    """Bootstrap resamples of test sets, reproducible from ``seed``.

    Args:
        resamples: Rows ``B`` (at least 1000 in studies).
        seed: Seeds every test set's resamples (with the test set's name).
        unit: ``group``: resample the test items' groups when they are given; ``item``: resample
            the items whatever their groups.

    Examples:
        >>> weights = np.vstack(list(Resampler(4, seed=0).weights(5, "organ/all")))
        >>> weights.shape, weights.sum(axis=1).tolist()
        ((4, 5), [5.0, 5.0, 5.0, 5.0])
        >>> by_group = np.vstack(list(Resampler(3).weights(8, "organ/all", np.arange(8) // 2)))
        >>> bool((by_group[:, 0::2] == by_group[:, 1::2]).all())  # the two images of a group together
        True
    """

    resamples: int = 1000
    seed: int = 0
    unit: BootstrapUnit = "group"

    def weights(self, n: int, name: str, groups: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """The ``(rows, n)`` multiplicities of the resamples of test set ``name`` (``n`` items),
        in chunks; the same ``(n, name, groups)`` always gives the same rows.

        ``groups``: each item's group (an index); with ``unit: group`` the groups are drawn and
        each item weighs as often as its group was drawn. Fewer than ``MIN_GROUPS`` groups are
        too few to draw (one group: every resample is the test set itself, an interval of zero
        width; two: three distinct resamples): the items are resampled, and the interval
        describes those groups only (``group_notes`` says so in a study)."""
        inverse = None  # each item's group, numbered 0 .. G - 1; None: resample the items
        if groups is not None and self.unit == "group":
            if len(groups) != n:
                raise ValueError(f"{name}: {len(groups)} item groups for {n} items")
            found, inverse = np.unique(groups, return_inverse=True)
            inverse = None if len(found) < MIN_GROUPS or len(found) == n else inverse.reshape(-1)
        units = n if inverse is None else int(inverse.max()) + 1
        rows = max(1, min(self.resamples, CELLS_PER_CHUNK // max(n, 1)))
        key = zlib.crc32(name.encode())
        for chunk, start in enumerate(range(0, self.resamples, rows)):
            count = min(rows, self.resamples - start)
            seed = [self.seed, key, n, chunk] if inverse is None else [self.seed, key, n, units, chunk]
            rng = np.random.default_rng(seed)
            draws = rng.integers(0, units, size=(count, units)) + units * np.arange(count)[:, None]
            drawn = np.bincount(draws.ravel(), minlength=count * units).reshape(count, units)
            yield (drawn if inverse is None else drawn[:, inverse]).astype(np.float64)

    def scores(
        self,
        metrics: TaskMetrics,
        items: Mapping[str, np.ndarray],
        *,
        n: int,
        name: str,
        groups: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """Every metric of ``items`` (``n`` test items, ``groups`` as in ``weights``) on each
        resample: name -> ``(B,)``."""
        parts: dict[str, list[np.ndarray]] = {}
        for weights in self.weights(n, name, groups):
            for metric, values in metrics.score_items(dict(items), weights).items():
                parts.setdefault(metric, []).append(values)
        return {metric: np.concatenate(values) for metric, values in parts.items()}


def group_notes(name: str, groups: np.ndarray, unit: BootstrapUnit = "group") -> list[str]:
    """What a study should say about test set ``name``'s intervals, given its items' groups.

    Examples:
        >>> group_notes("face/all", np.zeros(10, dtype=int))[0].split(":")[0]
        "test set 'face/all'"
        >>> "come from only 2 groups" in group_notes("face/all", np.array([0] * 8 + [1] * 2))[0]
        True
        >>> group_notes("cells/all", np.arange(200))
        []
    """
    count, n = len(np.unique(groups)), len(groups)
    if unit != "group" or count == n:
        return []
    if count < MIN_GROUPS:
        kind, them = ("one group", "that group") if count == 1 else (f"only {count} groups", "those groups")
        return [
            f"test set '{name}': all {n} test items come from {kind} (patients, volumes or blocks), too "
            f"few to resample: its intervals resample the items, so they describe {them} only and "
            "overstate what the test set says about others"
        ]
    if count < FEW_GROUPS:
        return [
            f"test set '{name}': {n} test items from only {count} groups: its intervals draw the "
            f"{count} groups whole and are coarse; a difference they exclude 0 for rests on {count} places"
        ]
    return []


def percentile_interval(
    values: np.ndarray, bounds: tuple[float, float] = METRIC_RANGE, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values`` (NaN ones left out), clipped to ``bounds``.

    NaN when fewer than half the resamples give a finite value (the metric is undefined on
    most draws, e.g. AUROC of a class with one test item).

    Examples:
        >>> percentile_interval(np.linspace(0.5, 1.5, 101))
        (0.525, 1.0)
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.size < values.size / 2:
        return math.nan, math.nan
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.percentile(finite, [tail, 100 - tail])
    return float(np.clip(low, *bounds)), float(np.clip(high, *bounds))
