"""A study's derived outputs: ``results.csv`` (with intervals), ``summary.csv``, ``paired.csv``,
``efficiency.csv``, ``results.json`` and a self-contained ``report.html``.

Everything here is computed from ``results.csv`` and the cells' per-item test results
(``predictions/``), so the outputs can be rebuilt (or another reference chosen) without running
any cell again. Plots are PNGs embedded in the HTML as base64, so the report is one file that
opens anywhere.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfoundry.evaluation.bootstrap import BootstrapUnit, Resampler
from medfoundry.evaluation.efficiency_table import EFFICIENCY_COLUMNS, Reference, percent, saving_sentence
from medfoundry.evaluation.paired_table import PAIRED_COLUMNS
from medfoundry.evaluation.report_figures import curve_figure, embed_png, heatmap_figure
from medfoundry.evaluation.statistics import EFFICIENCY_RULE
from medfoundry.evaluation.study_cells import RESULT_COLUMNS, atomic_write_text, read_results, write_csv
from medfoundry.evaluation.study_data import ALL
from medfoundry.evaluation.study_tables import StudyTables, build_study_tables
from medfoundry.evaluation.summary_table import SUMMARY_COLUMNS
from medfoundry.tasks.task_type import TaskType

__all__ = ["StudyOutputs", "render_report", "write_study_outputs"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
img { max-width: 100%; } .note { color: #555; } li.warn { color: #8a4b00; }
"""


@dataclass(frozen=True)
class StudyOutputs:
    """Paths of the files ``write_study_outputs`` wrote, and the tables themselves."""

    results: Path
    summary: Path
    paired: Path
    efficiency: Path
    json: Path
    report: Path
    tables: StudyTables


def write_study_outputs(
    study_dir: Path,
    *,
    tasks: Mapping[str, TaskType],
    primary_metrics: Mapping[str, str],
    reference: Reference | None,
    resampler: Resampler | None = None,
    comparisons: Sequence[str] = (),
    notes: Sequence[str] = (),
    title: str = "medfoundry evaluation study",
) -> StudyOutputs:
    """Derive every table and the report from ``study_dir/results.csv`` and ``predictions/``.

    Args:
        study_dir: The study folder.
        tasks: Task name -> task (scores the per-item results).
        primary_metrics: Task -> the metric plotted, paired and compared.
        reference: The data-efficiency reference, or ``None`` to leave that table empty.
        resampler: Bootstrap resamples (default: 1000, seed 0).
        comparisons: Encoders every encoder is paired with besides the reference (baselines).
        notes: Lines about the study itself (skipped tasks, missing baselines) for the report.
        title: Heading of the report.
    """
    study_dir = Path(study_dir)
    resampler = resampler or Resampler()
    tables = build_study_tables(
        read_results(study_dir / "results.csv"),
        tasks=tasks,
        predictions=study_dir / "predictions",
        primary_metrics=primary_metrics,
        reference=reference,
        resampler=resampler,
        comparisons=comparisons,
    )
    tables.notes[:0] = list(notes)
    page = render_report(
        tables,
        primary_metrics=primary_metrics,
        title=title,
        reference=reference,
        resamples=resampler.resamples,
        unit=resampler.unit,
    )
    document = {
        "primary_metrics": dict(primary_metrics),
        "reference": None if reference is None else vars(reference),
        "bootstrap": {
            "resamples": resampler.resamples,
            "seed": resampler.seed,
            "unit": resampler.unit,
            "level": 0.95,
        },
        "efficiency_rule": EFFICIENCY_RULE,
        "notes": tables.notes,
        "cells": tables.results,
        "summary": tables.summary,
        "paired": tables.paired,
        "efficiency": tables.efficiency,
    }
    return StudyOutputs(
        write_csv(study_dir / "results.csv", tables.results, RESULT_COLUMNS),
        write_csv(study_dir / "summary.csv", tables.summary, SUMMARY_COLUMNS),
        write_csv(study_dir / "paired.csv", tables.paired, PAIRED_COLUMNS),
        write_csv(study_dir / "efficiency.csv", tables.efficiency, EFFICIENCY_COLUMNS),
        atomic_write_text(study_dir / "results.json", json.dumps(_json_safe(document), indent=1)),
        atomic_write_text(study_dir / "report.html", page),
        tables,
    )


def render_report(
    tables: StudyTables,
    *,
    primary_metrics: Mapping[str, str],
    title: str,
    reference: Reference | None,
    resamples: int,
    unit: BootstrapUnit = "group",
) -> str:
    """The report as one HTML page (plots embedded)."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    drawn = (
        "test items, whole groups (patients, volumes, blocks) at a time" if unit == "group" else "test items"
    )
    parts.append(
        '<p class="note">Scores are means over seeds (or k-shot episodes). Two 95% intervals are given: '
        f"over the {drawn} (percentile bootstrap, {resamples} resamples; the bands on the curves) and "
        "over seeds (Student t), both clipped to [0, 1]. <i>n</i> is the number of training samples. "
        "Paired differences score both encoders on the same resampled test items, seed with seed. The "
        "dotted grey line is chance level. Full numbers: summary.csv, paired.csv, efficiency.csv, "
        "results.json.</p>"
    )
    if tables.notes:
        parts.append("<h2>Notes</h2><ul>")
        parts += [f'<li class="warn">{html.escape(note)}</li>' for note in tables.notes]
        parts.append("</ul>")
    parts.append("<h2>Data efficiency</h2>")
    if reference is not None:
        margin = f" (margin {reference.margin:g})" if reference.margin else ""
        parts.append(f'<p class="note">{html.escape(EFFICIENCY_RULE)}{margin}</p>')
        sentences = "".join(f"<li>{html.escape(saving_sentence(r))}</li>" for r in tables.efficiency)
        parts.append(f"<ul>{sentences}</ul>")
        parts.append(_efficiency_table(tables.efficiency))
    else:
        parts.append('<p class="note">No reference: the study has no encoder with pretrained: false.</p>')
    for task, metric in primary_metrics.items():
        parts += _task_section(tables, task, metric)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{chr(10).join(parts)}</body></html>"
    )


def _task_section(tables: StudyTables, task: str, metric: str) -> list[str]:
    rows = [r for r in tables.summary if r["task"] == task and r["metric"] == metric]
    pooled = [r for r in rows if r["train_center"] == ALL and r["test_center"] == ALL]
    parts = []
    fractions = [r for r in pooled if r["shots"] is None]
    if fractions:
        parts.append(f"<h2>{html.escape(task)}: {html.escape(metric)} versus training fraction</h2>")
        parts.append(embed_png(curve_figure(fractions, task, metric, x_key="fraction")))
        parts.append(_score_table(fractions, "fraction"))
    shots = [r for r in pooled if r["shots"] is not None]
    if shots:
        parts.append(f"<h2>{html.escape(task)}: {html.escape(metric)} versus shots per class</h2>")
        parts.append(embed_png(curve_figure(shots, f"{task} (k-shot)", metric, x_key="shots")))
        parts.append(_score_table(shots, "shots"))
    classes = _class_table(tables.summary, task)
    if classes:
        parts += classes
    paired = [r for r in tables.paired if r["task"] == task]
    if paired:
        parts.append(f"<h3>{html.escape(task)}: paired differences (encoder &minus; comparison)</h3>")
        parts.append(_paired_table(paired))
    crossed = [r for r in rows if r["train_center"] != ALL]
    if crossed:
        panels: dict[str, list[Mapping[str, Any]]] = {}
        for r in crossed:
            panels.setdefault(f"{r['encoder']} ({r['mode']})", []).append(r)
        parts.append(f"<h2>{html.escape(task)}: cross-center {html.escape(metric)}</h2>")
        parts.append(
            '<p class="note">Rows: center trained on; columns: center tested on; one colour scale.</p>'
        )
        parts.append(embed_png(heatmap_figure(panels, f"{task}: {metric}", metric)))
    return parts


def _class_table(summary: Sequence[Mapping[str, Any]], task: str) -> list[str]:
    """Segmentation: Dice per class at the largest training fraction, each class headed by its
    share of the test set's labelled pixels, so that a Dice of 0 reads as a small structure
    missed rather than a model that learnt nothing."""
    rows = [
        r
        for r in summary
        if r["task"] == task
        and r["train_center"] == ALL
        and r["test_center"] == ALL
        and r["shots"] is None
        and str(r["metric"]).startswith(("dice/", "share/"))
    ]
    if not rows:
        return []
    fraction = max(r["fraction"] for r in rows)
    rows = [r for r in rows if r["fraction"] == fraction]
    names = list(dict.fromkeys(r["metric"].split("/", 1)[1] for r in rows if r["metric"].startswith("dice/")))
    share = {r["metric"].split("/", 1)[1]: r["mean"] for r in rows if r["metric"].startswith("share/")}
    header = "".join(
        f"<th>{html.escape(n)} <small>({_percent_or_dash(share.get(n, math.nan))} of pixels)</small></th>"
        for n in names
    )
    dice = {(r["encoder"], r["mode"], r["metric"]): r["mean"] for r in rows}
    lines = [f"<table><tr><th>encoder</th><th>mode</th>{header}</tr>"]
    for encoder, mode in sorted({(r["encoder"], r["mode"]) for r in rows}):
        values = "".join(
            f"<td>{_number(dice.get((encoder, mode, f'dice/{n}'), math.nan))}</td>" for n in names
        )
        lines.append(
            f'<tr><td class="text">{html.escape(encoder)}</td><td class="text">{mode}</td>{values}</tr>'
        )
    title = f"<h3>{html.escape(task)}: Dice per class at {percent(fraction)} of the training labels</h3>"
    return [title, "".join(lines) + "</table>"]


def _percent_or_dash(value: float) -> str:
    return "&ndash;" if math.isnan(value) else f"{100 * value:.2g}%"


def _score_table(rows: Sequence[Mapping[str, Any]], x_key: str) -> str:
    xs = sorted({r[x_key] for r in rows})
    cells = {(r["encoder"], r["mode"], r[x_key]): r for r in rows}
    header = "".join(f"<th>{_x_label(x, x_key)}</th>" for x in xs)
    lines = [f"<table><tr><th>encoder</th><th>mode</th>{header}</tr>"]
    for encoder, mode in sorted({(r["encoder"], r["mode"]) for r in rows}):
        values = "".join(f"<td>{_score_cell(cells.get((encoder, mode, x)))}</td>" for x in xs)
        lines.append(
            f'<tr><td class="text">{html.escape(encoder)}</td><td class="text">{mode}</td>{values}</tr>'
        )
    return "".join(lines) + "</table>"


def _paired_table(rows: Sequence[Mapping[str, Any]]) -> str:
    keys = sorted({(r["fraction"] is None, r["shots"] or r["fraction"]) for r in rows})
    header = "".join(f"<th>{f'{x} shots' if is_shot else percent(x)}</th>" for is_shot, x in keys)
    lines = [f"<table><tr><th>encoder</th><th>mode</th><th>against</th>{header}</tr>"]
    cells = {
        (r["encoder"], r["mode"], r["reference"], r["fraction"] is None, r["shots"] or r["fraction"]): r
        for r in rows
    }
    for encoder, mode, against in sorted({(r["encoder"], r["mode"], r["reference"]) for r in rows}):
        values = "".join(
            f"<td>{_difference_cell(cells.get((encoder, mode, against, *k)))}</td>" for k in keys
        )
        lines.append(
            f'<tr><td class="text">{html.escape(encoder)}</td><td class="text">{mode}</td>'
            f'<td class="text">{html.escape(against)}</td>{values}</tr>'
        )
    return "".join(lines) + "</table>"


def _efficiency_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "<table><tr><th>encoder</th><th>task</th><th>mode</th><th>metric</th><th>reference</th>"
        "<th>reference score</th><th>labels needed</th><th>score there</th><th>difference [95% paired]</th>"
        "<th>score at 100%</th></tr>"
    ]
    for r in rows:
        needed = (
            "not reached"
            if math.isnan(r["fraction_needed"])
            else f"{percent(r['fraction_needed'])} <small>(n={r['n_train_needed']:.0f})</small>"
        )
        texts = "".join(
            f'<td class="text">{html.escape(str(r[k]))}</td>'
            for k in ("encoder", "task", "mode", "metric", "reference")
        )
        difference = (
            "not reached"
            if math.isnan(r["fraction_needed"])
            else _difference_cell(
                {
                    "difference": r["difference_at_fraction_needed"],
                    "diff_ci95_low": r["diff_ci95_low"],
                    "diff_ci95_high": r["diff_ci95_high"],
                }
            )
        )
        reference = f"{_number(r['reference_score'])} <small>(n={_count(r['reference_n_train'])})</small>"
        lines.append(
            f"<tr>{texts}<td>{reference}</td>"
            f"<td>{needed}</td><td>{_number(r['score_at_fraction_needed'])}</td><td>{difference}</td>"
            f"<td>{_number(r['full_data_score'])}</td></tr>"
        )
    return "".join(lines) + "</table>"


def _score_cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return ""
    test = _interval(row["test_ci95_low"], row["test_ci95_high"])
    seeds = _interval(row["seeds_ci95_low"], row["seeds_ci95_high"])
    flag = " &#9888;" if row["never_improved"] else ""
    return (
        f"{_number(row['mean'])}{flag} <small>test {test} seeds {seeds} (n={_count(row['n_train'])})</small>"
    )


def _difference_cell(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return ""
    if math.isnan(row["difference"]):
        return "&ndash;"
    pairs, better = row.get("n_pairs") or 0, row.get("n_better")
    seeds = f" {better}/{pairs} seeds higher" if better is not None and pairs > 1 else ""
    interval = _interval(row["diff_ci95_low"], row["diff_ci95_high"])
    return f"{row['difference']:+.3f} <small>{interval}{seeds}</small>"


def _interval(low: float, high: float) -> str:
    return "&ndash;" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"


def _x_label(x: float, x_key: str) -> str:
    return f"{x:g}-shot" if x_key == "shots" else percent(x)


def _number(value: float) -> str:
    return "&ndash;" if math.isnan(value) else f"{value:.3f}"


def _count(value: float) -> str:
    return "?" if math.isnan(value) else f"{value:.0f}"


def _json_safe(value: Any) -> Any:
    """NaN becomes null (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
