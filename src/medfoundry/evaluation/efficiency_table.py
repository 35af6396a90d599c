"""A study's data-efficiency table: the fraction of the labels each encoder needs to reach the
reference (``statistics.EFFICIENCY_RULE``), decided by the paired interval at each fraction;
and the plain sentence that says how many labels that saves (``saving_sentence``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medfoundry.evaluation.paired_table import paired_difference
from medfoundry.evaluation.statistics import fraction_needed, identical_fractions
from medfoundry.evaluation.study_data import ALL
from medfoundry.evaluation.summary_table import SeedGroup

__all__ = ["EFFICIENCY_COLUMNS", "Reference", "efficiency_rows", "percent", "saving_sentence"]

EFFICIENCY_COLUMNS = (
    "encoder",
    "task",
    "mode",
    "metric",
    "reference",
    "reference_score",
    "reference_n_train",
    "fraction_needed",
    "n_train_needed",
    "score_at_fraction_needed",
    "difference_at_fraction_needed",
    "diff_ci95_low",
    "diff_ci95_high",
    "full_data_score",
    "margin",
    "same_subset_fractions",
)

Means = dict[tuple[str, str, float], Mapping[str, Any]]
"""(encoder, mode, fraction) -> the summary row of the primary metric (all labels' centers)."""


@dataclass(frozen=True)
class Reference:
    """The data-efficiency reference: ``encoder`` in ``mode`` (``None``: each row's own) at
    ``fraction``, reached within ``margin``."""

    encoder: str
    mode: str | None = None
    fraction: float = 1.0
    margin: float = 0.0

    def label(self, mode: str) -> str:
        return f"{self.encoder} {self.mode or mode} @ {percent(self.fraction)}"


def efficiency_rows(
    groups: Mapping[tuple[Any, ...], SeedGroup],
    rows: Sequence[Mapping[str, Any]],
    *,
    reference: Reference,
    metric: str,
    summary: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Efficiency rows of one task, and a note per group of fractions with the same subset.

    Args:
        groups: The task's summary groups (``summary_groups``).
        rows: The task's result rows.
        reference: What each encoder must reach.
        metric: The task's primary metric.
        summary: The task's summary rows.
    """
    pooled = [r for r in rows if r["shots"] is None and r["train_center"] == ALL]
    if not pooled:
        return [], []
    task = pooled[0]["task"]
    n_train: dict[float, dict[int, int]] = {}
    for r in pooled:
        n_train.setdefault(r["fraction"], {})[r["seed"]] = r["n_train"]
    same = identical_fractions(n_train)
    notes = [
        f"task '{task}': fractions {', '.join(percent(f) for f in group)} trained on the same subset "
        f"(n = {_sizes(n_train[group[0]])}); the efficiency table counts them once, as {percent(group[-1])}"
        for group in same
    ]
    means: Means = {
        (s["encoder"], s["mode"], s["fraction"]): s
        for s in summary
        if s["metric"] == metric
        and s["shots"] is None
        and s["train_center"] == ALL
        and s["test_center"] == ALL
    }
    table = []
    for encoder, mode in dict.fromkeys((e, m) for (e, m, _) in means):
        if (encoder, mode) == (reference.encoder, reference.mode or mode):
            continue  # the reference is never compared with itself
        found = _differences(
            groups, means, encoder=encoder, mode=mode, task=task, metric=metric, reference=reference
        )
        table.append(
            _efficiency_row(
                means, found, same, encoder=encoder, mode=mode, task=task, metric=metric, reference=reference
            )
        )
    return table, notes


def _differences(
    groups: Mapping[tuple[Any, ...], SeedGroup],
    means: Means,
    *,
    encoder: str,
    mode: str,
    task: str,
    metric: str,
    reference: Reference,
) -> dict[float, tuple[float, float, float]]:
    """Fraction -> the encoder's paired difference from the reference there (seeds in common)."""
    ref_mode = reference.mode or mode
    ref = groups.get((reference.encoder, task, ref_mode, reference.fraction, None, ALL, ALL, metric))
    found: dict[float, tuple[float, float, float]] = {}
    if ref is None:
        return found
    for e, m, fraction in means:
        if (e, m) != (encoder, mode):
            continue
        mine = groups[(e, task, m, fraction, None, ALL, ALL, metric)]
        seeds = mine.pair(ref)
        if seeds:
            found[fraction] = paired_difference(
                [mine.seeds[s][:2] for s in seeds], [ref.seeds[s][:2] for s in seeds]
            )
    return found


def _efficiency_row(
    means: Means,
    found: Mapping[float, tuple[float, float, float]],
    same: Sequence[Sequence[float]],
    *,
    encoder: str,
    mode: str,
    task: str,
    metric: str,
    reference: Reference,
) -> dict[str, Any]:
    """One encoder's row: the smallest fraction that reached the reference, and its numbers."""
    reached = {f: not math.isnan(low) and low >= -reference.margin for f, (_, low, _) in found.items()}
    needed = fraction_needed(reached, same)
    at_needed = means.get((encoder, mode, needed), {})
    ref_summary = means.get((reference.encoder, reference.mode or mode, reference.fraction), {})
    difference, low, high = found.get(needed, (math.nan, math.nan, math.nan))
    return {
        "encoder": encoder,
        "task": task,
        "mode": mode,
        "metric": metric,
        "reference": reference.label(mode),
        "reference_score": ref_summary.get("mean", math.nan),
        "reference_n_train": ref_summary.get("n_train", math.nan),
        "fraction_needed": needed,
        "n_train_needed": at_needed.get("n_train", math.nan),
        "score_at_fraction_needed": at_needed.get("mean", math.nan),
        "difference_at_fraction_needed": difference,
        "diff_ci95_low": low,
        "diff_ci95_high": high,
        "full_data_score": means.get((encoder, mode, 1.0), {}).get("mean", math.nan),
        "margin": reference.margin,
        "same_subset_fractions": "; ".join("=".join(f"{f:g}" for f in g) for g in same),
    }


def saving_sentence(row: Mapping[str, Any]) -> str:
    """One plain sentence from an efficiency row: did the encoder save labels, and how many.

    Examples:
        >>> row = {"encoder": "pretrained", "task": "nuclei", "mode": "linear", "metric": "auroc",
        ...        "reference": "random linear @ 100%", "reference_score": 0.8, "reference_n_train": 600,
        ...        "fraction_needed": 0.1, "n_train_needed": 60, "full_data_score": 0.9}
        >>> saving_sentence(row).split(": ")[1]
        'reached random linear @ 100% (auroc 0.800, n=600) with 10% of the labels (n=60)'
        >>> saving_sentence(row).split(": ")[2]
        '540 labels (90%) saved; with all labels it scored 0.900'
        >>> saving_sentence({**row, "fraction_needed": 1.0, "n_train_needed": 600}).split(": ")[2]
        'no labels saved (as many as the reference used); with all labels it scored 0.900'
    """
    head = f"{row['encoder']} ({row['mode']}) on {row['task']}"
    score = f"{row['metric']} {float(row['reference_score']):.3f}"
    reference = f"{row['reference']} ({score}, n={_n(row['reference_n_train'])})"
    full = f"with all labels it scored {float(row['full_data_score']):.3f}"
    needed = float(row["fraction_needed"])
    if math.isnan(needed):
        return (
            f"{head}: no labels shown saved: at no share of the labels did it reach {reference} with 95% "
            f"paired confidence; {full}"
        )
    reached = (
        f"{head}: reached {reference} with {percent(needed)} of the labels (n={_n(row['n_train_needed'])})"
    )
    saved = float(row["reference_n_train"]) - float(row["n_train_needed"])
    if math.isnan(saved):  # no label count of the reference (or of the fraction reached)
        return f"{reached}: how many labels that saves is unknown (no label count); {full}"
    if saved == 0:
        return f"{reached}: no labels saved (as many as the reference used); {full}"
    if saved < 0:  # a reference trained on a share of the labels can need fewer than the encoder
        return f"{reached}: no labels saved ({-saved:.0f} more than the reference used); {full}"
    share = saved / float(row["reference_n_train"])
    return f"{reached}: {saved:.0f} labels ({percent(round(share, 3))}) saved; {full}"


def _n(value: Any) -> str:
    return "?" if value is None or math.isnan(float(value)) else f"{float(value):.0f}"


def percent(fraction: float) -> str:
    """``0.1`` -> ``10%``, ``0.104`` -> ``10.4%``, ``0.005`` -> ``0.5%``."""
    text = f"{100 * fraction:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _sizes(by_seed: Mapping[int, int]) -> str:
    sizes = sorted(set(by_seed.values()))
    return ", ".join(str(n) for n in sizes) + (" across seeds" if len(sizes) > 1 else "")
