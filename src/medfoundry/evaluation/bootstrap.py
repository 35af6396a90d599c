"""Test-set bootstrap: how much a score would move on another draw of test items, and whether one
encoder beats another on the same items.

A resample draws ``N`` test items with replacement; it is stored as a row of multiplicities
(``(B, N)`` weights, ``B`` resamples), which the task metrics score directly
(``TaskMetrics.score_items``). Resamples depend only on the bootstrap seed, the test set's name
and its size, so every cell of a task that is scored on the same test set sees the *same*
resamples: a paired comparison of two encoders is the distribution of the difference of their
scores, resample by resample, on identical items. The intervals are percentile intervals [0],
clipped to the range the quantity can take.

[0] Efron and Tibshirani, "An Introduction to the Bootstrap", Chapman & Hall 1993, ch. 13.
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from medfoundry.tasks.task_type import TaskMetrics

__all__ = ["METRIC_RANGE", "Resampler", "percentile_interval"]

METRIC_RANGE = (0.0, 1.0)
"""Every task metric (accuracy, balanced accuracy, AUROC, ECE, Dice, mAP) lies in [0, 1]; a
difference of two of them in [-1, 1]."""

CELLS_PER_CHUNK = 2_000_000
"""Resample weights held at once (rows x items): bounds memory on large test sets."""


@dataclass(frozen=True)
class Resampler:
    """Bootstrap resamples of test sets, reproducible from ``seed``.

    Args:
        resamples: Rows ``B`` (at least 1000 in studies).
        seed: Seeds every test set's resamples (with the test set's name).

    Examples:
        >>> weights = np.vstack(list(Resampler(4, seed=0).weights(5, "organ/all")))
        >>> weights.shape, weights.sum(axis=1).tolist()
        ((4, 5), [5.0, 5.0, 5.0, 5.0])
    """

    resamples: int = 1000
    seed: int = 0

    def weights(self, n: int, name: str) -> Iterator[np.ndarray]:
        """The ``(rows, n)`` multiplicities of the resamples of test set ``name`` (``n`` items),
        in chunks; the same ``(n, name)`` always gives the same rows."""
        rows = max(1, min(self.resamples, CELLS_PER_CHUNK // max(n, 1)))
        key = zlib.crc32(name.encode())
        for chunk, start in enumerate(range(0, self.resamples, rows)):
            count = min(rows, self.resamples - start)
            rng = np.random.default_rng([self.seed, key, n, chunk])
            draws = rng.integers(0, n, size=(count, n)) + n * np.arange(count)[:, None]
            yield np.bincount(draws.ravel(), minlength=count * n).reshape(count, n).astype(np.float64)

    def scores(
        self, metrics: TaskMetrics, items: Mapping[str, np.ndarray], *, n: int, name: str
    ) -> dict[str, np.ndarray]:
        """Every metric of ``items`` (``n`` test items) on each resample: name -> ``(B,)``."""
        parts: dict[str, list[np.ndarray]] = {}
        for weights in self.weights(n, name):
            for metric, values in metrics.score_items(dict(items), weights).items():
                parts.setdefault(metric, []).append(values)
        return {metric: np.concatenate(values) for metric, values in parts.items()}


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
