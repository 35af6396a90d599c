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

Intervals are 95% percentile intervals clipped to [0, 1] (differences: [-1, 1]). Each table has
its module: ``summary_table``, ``paired_table``, ``efficiency_table``; this one builds them all
for each task.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medfoundry.evaluation.bootstrap import Resampler, group_notes
from medfoundry.evaluation.efficiency_table import Reference, efficiency_rows
from medfoundry.evaluation.paired_table import paired_rows
from medfoundry.evaluation.predictions import ITEM_GROUPS, N_ITEMS, load_predictions
from medfoundry.evaluation.statistics import group_rows
from medfoundry.evaluation.study_cells import CELL_KEYS, Cell
from medfoundry.evaluation.summary_table import (
    Scores,
    never_improved_notes,
    summary_groups,
    summary_rows,
    with_cell_interval,
)
from medfoundry.tasks.task_type import TaskType

__all__ = ["StudyTables", "build_study_tables"]


@dataclass
class StudyTables:
    """Every derived table of a study (see the module docstring); rows are plain dicts."""

    results: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    efficiency: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


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
        scores, chance, lost, item_groups, ungrouped = _task_scores(task_rows, task, predictions, resampler)
        missing += lost
        for test, test_groups in sorted(item_groups.items()):
            tables.notes += group_notes(f"{task_name[0]}/{test}", test_groups, resampler.unit)
        if ungrouped and resampler.unit == "group":
            tables.notes.append(
                f"task '{task_name[0]}': cells of test set(s) {', '.join(ungrouped)} store no item groups "
                "(cells run before item groups were stored): their bootstrap resamples images, not groups"
            )
        task_results = [with_cell_interval(row, scores) for row in task_rows]
        summary = summary_rows(task_results, scores, chance)
        metric = primary_metrics[task.spec.name]
        groups = summary_groups(task_results, scores)
        tables.results += task_results
        tables.summary += summary
        tables.paired += paired_rows(
            groups,
            targets=targets,
            reference_encoder=reference.encoder if reference else None,
            reference_mode=reference.mode if reference else None,
            metric=metric,
        )
        if reference is not None:
            rows, note = efficiency_rows(
                groups, task_results, reference=reference, metric=metric, summary=summary
            )
            tables.efficiency += rows
            tables.notes += note
        tables.notes += never_improved_notes(task_results)
    if missing:
        tables.notes.append(
            f"{missing} cell(s) have no per-item test results (predictions/): their bootstrap "
            "intervals, paired differences and efficiency rows are empty; run the study again to redo them"
        )
    return tables


def _task_scores(
    rows: Sequence[Mapping[str, Any]], task: TaskType, predictions: Path, resampler: Resampler
) -> tuple[dict[tuple[Any, ...], Scores], dict[str, dict[str, float]], int, dict[str, np.ndarray], list[str]]:
    """Resample scores per (cell key + test set), chance levels per test set, cells missing, the
    items' groups per test set, and the test sets whose items are resampled one by one because a
    cell stored no item groups."""
    metrics = task.metrics()
    stored = {}
    missing = 0
    for key in group_rows(rows, CELL_KEYS):
        cell = Cell(**dict(zip(CELL_KEYS, key, strict=True)))
        stored[key] = load_predictions(predictions / f"{cell.id}.npz")
        missing += not stored[key]
    groups = _test_set_groups(stored.values())
    scores: dict[tuple[Any, ...], Scores] = {}
    chance: dict[str, dict[str, float]] = {}
    for key, by_test in stored.items():
        for test, items in by_test.items():
            n = int(items.pop(N_ITEMS))
            items.pop(ITEM_GROUPS, None)
            name = f"{task.spec.name}/{test}"
            scores[(*key, test)] = resampler.scores(metrics, items, n=n, name=name, groups=groups.get(test))
            if test not in chance:
                chance[test] = metrics.chance(items)
    ungrouped = [test for test in {t for by_test in stored.values() for t in by_test} if test not in groups]
    return scores, chance, missing, groups, sorted(ungrouped)


def _test_set_groups(stored: Iterable[Mapping[str, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
    """Test set -> its items' groups, where every cell stored the same ones (cells of a study
    from before item groups were stored have none: that test set is then resampled by item, so
    that every cell of it still sees the same resamples)."""
    seen: dict[str, list[np.ndarray | None]] = {}
    for by_test in stored:
        for test, items in by_test.items():
            seen.setdefault(test, []).append(items.get(ITEM_GROUPS))
    out = {}
    for test, arrays in seen.items():
        first = arrays[0]
        if first is not None and all(a is not None and np.array_equal(a, first) for a in arrays):
            out[test] = first
    return out
