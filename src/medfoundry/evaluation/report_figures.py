"""The report's figures: score curves over fractions or shots, and cross-center matrices.

``matplotlib.figure.Figure``, not pyplot: no global figure state and no GUI backend, so reports
render anywhere (and in several worker processes at once).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

__all__ = ["curve_figure", "embed_png", "heatmap_figure"]

LINE_STYLES = ("-", "--", ":", "-.")


def curve_figure(rows: Sequence[Mapping[str, Any]], title: str, metric: str, *, x_key: str) -> Figure:
    """Mean score versus ``x_key`` (``fraction`` or ``shots``) with its test-set bootstrap band:
    colour per encoder, line style per mode, chance level as a dotted grey line, the training
    size ``n`` under each tick."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    xs = sorted({r[x_key] for r in rows})
    encoders = sorted({r["encoder"] for r in rows})
    modes = sorted({r["mode"] for r in rows})
    for encoder, mode in sorted({(r["encoder"], r["mode"]) for r in rows}):
        line = sorted(
            (r for r in rows if (r["encoder"], r["mode"]) == (encoder, mode)), key=lambda r: r[x_key]
        )
        x = [r[x_key] for r in line]
        color = f"C{encoders.index(encoder) % 10}"
        style = LINE_STYLES[modes.index(mode) % len(LINE_STYLES)]
        ax.plot(x, [r["mean"] for r in line], style, marker="o", color=color, label=f"{encoder} ({mode})")
        low, high = [r["test_ci95_low"] for r in line], [r["test_ci95_high"] for r in line]
        ax.fill_between(x, low, high, color=color, alpha=0.12, linewidth=0)
    chance = [r["chance"] for r in rows if not math.isnan(r["chance"])]
    if chance:
        level = float(np.mean(chance))
        ax.axhline(level, color="0.5", linestyle=":", linewidth=1.2, label=f"chance ({level:.2f})")
    values = [r["mean"] for r in rows if not math.isnan(r["mean"])] + chance
    if values:
        ax.set_ylim(max(-0.02, min(values) - 0.1), min(1.02, max(values) + 0.1))
    ax.set_xscale("log")
    sizes = {x: np.mean([r["n_train"] for r in rows if r[x_key] == x]) for x in xs}
    names = [f"{100 * x:.1f}".rstrip("0").rstrip(".") + "%" for x in xs] if x_key == "fraction" else xs
    ax.set_xticks(xs, [f"{name}\nn={sizes[x]:.0f}" for name, x in zip(names, xs, strict=True)])
    ax.minorticks_off()
    ax.set_xlabel("share of training labels" if x_key == "fraction" else "training samples per class")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def heatmap_figure(panels: Mapping[str, Sequence[Mapping[str, Any]]], title: str, metric: str) -> Figure:
    """One train x test matrix per panel (encoder and mode), all on one colour scale."""
    trained = sorted({r["train_center"] for rows in panels.values() for r in rows})
    tested = sorted({r["test_center"] for rows in panels.values() for r in rows})
    matrices = {}
    for name, rows in panels.items():
        matrix = np.full((len(trained), len(tested)), np.nan)
        for r in rows:
            matrix[trained.index(r["train_center"]), tested.index(r["test_center"])] = r["mean"]
        matrices[name] = matrix
    values = np.concatenate([m[~np.isnan(m)] for m in matrices.values()])
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    width = 1.1 * len(tested) + 1.2
    fig = Figure(figsize=(width * len(panels) + 1.0, 0.9 * len(trained) + 1.8))
    axes = np.atleast_1d(fig.subplots(1, len(panels), squeeze=False)[0])
    image = None
    for ax, (name, matrix) in zip(axes, matrices.items(), strict=True):
        image = ax.imshow(matrix, cmap="viridis", vmin=low, vmax=high)
        middle = (low + high) / 2
        for (i, j), value in np.ndenumerate(matrix):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="w" if value < middle else "k")
        ax.set_xticks(range(len(tested)), tested)
        sizes = {r["train_center"]: r["n_train"] for r in panels[name]}
        ax.set_yticks(range(len(trained)), [f"{c} (n={sizes[c]:.0f})" if c in sizes else c for c in trained])
        ax.set_xlabel("tested on")
        ax.set_ylabel("trained on")
        ax.set_title(name, fontsize="medium")
    if image is not None:
        fig.colorbar(image, ax=list(axes), label=metric)
    fig.suptitle(title)
    return fig


def embed_png(fig: Figure) -> str:
    """An ``<img>`` tag with the figure as an inline PNG (the report stays one file)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
