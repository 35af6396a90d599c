"""A study's paired table: each encoder minus each comparison encoder (the data-efficiency
reference and the baselines), same task, mode, fraction or shots, on the same test items,
pairing seed with seed: the mean difference and its paired bootstrap interval (a 95%
percentile interval clipped to [-1, 1]), and on how many of the paired seeds the encoder scored
higher. The interval is two-level: each resample draws the paired seeds (the draws of training
labels) with replacement and, within each, the test items (the same items for both encoders),
so a mean difference carried by one draw (a decoder that collapsed on it) gets an interval as
wide as the draws disagree; ``n_better`` of ``n_pairs`` says it in words."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medfoundry.evaluation.bootstrap import percentile_interval
from medfoundry.evaluation.study_data import ALL
from medfoundry.evaluation.summary_table import SeedGroup, mean_over_seeds

__all__ = ["DIFFERENCE_RANGE", "PAIRED_COLUMNS", "paired_difference", "paired_rows", "resample_seeds"]

PAIRED_COLUMNS = (
    "encoder",
    "reference",
    "task",
    "mode",
    "reference_mode",
    "fraction",
    "shots",
    "test_center",
    "metric",
    "n_pairs",
    "n_better",
    "n_train",
    "difference",
    "diff_ci95_low",
    "diff_ci95_high",
)
DIFFERENCE_RANGE = (-1.0, 1.0)


def paired_difference(
    encoder: Sequence[tuple[float, np.ndarray | None]], reference: Sequence[tuple[float, np.ndarray | None]]
) -> tuple[float, float, float]:
    """Mean difference (encoder - reference) over paired seeds and its paired bootstrap interval.

    Args:
        encoder: Per paired seed, the encoder's score and its scores on the resamples.
        reference: The reference's, in the same seed order, on the same resamples.

    Returns:
        ``(difference, low, high)``; the interval is NaN when a seed has no resample scores.
        An encoder against itself gives exactly ``(0, 0, 0)``.
    """
    difference = float(np.mean([a - b for (a, _), (b, _) in zip(encoder, reference, strict=True)]))
    if any(s is None for _, s in (*encoder, *reference)):
        return difference, math.nan, math.nan
    per_seed = [a - b for (_, a), (_, b) in zip(encoder, reference, strict=True)]  # type: ignore[operator]
    low, high = percentile_interval(resample_seeds(per_seed), DIFFERENCE_RANGE)
    return difference, low, high


def resample_seeds(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    """Per bootstrap row, the mean over a draw with replacement of the seeds of their row's
    values (one seed: its own rows); the draws are reproducible (seeded by the shape).

    Examples:
        >>> rows = resample_seeds([np.full(1000, 0.3), np.zeros(1000), np.zeros(1000)])
        >>> float(rows.min()), float(rows.max())  # every seed drawn thrice, or never
        (0.0, 0.3)
    """
    stacked = np.stack(per_seed)
    seeds, rows = stacked.shape
    if seeds == 1:
        only: np.ndarray = stacked[0]
        return only
    picks = np.random.default_rng([seeds, rows]).integers(0, seeds, size=(rows, seeds))
    return mean_over_seeds(list(stacked[picks, np.arange(rows)[:, None]].T))


def paired_rows(
    groups: Mapping[tuple[Any, ...], SeedGroup],
    *,
    targets: Sequence[str],
    reference_encoder: str | None,
    reference_mode: str | None,
    metric: str,
) -> list[dict[str, Any]]:
    """The paired table's rows of one task's summary groups (``summary_groups``).

    Args:
        groups: Summary key -> its seeds.
        targets: The encoders every other encoder is compared with.
        reference_encoder: The data-efficiency reference's encoder, or ``None``.
        reference_mode: The mode the reference encoder is compared in (``None``: each row's own).
        metric: The task's primary metric (the only one paired).
    """
    rows = []
    for key, group in groups.items():
        encoder, task, mode, fraction, shots, train_center, test_center, row_metric = key
        if row_metric != metric or train_center != ALL:
            continue
        for target in targets:
            target_mode = reference_mode if target == reference_encoder and reference_mode else mode
            if (target, target_mode) == (encoder, mode):
                continue  # never against itself
            other = groups.get((target, task, target_mode, fraction, shots, ALL, test_center, metric))
            seeds = group.pair(other) if other else []
            if other is None or not seeds:
                continue
            difference, low, high = paired_difference(
                [group.seeds[s][:2] for s in seeds], [other.seeds[s][:2] for s in seeds]
            )
            rows.append(
                {
                    "encoder": encoder,
                    "reference": target,
                    "task": task,
                    "mode": mode,
                    "reference_mode": target_mode,
                    "fraction": fraction,
                    "shots": shots,
                    "test_center": test_center,
                    "metric": metric,
                    "n_pairs": len(seeds),
                    "n_better": sum(group.seeds[s][0] > other.seeds[s][0] for s in seeds),
                    "n_train": float(np.mean([group.seeds[s][2] for s in seeds])),
                    "difference": difference,
                    "diff_ci95_low": low,
                    "diff_ci95_high": high,
                }
            )
    return rows
