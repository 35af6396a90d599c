"""A study's cells, and the store that makes a study resumable.

A *cell* is one (encoder, task, mode, fraction, seed) run, or one (encoder, task, mode,
training center, seed) run of a cross-center study. Each finished cell is written atomically
to ``cells/<id>.json`` with its result rows and a digest of everything it depends on (encoder
weights, task data, the settings of its mode). A cell counts as done when its file exists
with the same digest, so a killed study continues where it stopped, a study with a new
fraction or encoder runs only the new cells, and changed weights or data run their cells again.
``results.csv`` is always rebuilt from the cell files of the current plan.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from medfoundry.evaluation.study_data import ALL

__all__ = ["RESULT_COLUMNS", "Cell", "CellStore", "read_results", "result_row", "write_csv"]

RESULT_COLUMNS = (
    "encoder",
    "task",
    "mode",
    "fraction",
    "seed",
    "n_train",
    "train_center",
    "test_center",
    "metric",
    "value",
)
"""Columns of the tidy ``results.csv``: one row per metric of one test set of one cell."""


@dataclass(frozen=True)
class Cell:
    """One unit of work of a study.

    Attributes:
        encoder: Encoder name.
        task: Task name.
        mode: ``linear``, ``knn``, ``finetune`` or ``frozen-decoder``.
        fraction: Share of the training labels used.
        seed: Repetition (subset, initialisation, data order).
        train_center: Center group trained on, or ``all``.
    """

    encoder: str
    task: str
    mode: str
    fraction: float
    seed: int
    train_center: str = ALL

    @property
    def id(self) -> str:
        """A file-name-safe id, unique per cell."""
        text = json.dumps(asdict(self), sort_keys=True)
        return f"{self.encoder}-{self.task}-{self.mode}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"

    def __str__(self) -> str:
        where = f" on {self.train_center}" if self.train_center != ALL else ""
        return f"{self.encoder} / {self.task} / {self.mode} / {self.fraction:g} / seed {self.seed}{where}"


def result_row(cell: Cell, n_train: int, test_center: str, metric: str, value: float) -> dict[str, Any]:
    """One row of ``results.csv``."""
    return {
        "encoder": cell.encoder,
        "task": cell.task,
        "mode": cell.mode,
        "fraction": cell.fraction,
        "seed": cell.seed,
        "n_train": n_train,
        "train_center": cell.train_center,
        "test_center": test_center,
        "metric": metric,
        "value": value,
    }


class CellStore:
    """The finished cells of a study folder (``cells/*.json``) and their result rows.

    Args:
        study_dir: The study folder.
        digests: Every cell of the current plan, in order, with the digest of its settings.
    """

    def __init__(self, study_dir: Path, digests: dict[Cell, str]) -> None:
        self.study_dir = Path(study_dir)
        self.folder = self.study_dir / "cells"
        self.digests = dict(digests)
        self._rows: dict[Cell, list[dict[str, Any]]] = {}
        for cell, digest in self.digests.items():
            path = self.folder / f"{cell.id}.json"
            if path.is_file():
                stored = json.loads(path.read_text())
                if stored["digest"] == digest:
                    self._rows[cell] = stored["rows"]

    def pending(self) -> list[Cell]:
        """Cells of the plan not finished with their current settings, in plan order."""
        return [cell for cell in self.digests if cell not in self._rows]

    def save(self, cell: Cell, rows: Sequence[dict[str, Any]]) -> None:
        """Record a finished cell atomically (a killed study never leaves half a cell)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{cell.id}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps({"cell": asdict(cell), "digest": self.digests[cell], "rows": list(rows)}))
        os.replace(tmp, path)
        self._rows[cell] = list(rows)

    def write_results(self) -> Path:
        """``results.csv``: the rows of every finished cell of the plan, in plan order."""
        rows = [row for cell in self.digests for row in self._rows.get(cell, [])]
        return write_csv(self.study_dir / "results.csv", rows, RESULT_COLUMNS)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    """Write ``rows`` as CSV with ``columns``, atomically; floats keep full precision."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    """Rows of a ``results.csv`` with numbers parsed (``value`` may be NaN)."""
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["fraction"] = float(row["fraction"])
        row["seed"] = int(row["seed"])
        row["n_train"] = int(row["n_train"])
        row["value"] = float(row["value"]) if row["value"] not in ("", "nan") else math.nan
    return rows
