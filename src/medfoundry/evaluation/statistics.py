"""Summaries of a study's tidy results: mean, spread and confidence interval over seeds, and the
data-efficiency table (how little data each encoder needs to match a full-data reference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from medfoundry.evaluation.study_data import ALL

__all__ = [
    "EFFICIENCY_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUMMARY_KEYS",
    "data_efficiency",
    "mean_confidence_interval",
    "summarize",
]

SUMMARY_KEYS = ("encoder", "task", "mode", "fraction", "train_center", "test_center", "metric")
"""A summary row per distinct value of these columns (its values come from the seeds)."""

SUMMARY_COLUMNS = (*SUMMARY_KEYS, "n_seeds", "n_train", "mean", "std", "ci95_low", "ci95_high")

EFFICIENCY_COLUMNS = (
    "encoder",
    "task",
    "mode",
    "metric",
    "reference",
    "reference_score",
    "fraction_needed",
    "score_at_fraction_needed",
    "full_data_score",
)


def mean_confidence_interval(
    values: Sequence[float], level: float = 0.95
) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and Student-t confidence interval of the mean.

    NaN values (a metric undefined on some run) are left out. With one value the spread and
    interval are NaN; with none everything is.

    Returns:
        ``(mean, std, low, high)`` with ``std`` using ``n - 1`` and ``low, high = mean -/+
        t_{(1 + level) / 2, n - 1} * std / sqrt(n)``.

    Examples:
        >>> [round(v, 3) for v in mean_confidence_interval([0.7, 0.8, 0.9])]
        [0.8, 0.1, 0.552, 1.048]
    """
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan, math.nan
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + level) / 2, x.size - 1)) * std / math.sqrt(x.size)
    return mean, std, mean - half, mean + half


def summarize(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per ``SUMMARY_KEYS`` group of tidy result rows (see ``SUMMARY_COLUMNS``).

    ``n_seeds`` counts the finite values, ``n_train`` is the mean training-set size.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in SUMMARY_KEYS), []).append(row)
    summary = []
    for key, members in groups.items():
        values = [float(m["value"]) for m in members]
        mean, std, low, high = mean_confidence_interval(values)
        summary.append(
            {
                **dict(zip(SUMMARY_KEYS, key, strict=True)),
                "n_seeds": sum(not math.isnan(v) for v in values),
                "n_train": float(np.mean([m["n_train"] for m in members])),
                "mean": mean,
                "std": std,
                "ci95_low": low,
                "ci95_high": high,
            }
        )
    return summary


def data_efficiency(
    summary: Sequence[Mapping[str, Any]],
    primary_metrics: Mapping[str, str],
    reference_encoder: str,
    reference_mode: str | None = None,
    reference_fraction: float = 1.0,
) -> list[dict[str, Any]]:
    """For each encoder, task and mode: the smallest fraction whose mean reaches the reference.

    The reference score is the mean primary metric of ``reference_encoder`` in
    ``reference_mode`` (default: the same mode as the row) at ``reference_fraction``, pooled
    over centers. An encoder "needs" fraction ``f`` when ``f`` is the smallest fraction whose
    mean score is at least the reference score. This is how statements like "matches the
    full-data baseline with 1% of the labels" are computed.

    Args:
        summary: Rows from ``summarize``.
        primary_metrics: Task -> the metric compared.
        reference_encoder: Encoder of the reference score.
        reference_mode: Mode of the reference score; ``None``: each row's own mode.
        reference_fraction: Fraction of the reference score.

    Returns:
        Rows with ``EFFICIENCY_COLUMNS``; ``fraction_needed`` is NaN when no fraction reaches
        the reference (or the reference was not run).
    """
    curves: dict[tuple[str, str, str], dict[float, float]] = {}
    for row in summary:
        if row["train_center"] == ALL and row["metric"] == primary_metrics.get(row["task"]):
            curves.setdefault((row["encoder"], row["task"], row["mode"]), {})[row["fraction"]] = row["mean"]
    table = []
    for (encoder, task, mode), curve in curves.items():
        ref_mode = reference_mode or mode
        reference = curves.get((reference_encoder, task, ref_mode), {}).get(reference_fraction, math.nan)
        reached = [f for f in sorted(curve) if not math.isnan(reference) and curve[f] >= reference]
        needed = reached[0] if reached else math.nan
        table.append(
            {
                "encoder": encoder,
                "task": task,
                "mode": mode,
                "metric": primary_metrics[task],
                "reference": f"{reference_encoder} {ref_mode} @ {reference_fraction:.0%}",
                "reference_score": reference,
                "fraction_needed": needed,
                "score_at_fraction_needed": curve[needed] if reached else math.nan,
                "full_data_score": curve.get(1.0, math.nan),
            }
        )
    return table
