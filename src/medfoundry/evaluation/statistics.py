"""Plain statistics of a study's results: mean and Student-t interval over seeds, which fractions
trained on the same subset, and the data-efficiency rule.

The bootstrap intervals (test-set uncertainty, paired differences) are in ``bootstrap.py``; the
tables that combine both are built in ``study_tables.py`` (``summary_table.py``,
``paired_table.py``, ``efficiency_table.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from medfoundry.evaluation.bootstrap import METRIC_RANGE

__all__ = [
    "EFFICIENCY_RULE",
    "fraction_needed",
    "group_rows",
    "identical_fractions",
    "mean_confidence_interval",
]

EFFICIENCY_RULE = (
    "Labels needed: the smallest share of the training labels at which the encoder reaches the "
    "reference's score and keeps reaching it at every larger share the study ran. 'Reaches' means "
    "the 95% paired bootstrap interval of (encoder - reference), computed on the same test items "
    "and, over seeds, pairing seed with seed and resampling the seeds too (the draws of labels), "
    "has its lower end at or above -margin. Shares "
    "that gave the same training subset count once, as the largest of them, so no saving is read "
    "from two names for one subset; the reference is never compared with itself."
)
"""The rule behind ``fraction_needed``, stated in every report."""


def mean_confidence_interval(
    values: Sequence[float], level: float = 0.95, bounds: tuple[float, float] | None = METRIC_RANGE
) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and Student-t confidence interval of the mean over seeds.

    NaN values (a metric undefined on some run) are left out. With one value the spread and
    interval are NaN; with none everything is. The interval is clipped to ``bounds`` (a metric
    in [0, 1] has no interval beyond it; ``None``: not clipped).

    Returns:
        ``(mean, std, low, high)`` with ``std`` using ``n - 1`` and ``low, high = mean -/+
        t_{(1 + level) / 2, n - 1} * std / sqrt(n)``, clipped.

    Examples:
        >>> [round(v, 3) for v in mean_confidence_interval([0.7, 0.8, 0.9])]
        [0.8, 0.1, 0.552, 1.0]
    """
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, x.size - 1)) * std / math.sqrt(x.size)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return mean, std, low, high


def identical_fractions(n_train: Mapping[float, Mapping[int, int]]) -> list[list[float]]:
    """Groups of fractions that trained on the same subset at every seed.

    Subsets of one seed are prefixes of one order (``NestedFractions``), so two fractions with
    the same training-set size at a seed have the same subset there.

    Args:
        n_train: Fraction -> seed -> training-set size.

    Returns:
        Each group of two or more fractions, ascending.

    Examples:
        >>> identical_fractions({0.01: {0: 5, 1: 5}, 0.05: {0: 5, 1: 5}, 0.1: {0: 10, 1: 10}})
        [[0.01, 0.05]]
    """
    groups: dict[tuple[tuple[int, int], ...], list[float]] = {}
    for fraction in sorted(n_train):
        groups.setdefault(tuple(sorted(n_train[fraction].items())), []).append(fraction)
    return [g for g in groups.values() if len(g) > 1]


def fraction_needed(reached: Mapping[float, bool], same_subset: Sequence[Sequence[float]] = ()) -> float:
    """The data-efficiency rule (``EFFICIENCY_RULE``): the smallest fraction that reaches the
    reference, with every larger fraction reaching it too; NaN when none does.

    Args:
        reached: Fraction -> whether its paired interval reaches the reference.
        same_subset: Groups of fractions with identical subsets (``identical_fractions``);
            only the largest of a group is a candidate.

    Examples:
        >>> fraction_needed({0.01: True, 0.1: False, 0.5: True, 1.0: True})
        0.5
        >>> fraction_needed({0.01: True, 0.05: True, 1.0: True}, [[0.01, 0.05]])
        0.05
    """
    hidden = {f for group in same_subset for f in sorted(group)[:-1]}
    candidates = sorted(f for f in reached if f not in hidden)
    needed = math.nan
    for fraction in reversed(candidates):
        if not reached[fraction]:
            break
        needed = fraction
    return needed


def group_rows(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[tuple[Any, ...], list[Any]]:
    """Rows grouped by the values of ``keys``, groups in first-seen order."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups
