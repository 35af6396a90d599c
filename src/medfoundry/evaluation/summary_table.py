"""A study's summary table: per (encoder, task, mode, fraction or shots, centers, metric) over
seeds, the mean, the Student-t interval over seeds, the test-set bootstrap interval of that mean
(the resamples score every seed on the same items and average them; at 100% of the labels,
where every seed trains on the same set, this is the interval that says something), the
training size ``n_train`` and the chance level; and the rows' seeds, which the paired and
efficiency tables pair.

Intervals are 95% percentile intervals clipped to [0, 1].
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medfoundry.evaluation.bootstrap import percentile_interval
from medfoundry.evaluation.statistics import group_rows, mean_confidence_interval
from medfoundry.evaluation.study_cells import CELL_KEYS

__all__ = [
    "SUMMARY_COLUMNS",
    "SUMMARY_KEYS",
    "Scores",
    "SeedGroup",
    "mean_over_seeds",
    "never_improved_notes",
    "summary_groups",
    "summary_rows",
    "with_cell_interval",
]

SUMMARY_KEYS = ("encoder", "task", "mode", "fraction", "shots", "train_center", "test_center", "metric")
SUMMARY_COLUMNS = (
    *SUMMARY_KEYS,
    "n_seeds",
    "n_train",
    "mean",
    "std",
    "seeds_ci95_low",
    "seeds_ci95_high",
    "test_ci95_low",
    "test_ci95_high",
    "chance",
    "never_improved",
)

Scores = dict[str, np.ndarray]
"""Metric -> its value on each bootstrap resample."""


def _resampled(row: Mapping[str, Any], scores: Mapping[tuple[Any, ...], Scores]) -> np.ndarray | None:
    """A result row's metric on each resample of its test set, or ``None`` (no per-item results)."""
    return scores.get((*(row[k] for k in CELL_KEYS), row["test_center"]), {}).get(row["metric"])


def with_cell_interval(row: Mapping[str, Any], scores: Mapping[tuple[Any, ...], Scores]) -> dict[str, Any]:
    """A result row with its test-set bootstrap interval filled in."""
    resampled = _resampled(row, scores)
    low, high = percentile_interval(resampled) if resampled is not None else (math.nan, math.nan)
    return {**row, "test_ci95_low": low, "test_ci95_high": high, "never_improved": int(row["never_improved"])}


@dataclass
class SeedGroup:
    """The seeds of one summary row: ``seed -> (value, resample scores or None, n_train)``."""

    seeds: dict[int, tuple[float, np.ndarray | None, int]]

    def pair(self, other: SeedGroup) -> list[int]:
        return sorted(set(self.seeds) & set(other.seeds))


def summary_groups(
    rows: Sequence[Mapping[str, Any]], scores: Mapping[tuple[Any, ...], Scores]
) -> dict[tuple[Any, ...], SeedGroup]:
    """Summary key (``SUMMARY_KEYS``) -> the seeds of that summary row."""
    groups: dict[tuple[Any, ...], SeedGroup] = {}
    for key, members in group_rows(rows, SUMMARY_KEYS).items():
        seeds = {m["seed"]: (float(m["value"]), _resampled(m, scores), int(m["n_train"])) for m in members}
        groups[key] = SeedGroup(seeds)
    return groups


def summary_rows(
    rows: Sequence[Mapping[str, Any]],
    scores: Mapping[tuple[Any, ...], Scores],
    chance: Mapping[str, Mapping[str, float]],
) -> list[dict[str, Any]]:
    """The summary table's rows of one task's result rows (see the module docstring)."""
    summary = []
    for key, members in group_rows(rows, SUMMARY_KEYS).items():
        values = [float(m["value"]) for m in members]
        mean, std, low, high = mean_confidence_interval(values)
        resampled = [_resampled(m, scores) for m in members]
        if resampled and all(r is not None for r in resampled):
            test_low, test_high = percentile_interval(mean_over_seeds(resampled))  # type: ignore[arg-type]
        else:
            test_low, test_high = math.nan, math.nan
        row = dict(zip(SUMMARY_KEYS, key, strict=True))
        summary.append(
            {
                **row,
                "n_seeds": sum(not math.isnan(v) for v in values),
                "n_train": float(np.mean([m["n_train"] for m in members])),
                "mean": mean,
                "std": std,
                "seeds_ci95_low": low,
                "seeds_ci95_high": high,
                "test_ci95_low": test_low,
                "test_ci95_high": test_high,
                "chance": chance.get(row["test_center"], {}).get(row["metric"], math.nan),
                "never_improved": sum(bool(m["never_improved"]) for m in members),
            }
        )
    return summary


def never_improved_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A note per (encoder, task, mode) with cells that never improved on validation."""
    notes = []
    for (encoder, task, mode), members in group_rows(rows, ("encoder", "task", "mode")).items():
        cells = group_rows(members, CELL_KEYS)
        flagged = [key for key, cell_rows in cells.items() if cell_rows[0]["never_improved"]]
        if flagged:
            notes.append(
                f"task '{task}': {len(flagged)} of {len(cells)} {mode} cells of encoder '{encoder}' never "
                "improved on validation after their first evaluation (never_improved): the decoder or "
                "model may not have trained; give it more steps (finetune.epochs) or a higher learning rate"
            )
    return notes


def mean_over_seeds(resampled: Sequence[np.ndarray]) -> np.ndarray:
    """Per resample, the mean over seeds of their scores (NaN where no seed has one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means: np.ndarray = np.nanmean(np.stack(resampled), axis=0)
    return means
