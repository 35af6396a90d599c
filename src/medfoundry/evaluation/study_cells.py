"""A study's cells, and the store that makes a study resumable and shareable between workers.

A *cell* is one (encoder, task, mode, fraction, seed) run, one (encoder, task, mode, k shots,
episode) run, or one (encoder, task, mode, training center, seed) run of a cross-center study.
Each finished cell is written atomically to ``cells/<id>.json`` with its result rows and a
digest of everything it depends on (encoder weights, task data, the settings of its mode), and
its per-item test results to ``predictions/<id>.npz`` (``evaluation.predictions``). A cell
counts as done when its file exists with the same digest, so a killed study continues where it
stopped, a study with a new fraction or encoder runs only the new cells, and changed weights or
data run their cells again. The store reads the folder, not its memory, so several workers (on
one machine or several) can share it. ``results.csv`` is always rebuilt from the cell files of
the current plan, in plan order, whoever ran them.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from medfoundry.evaluation.predictions import save_predictions
from medfoundry.evaluation.study_data import ALL
from medfoundry.safe_writes import write_file_atomically, write_file_with

__all__ = [
    "CELL_KEYS",
    "RESULT_COLUMNS",
    "Cell",
    "CellStore",
    "atomic_write_text",
    "read_results",
    "result_row",
    "write_csv",
]

CELL_KEYS = ("encoder", "task", "mode", "fraction", "shots", "seed", "train_center")
"""The columns of a result row that name its cell."""

RESULT_COLUMNS = (
    "encoder",
    "task",
    "mode",
    "fraction",
    "shots",
    "seed",
    "n_train",
    "train_center",
    "test_center",
    "metric",
    "value",
    "test_ci95_low",
    "test_ci95_high",
    "never_improved",
    "probe_levels",
)
"""Columns of the tidy ``results.csv``: one row per metric of one test set of one cell.
``fraction`` is empty for k-shot cells, ``shots`` for fraction cells; the test-set bootstrap
interval is filled in when the study's outputs are written; ``never_improved`` is 1 for a
trained cell whose validation metric never rose after its first evaluation; ``probe_levels``
names the pyramid levels a probe cell chose on validation (``probe.feature_level_choices``),
empty where nothing was chosen."""


@dataclass(frozen=True)
class Cell:
    """One unit of work of a study.

    Attributes:
        encoder: Encoder name.
        task: Task name.
        mode: ``linear``, ``knn``, ``finetune``, ``frozen-decoder`` or ``linear-decoder``.
        fraction: Share of the training labels used (``None`` for a k-shot cell).
        seed: Repetition (subset, initialisation, data order), or the k-shot episode.
        train_center: Center group trained on, or ``all``.
        shots: Training samples per class of a k-shot cell, else ``None``.
    """

    encoder: str
    task: str
    mode: str
    fraction: float | None
    seed: int
    train_center: str = ALL
    shots: int | None = None

    @property
    def id(self) -> str:
        """A file-name-safe id, unique per cell."""
        text = json.dumps(asdict(self), sort_keys=True)
        return f"{self.encoder}-{self.task}-{self.mode}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def __str__(self) -> str:
        where = f" on {self.train_center}" if self.train_center != ALL else ""
        if self.shots is not None:
            return f"{self.encoder} / {self.task} / {self.mode} / {self.shots}-shot / episode {self.seed}"
        return f"{self.encoder} / {self.task} / {self.mode} / {self.fraction:g} / seed {self.seed}{where}"


def result_row(
    cell: Cell,
    *,
    n_train: int,
    test_center: str,
    metric: str,
    value: float,
    never_improved: bool = False,
    probe_levels: str = "",
) -> dict[str, Any]:
    """One row of ``results.csv`` (its test-set interval is filled in later)."""
    return {
        "encoder": cell.encoder,
        "task": cell.task,
        "mode": cell.mode,
        "fraction": cell.fraction,
        "shots": cell.shots,
        "seed": cell.seed,
        "n_train": n_train,
        "train_center": cell.train_center,
        "test_center": test_center,
        "metric": metric,
        "value": value,
        "test_ci95_low": math.nan,
        "test_ci95_high": math.nan,
        "never_improved": int(never_improved),
        "probe_levels": probe_levels,
    }


class CellStore:
    """The finished cells of a study folder (``cells/*.json``), their rows and per-item results.

    Args:
        study_dir: The study folder.
        digests: Every cell of the current plan, in order, with the digest of its settings.
    """

    def __init__(self, study_dir: Path, digests: dict[Cell, str]) -> None:
        self.study_dir = Path(study_dir)
        self.folder = self.study_dir / "cells"
        self.predictions = self.study_dir / "predictions"
        self.digests = dict(digests)
        self._rows: dict[Cell, list[dict[str, Any]]] = {}

    def is_done(self, cell: Cell) -> bool:
        """Whether ``cell`` is finished with its current settings (by any worker)."""
        if cell not in self._rows:
            path = self.folder / f"{cell.id}.json"
            try:
                stored = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                return False
            if stored.get("digest") != self.digests[cell]:
                return False
            self._rows[cell] = stored["rows"]
        return True

    def pending(self) -> list[Cell]:
        """Cells of the plan not finished with their current settings, in plan order."""
        return [cell for cell in self.digests if not self.is_done(cell)]

    def rows(self, cell: Cell) -> list[dict[str, Any]]:
        """The result rows of a finished cell."""
        if not self.is_done(cell):
            raise KeyError(f"cell {cell} is not finished")
        return self._rows[cell]

    def save(
        self,
        cell: Cell,
        rows: Sequence[dict[str, Any]],
        items: Mapping[str, Mapping[str, np.ndarray]],
    ) -> None:
        """Record a finished cell atomically: its per-item results, then its rows (so a cell file
        always has its predictions; a killed worker never leaves half a cell)."""
        save_predictions(self.predictions / f"{cell.id}.npz", items)
        worker = {"host": socket.gethostname(), "pid": os.getpid()}
        payload = {"cell": asdict(cell), "digest": self.digests[cell], "rows": list(rows), "worker": worker}
        atomic_write_text(self.folder / f"{cell.id}.json", json.dumps(payload))
        self._rows[cell] = list(rows)

    def write_results(self) -> Path:
        """``results.csv``: the rows of every finished cell of the plan, in plan order."""
        rows = [row for cell in self.digests if self.is_done(cell) for row in self._rows[cell]]
        return write_csv(self.study_dir / "results.csv", rows, RESULT_COLUMNS)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` under a name of this process, then rename it into place: readers (and other
    writers of the same file) only ever see a whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_file_atomically(path, text)


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` as CSV with ``columns``, atomically; floats keep full precision, ``None`` is empty."""

    def write(f: IO[bytes]) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        text.flush()
        text.detach()  # leave ``f`` open: write_file_with syncs and closes it

    return write_file_with(path, write)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` with numbers parsed (``value`` may be NaN; ``fraction`` and
    ``shots`` are ``None`` where empty)."""
    with Path(path).open(newline="") as f:
        rows: list[dict[str, Any]] = list(csv.DictReader(f))
    for row in rows:
        row["fraction"] = float(row["fraction"]) if row["fraction"] else None
        row["shots"] = int(row["shots"]) if row["shots"] else None
        row["seed"] = int(row["seed"])
        row["n_train"] = int(row["n_train"])
        row["never_improved"] = bool(int(row["never_improved"] or 0))
        row["probe_levels"] = row.get("probe_levels") or ""  # results.csv written before the column
        for key in ("value", "test_ci95_low", "test_ci95_high"):
            row[key] = _number(row[key])
    return rows


def _number(text: str) -> float:
    return float(text) if text not in ("", "nan") else math.nan
