"""Terminal progress of a study: a bar over cells with elapsed time, ETA and the current cell (rich)."""

from __future__ import annotations

from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["StudyProgress"]


class StudyProgress:
    """A progress bar over a study's cells; silent when disabled.

    Args:
        total: Cells in the study.
        done: Cells finished before this run (resumed studies).
        enabled: Show anything at all.
    """

    def __init__(self, total: int, done: int = 0, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]evaluate"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[cell]}"),
            disable=not enabled,
        )
        self._bar = self._progress.add_task("cells", total=total, completed=done, cell="")

    def __enter__(self) -> StudyProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def start(self, cell: str) -> None:
        """Show which cell runs now."""
        self._progress.update(self._bar, cell=cell)

    def advance(self) -> None:
        """One more cell finished."""
        self._progress.advance(self._bar)
