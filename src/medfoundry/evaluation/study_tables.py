"""A study's tables, derived from ``results.csv`` and the cells' per-item test results.

- **results**: every cell's rows, with its test-set bootstrap interval filled in;
- **summary**: per (encoder, task, mode, fraction or shots, centers, metric) over seeds: mean,
  the Student-t interval over seeds, the test-set bootstrap interval of that mean (the
  resamples score every seed on the same items and average them; at 100% of the labels, where
  every seed trains on the same set, this is the interval that says something), the training
  size ``n_train`` and the chance level;
- **paired**: each encoder minus each comparison encoder (the reference and the baselines), same
  task, mode, fraction or shots, on the same test items, pairing seed with seed: the mean
  difference and its paired bootstrap interval;
- **efficiency**: the fraction of the labels each encoder needs to reach the reference
  (``statistics.EFFICIENCY_RULE``), decided by the paired interval;
- **notes**: fractions that gave the same subset, cells that never improved, missing results.

Intervals are 95% percentile intervals clipped to [0, 1] (differences: [-1, 1]).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfoundry.evaluation.bootstrap import Resampler, percentile_interval
from medfoundry.evaluation.predictions import N_ITEMS, load_predictions
from medfoundry.evaluation.statistics import (
    fraction_needed,
    group_rows,
    identical_fractions,
    mean_confidence_interval,
)
from medfoundry.evaluation.study_cells import CELL_KEYS, Cell
from medfoundry.evaluation.study_data import ALL
from medfoundry.tasks.task_type import TaskType

__all__ = [
    "EFFICIENCY_COLUMNS",
    "PAIRED_COLUMNS",
    "SUMMARY_COLUMNS",
    "SUMMARY_KEYS",
    "Reference",
    "StudyTables",
    "build_study_tables",
    "paired_difference",
    "percent",
    "saving_sentence",
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
    "n_train",
    "difference",
    "diff_ci95_low",
    "diff_ci95_high",
)
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
DIFFERENCE_RANGE = (-1.0, 1.0)

Scores = dict[str, np.ndarray]
"""Metric -> its value on each bootstrap resample."""


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


@dataclass
class StudyTables:
    """Every derived table of a study (see the module docstring); rows are plain dicts."""

    results: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    efficiency: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


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
    low, high = percentile_interval(_mean_over_seeds(per_seed), DIFFERENCE_RANGE)
    return difference, low, high


def build_study_tables(
    results: Sequence[Mapping[str, Any]],
    *,
    tasks: Mapping[str, TaskType],
    predictions: Path,
    primary_metrics: Mapping[str, str],
    reference: Reference | None,
    resampler: Resampler,
    comparisons: Sequence[str] = (),
) -> StudyTables:
    """Derive every table from the result rows and ``predictions/<cell id>.npz``.

    Args:
        results: Rows of ``results.csv`` (``read_results``).
        tasks: Task name -> task (whose metrics score the per-item results).
        predictions: The study's ``predictions`` folder.
        primary_metrics: Task -> the metric of the paired and efficiency tables.
        reference: The data-efficiency reference, or ``None`` (no efficiency table).
        resampler: The bootstrap resamples.
        comparisons: Encoders every other encoder is compared with in the paired table (the
            reference is always one).
    """
    tables = StudyTables([], [], [], [])
    targets = list(dict.fromkeys([*([reference.encoder] if reference else []), *comparisons]))
    missing = 0
    for task_name, task_rows in group_rows(results, ("task",)).items():
        task = tasks[task_name[0]]
        scores, chance, lost = _task_scores(task_rows, task, predictions, resampler)
        missing += lost
        task_results = [_with_cell_interval(row, scores) for row in task_rows]
        summary = _summary(task_results, scores, chance)
        metric = primary_metrics[task.spec.name]
        groups = _summary_groups(task_results, scores)
        tables.results += task_results
        tables.summary += summary
        tables.paired += _paired(groups, targets, reference, metric)
        if reference is not None:
            rows, note = _efficiency(groups, task_results, reference, metric, summary)
            tables.efficiency += rows
            tables.notes += note
        tables.notes += _never_improved_notes(task_results)
    if missing:
        tables.notes.append(
            f"{missing} cell(s) have no per-item test results (predictions/): their bootstrap "
            "intervals, paired differences and efficiency rows are empty; run the study again to redo them"
        )
    return tables


def _task_scores(
    rows: Sequence[Mapping[str, Any]], task: TaskType, predictions: Path, resampler: Resampler
) -> tuple[dict[tuple[Any, ...], Scores], dict[str, dict[str, float]], int]:
    """Resample scores per (cell key + test set), chance levels per test set, cells missing."""
    metrics = task.metrics()
    scores: dict[tuple[Any, ...], Scores] = {}
    chance: dict[str, dict[str, float]] = {}
    missing = 0
    for key in group_rows(rows, CELL_KEYS):
        cell = Cell(**dict(zip(CELL_KEYS, key, strict=True)))
        stored = load_predictions(predictions / f"{cell.id}.npz")
        if not stored:
            missing += 1
        for test, items in stored.items():
            n = int(items.pop(N_ITEMS))
            scores[(*key, test)] = resampler.scores(metrics, items, n=n, name=f"{task.spec.name}/{test}")
            if test not in chance:
                chance[test] = metrics.chance(items)
    return scores, chance, missing


def _with_cell_interval(row: Mapping[str, Any], scores: Mapping[tuple[Any, ...], Scores]) -> dict[str, Any]:
    resampled = scores.get((*(row[k] for k in CELL_KEYS), row["test_center"]), {}).get(row["metric"])
    low, high = percentile_interval(resampled) if resampled is not None else (math.nan, math.nan)
    return {**row, "test_ci95_low": low, "test_ci95_high": high, "never_improved": int(row["never_improved"])}


@dataclass
class _Group:
    """The seeds of one summary row: ``seed -> (value, resample scores or None, n_train)``."""

    seeds: dict[int, tuple[float, np.ndarray | None, int]]

    def pair(self, other: _Group) -> list[int]:
        return sorted(set(self.seeds) & set(other.seeds))


def _summary_groups(
    rows: Sequence[Mapping[str, Any]], scores: Mapping[tuple[Any, ...], Scores]
) -> dict[tuple[Any, ...], _Group]:
    groups: dict[tuple[Any, ...], _Group] = {}
    for key, members in group_rows(rows, SUMMARY_KEYS).items():
        seeds = {}
        for m in members:
            resampled = scores.get((*(m[k] for k in CELL_KEYS), m["test_center"]), {}).get(m["metric"])
            seeds[m["seed"]] = (float(m["value"]), resampled, int(m["n_train"]))
        groups[key] = _Group(seeds)
    return groups


def _summary(
    rows: Sequence[Mapping[str, Any]],
    scores: Mapping[tuple[Any, ...], Scores],
    chance: Mapping[str, Mapping[str, float]],
) -> list[dict[str, Any]]:
    summary = []
    for key, members in group_rows(rows, SUMMARY_KEYS).items():
        values = [float(m["value"]) for m in members]
        mean, std, low, high = mean_confidence_interval(values)
        resampled = [
            scores.get((*(m[k] for k in CELL_KEYS), m["test_center"]), {}).get(m["metric"]) for m in members
        ]
        if resampled and all(r is not None for r in resampled):
            test_low, test_high = percentile_interval(_mean_over_seeds(resampled))  # type: ignore[arg-type]
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


def _paired(
    groups: Mapping[tuple[Any, ...], _Group], targets: Sequence[str], reference: Reference | None, metric: str
) -> list[dict[str, Any]]:
    rows = []
    for key, group in groups.items():
        encoder, task, mode, fraction, shots, train_center, test_center, row_metric = key
        if row_metric != metric or train_center != ALL:
            continue
        for target in targets:
            target_mode = (
                reference.mode if reference and target == reference.encoder and reference.mode else mode
            )
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
                    "n_train": float(np.mean([group.seeds[s][2] for s in seeds])),
                    "difference": difference,
                    "diff_ci95_low": low,
                    "diff_ci95_high": high,
                }
            )
    return rows


def _efficiency(
    groups: Mapping[tuple[Any, ...], _Group],
    rows: Sequence[Mapping[str, Any]],
    reference: Reference,
    metric: str,
    summary: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Efficiency rows of one task, and a note per group of fractions with the same subset."""
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
    means = {
        (s["encoder"], s["mode"], s["fraction"]): s
        for s in summary
        if s["metric"] == metric
        and s["shots"] is None
        and s["train_center"] == ALL
        and s["test_center"] == ALL
    }
    table = []
    for encoder, mode in dict.fromkeys((e, m) for (e, m, _) in means):
        ref_mode = reference.mode or mode
        if (encoder, mode) == (reference.encoder, ref_mode):
            continue  # the reference is never compared with itself
        ref_key = (reference.encoder, task, ref_mode, reference.fraction, None, ALL, ALL, metric)
        ref = groups.get(ref_key)
        found: dict[float, tuple[float, float, float]] = {}
        for (e, m, fraction), _ in means.items():
            mine = groups[(e, task, m, fraction, None, ALL, ALL, metric)]
            seeds = mine.pair(ref) if ref is not None and (e, m) == (encoder, mode) else []
            if ref is not None and seeds:
                found[fraction] = paired_difference(
                    [mine.seeds[s][:2] for s in seeds], [ref.seeds[s][:2] for s in seeds]
                )
        reached = {f: not math.isnan(low) and low >= -reference.margin for f, (_, low, _) in found.items()}
        needed = fraction_needed(reached, same)
        at_needed = means.get((encoder, mode, needed), {})
        ref_summary = means.get((reference.encoder, ref_mode, reference.fraction), {})
        difference, low, high = found.get(needed, (math.nan, math.nan, math.nan))
        table.append(
            {
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
        )
    return table, notes


def _never_improved_notes(rows: Sequence[Mapping[str, Any]]) -> list[str]:
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
    if saved <= 0:  # a reference trained on a share of the labels can need fewer than the encoder
        return f"{reached}: no labels saved ({-saved:.0f} more than the reference used); {full}"
    share = saved / float(row["reference_n_train"])
    return f"{reached}: {saved:.0f} labels ({percent(round(share, 3))}) saved; {full}"


def _n(value: Any) -> str:
    return "?" if value is None or math.isnan(float(value)) else f"{float(value):.0f}"


def percent(fraction: float) -> str:
    """``0.1`` -> ``10%``, ``0.104`` -> ``10.4%``, ``0.005`` -> ``0.5%``."""
    text = f"{100 * fraction:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _mean_over_seeds(resampled: Sequence[np.ndarray]) -> np.ndarray:
    """Per resample, the mean over seeds of their scores (NaN where no seed has one)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means: np.ndarray = np.nanmean(np.stack(resampled), axis=0)
    return means


def _sizes(by_seed: Mapping[int, int]) -> str:
    sizes = sorted(set(by_seed.values()))
    return ", ".join(str(n) for n in sizes) + (" across seeds" if len(sizes) > 1 else "")
