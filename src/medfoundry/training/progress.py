"""Progress of long jobs: a rich bar on a terminal, plain lines everywhere else.

A rich bar draws nothing useful into a log file, a pipe, ``nohup`` or CI. Without a terminal,
``ProgressLines`` logs one plain line at least every ``interval_s`` (30 s), from a background
thread, so a line appears even while one step or study cell runs for minutes:
``evaluate: 12/128 cells (9%), 0.21 cells/s, eta 9 min 12 s; pretrained / modality / linear``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from rich import get_console
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from medfoundry.heartbeat import Heartbeat

__all__ = ["PLAIN_INTERVAL_S", "CountProgress", "ProgressLines", "TrainingProgress", "format_duration"]

log = logging.getLogger("medfoundry.progress")

PLAIN_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    """``"2 h 5 min"``, ``"3 min 20 s"``, ``"45 s"``.

    Examples:
        >>> format_duration(7512), format_duration(200), format_duration(4.2)
        ('2 h 5 min', '3 min 20 s', '4 s')
    """
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds} s"


class ProgressLines:
    """Plain progress lines: done / total, rate, ETA, and a status, at least every ``interval_s``.

    Args:
        label: What runs (``pretrain``, ``evaluate``).
        total: Units of the whole job.
        unit: Name of a unit (``steps``, ``cells``).
        done: Units done before this run started (a resumed job; not counted in the rate).
        interval_s: Longest time between two lines (default ``PLAIN_INTERVAL_S``, 30 s).
        emit: Where lines go; default: the ``medfoundry.progress`` logger at INFO.
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str,
        done: int = 0,
        interval_s: float | None = None,
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = self._start_done = done
        self.status = ""
        self.interval_s = interval_s if interval_s is not None else PLAIN_INTERVAL_S
        self._emit = emit or log.info
        self._started = time.monotonic()
        self._heartbeat = Heartbeat(
            self.interval_s, lambda: self._emit(self.line()), name=f"{label}-progress"
        )

    def __enter__(self) -> ProgressLines:
        self._started = time.monotonic()
        self._heartbeat.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._heartbeat.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self._emit(self.line())

    def update(self, done: int, status: str = "") -> None:
        self.done, self.status = done, status

    def line(self) -> str:
        """The current progress as one line."""
        elapsed = time.monotonic() - self._started
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        text = f"{self.label}: {self.done}/{self.total} {self.unit}{share}"
        progressed = self.done - self._start_done
        if progressed > 0 and elapsed > 0:
            rate = progressed / elapsed
            text += f", {rate:.3g} {self.unit}/s, eta {format_duration((self.total - self.done) / rate)}"
        else:
            text += f", {format_duration(elapsed)} so far"
        return f"{text}; {self.status}" if self.status else text


class CountProgress:
    """Progress over units of work (a study's cells): a rich bar with the current unit's name on
    a terminal, ``ProgressLines`` elsewhere, nothing when disabled.

    Args:
        label: What runs.
        total: Units of the whole job.
        unit: Name of a unit.
        done: Units done before this run.
        enabled: Show anything at all.
        console: Where the bar goes (default: rich's console).
        columns: The bar's columns (default: rich's, the count and the status).
    """

    def __init__(
        self,
        label: str,
        total: int,
        *,
        unit: str,
        done: int = 0,
        enabled: bool = True,
        console: Console | None = None,
        columns: Sequence[ProgressColumn | str] | None = None,
    ) -> None:
        self.console = console or get_console()
        self._lines = (
            ProgressLines(label, total, unit=unit, done=done)
            if enabled and not self.console.is_terminal
            else None
        )
        if columns is None:
            columns = (
                *Progress.get_default_columns(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
            )
        self._progress = Progress(
            *columns,
            console=self.console,
            disable=not enabled or self._lines is not None,
        )
        self._bar = self._progress.add_task(label, total=total, completed=done, status="")

    def __enter__(self) -> CountProgress:
        self._progress.start()
        if self._lines is not None:
            self._lines.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._lines is not None:
            self._lines.__exit__(exc_type, exc, tb)
        self._progress.stop()

    def update(self, done: int, status: str = "") -> None:
        """Units done so far (by anyone) and what runs now."""
        self._progress.update(self._bar, completed=done, status=status)
        if self._lines is not None:
            self._lines.update(done, status)


class TrainingProgress:
    """Progress over shared steps with a one-line status (per-task loss, images/s): a bar on a
    terminal, plain lines elsewhere (``CountProgress``), nothing when disabled.

    Args:
        total_steps: Steps of the whole run.
        start_step: Steps already done (resumed runs).
        enabled: Show anything at all.
        console: Where the bar goes (default: rich's console).
    """

    def __init__(
        self, total_steps: int, *, start_step: int = 0, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.enabled = enabled
        columns = (
            TextColumn("[bold]pretrain"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self._count = CountProgress(
            "pretrain",
            total_steps,
            unit="steps",
            done=start_step,
            enabled=enabled,
            console=console,
            columns=columns,
        )

    def __enter__(self) -> TrainingProgress:
        self._count.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._count.__exit__(exc_type, exc, tb)

    def update(self, step: int, losses: dict[str, float], images_per_s: float) -> None:
        status = "  ".join(f"{task} {loss:.3f}" for task, loss in losses.items())
        self._count.update(step, f"{status}  {images_per_s:.1f} img/s")

    def print(self, message: str) -> None:
        """A line above the bar (validation results, warnings)."""
        if self.enabled:
            self._count.console.print(message)
