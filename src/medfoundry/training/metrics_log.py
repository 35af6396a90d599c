"""Metrics to ``metrics.jsonl`` (one JSON object per line) and TensorBoard event files.

On resume, lines logged after the checkpoint's step are dropped (they will be logged again),
and TensorBoard is told to purge those steps, so both logs read as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medfoundry.safe_writes import open_for_append, write_file_atomically

__all__ = ["MetricsLog", "read_metrics"]


class MetricsLog:
    """Appends metric records; each has ``step``, ``kind`` (``train``, ``val``, ``transfer``) and values.

    Args:
        run_dir: Run folder; writes ``metrics.jsonl`` and ``tensorboard/`` there.
        resume_step: Step of the checkpoint a resumed run starts from, or ``None``.
        enable_tensorboard: Also write TensorBoard event files.
    """

    def __init__(
        self, run_dir: Path, resume_step: int | None = None, enable_tensorboard: bool = True
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            records = read_metrics(self.path)
            kept = [r for r in records if isinstance(r.get("step"), int) and r["step"] <= resume_step]
            write_file_atomically(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open_for_append(self.path)  # never through a symbolic link
        self._writer: Any = None
        if enable_tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step is not None else None
            self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)

    def log(self, step: int, kind: str, values: dict[str, float]) -> None:
        record = {"step": step, "kind": kind, **{k: _json_float(v) for k, v in values.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._writer.add_scalar(f"{kind}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _json_float(value: float) -> float | None:
    return value if not isinstance(value, float) or math.isfinite(value) else None
