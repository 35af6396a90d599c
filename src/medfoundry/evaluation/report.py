"""A study's derived outputs: ``summary.csv``, ``efficiency.csv`` and a self-contained ``report.html``.

Everything here is computed from ``results.csv`` alone, so the report can be rebuilt (or a
different reference chosen) without running anything again. Plots are PNGs embedded in the
HTML as base64, so the report is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Figure, not pyplot: no global figure state and no GUI backend, so reports render anywhere
from matplotlib.figure import Figure

from medfoundry.evaluation.statistics import EFFICIENCY_COLUMNS, SUMMARY_COLUMNS, data_efficiency, summarize
from medfoundry.evaluation.study_cells import read_results, write_csv
from medfoundry.evaluation.study_data import ALL

__all__ = ["StudyOutputs", "write_study_outputs"]

LINE_STYLES = ("-", "--", ":", "-.")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td.text { text-align: left; }
img { max-width: 100%; } .note { color: #555; }
"""


class StudyOutputs:
    """Paths of the files ``write_study_outputs`` wrote."""

    def __init__(self, summary: Path, efficiency: Path, report: Path) -> None:
        self.summary, self.efficiency, self.report = summary, efficiency, report


def write_study_outputs(
    study_dir: Path,
    primary_metrics: Mapping[str, str],
    reference: tuple[str, str | None, float] | None,
    title: str = "medfoundry evaluation study",
) -> StudyOutputs:
    """Derive summary, data-efficiency table and report from ``study_dir/results.csv``.

    Args:
        study_dir: The study folder.
        primary_metrics: Task -> the metric plotted and compared.
        reference: ``(encoder, mode or None, fraction)`` of the data-efficiency reference, or
            ``None`` to leave the table empty (no reference encoder in the study).
        title: Heading of the report.
    """
    study_dir = Path(study_dir)
    summary = summarize(read_results(study_dir / "results.csv"))
    efficiency = data_efficiency(summary, primary_metrics, *reference) if reference else []
    page = render_report(summary, efficiency, primary_metrics, title, reference is not None)
    report = study_dir / "report.html"
    tmp = report.with_name(".report.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(report)
    return StudyOutputs(
        write_csv(study_dir / "summary.csv", summary, SUMMARY_COLUMNS),
        write_csv(study_dir / "efficiency.csv", efficiency, EFFICIENCY_COLUMNS),
        report,
    )


def render_report(
    summary: Sequence[Mapping[str, Any]],
    efficiency: Sequence[Mapping[str, Any]],
    primary_metrics: Mapping[str, str],
    title: str,
    has_reference: bool,
) -> str:
    """The report as one HTML page (plots embedded)."""
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts.append(
        '<p class="note">Means over seeds with 95% confidence intervals (Student t). Derived from '
        "results.csv; full numbers in summary.csv and efficiency.csv.</p>"
    )
    parts.append("<h2>Data efficiency</h2>")
    if has_reference:
        parts.append(
            '<p class="note">Smallest share of the training labels whose mean score reaches the '
            "reference's score.</p>" + _efficiency_table(efficiency)
        )
    else:
        parts.append('<p class="note">No reference: the study has no encoder with pretrained: false.</p>')
    pooled = [r for r in summary if r["train_center"] == ALL]
    for task, metric in primary_metrics.items():
        rows = [r for r in pooled if r["task"] == task and r["metric"] == metric]
        if rows:
            parts.append(f"<h2>{html.escape(task)}: {html.escape(metric)} versus training fraction</h2>")
            parts.append(_image(_curve_figure(rows, task, metric)))
            parts.append(_fraction_table(rows))
    crossed = [r for r in summary if r["train_center"] != ALL]
    for task, metric in primary_metrics.items():
        rows = [r for r in crossed if r["task"] == task and r["metric"] == metric]
        if rows:
            parts.append(f"<h2>{html.escape(task)}: cross-center {html.escape(metric)}</h2>")
            parts.append('<p class="note">Rows: center trained on; columns: center tested on.</p>')
            for key in sorted({(r["encoder"], r["mode"]) for r in rows}):
                chosen = [r for r in rows if (r["encoder"], r["mode"]) == key]
                parts.append(_image(_heatmap_figure(chosen, f"{key[0]} ({key[1]})", metric)))
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def _curve_figure(rows: Sequence[Mapping[str, Any]], task: str, metric: str) -> Figure:
    """Mean score versus fraction with its 95% band: colour per encoder, line style per mode."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    fractions = sorted({r["fraction"] for r in rows})
    encoders = sorted({r["encoder"] for r in rows})
    modes = sorted({r["mode"] for r in rows})
    for encoder, mode in sorted({(r["encoder"], r["mode"]) for r in rows}):
        line = sorted(
            (r for r in rows if (r["encoder"], r["mode"]) == (encoder, mode)), key=lambda r: r["fraction"]
        )
        x = [r["fraction"] for r in line]
        color = f"C{encoders.index(encoder) % 10}"
        style = LINE_STYLES[modes.index(mode) % len(LINE_STYLES)]
        ax.plot(x, [r["mean"] for r in line], style, marker="o", color=color, label=f"{encoder} ({mode})")
        low, high = [r["ci95_low"] for r in line], [r["ci95_high"] for r in line]
        ax.fill_between(x, low, high, color=color, alpha=0.12, linewidth=0)
    # every task metric lies in [0, 1]; bands of few seeds reach far beyond, so the axes follow the means
    means = [r["mean"] for r in rows if not math.isnan(r["mean"])]
    if means:
        ax.set_ylim(max(-0.02, min(means) - 0.1), min(1.02, max(means) + 0.1))
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:.0%}" if f >= 0.01 else f"{f:.1%}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("share of training labels")
    ax.set_ylabel(metric)
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def _heatmap_figure(rows: Sequence[Mapping[str, Any]], title: str, metric: str) -> Figure:
    trained = sorted({r["train_center"] for r in rows})
    tested = sorted({r["test_center"] for r in rows})
    matrix = np.full((len(trained), len(tested)), np.nan)
    for r in rows:
        matrix[trained.index(r["train_center"]), tested.index(r["test_center"])] = r["mean"]
    fig = Figure(figsize=(1.2 * len(tested) + 2.5, 0.9 * len(trained) + 1.5))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="viridis")
    for (i, j), value in np.ndenumerate(matrix):
        if not math.isnan(value):
            ax.text(
                j,
                i,
                f"{value:.3f}",
                ha="center",
                va="center",
                color="w" if value < np.nanmean(matrix) else "k",
            )
    ax.set_xticks(range(len(tested)), tested)
    ax.set_yticks(range(len(trained)), trained)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title(f"{title}: {metric}")
    fig.colorbar(image, ax=ax)
    return fig


def _image(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _fraction_table(rows: Sequence[Mapping[str, Any]]) -> str:
    fractions = sorted({r["fraction"] for r in rows})
    cells = {(r["encoder"], r["mode"], r["fraction"]): r for r in rows}
    header = "".join(f"<th>{f:.0%}</th>" for f in fractions)
    lines = [f"<table><tr><th>encoder</th><th>mode</th>{header}</tr>"]
    for encoder, mode in sorted({(r["encoder"], r["mode"]) for r in rows}):
        values = "".join(f"<td>{_mean_ci(cells.get((encoder, mode, f)))}</td>" for f in fractions)
        lines.append(
            f'<tr><td class="text">{html.escape(encoder)}</td><td class="text">{mode}</td>{values}</tr>'
        )
    return "".join(lines) + "</table>"


def _efficiency_table(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [
        "<table><tr><th>encoder</th><th>task</th><th>mode</th><th>metric</th><th>reference</th>"
        "<th>reference score</th><th>labels needed</th><th>score there</th><th>score at 100%</th></tr>"
    ]
    for r in rows:
        needed = "not reached" if math.isnan(r["fraction_needed"]) else f"{r['fraction_needed']:.0%}"
        texts = "".join(
            f'<td class="text">{html.escape(str(r[k]))}</td>'
            for k in ("encoder", "task", "mode", "metric", "reference")
        )
        lines.append(
            f"<tr>{texts}<td>{_number(r['reference_score'])}</td><td>{needed}</td>"
            f"<td>{_number(r['score_at_fraction_needed'])}</td><td>{_number(r['full_data_score'])}</td></tr>"
        )
    return "".join(lines) + "</table>"


def _mean_ci(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return ""
    half = (row["ci95_high"] - row["ci95_low"]) / 2
    spread = "" if math.isnan(half) else f" &plusmn; {half:.3f}"
    return f"{_number(row['mean'])}{spread} <small>(n={row['n_train']:.0f})</small>"


def _number(value: float) -> str:
    return "&ndash;" if math.isnan(value) else f"{value:.3f}"
