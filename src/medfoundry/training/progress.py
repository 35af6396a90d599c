"""Terminal progress of a training run: steps, per-task loss, images/s and ETA (rich)."""

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

__all__ = ["TrainingProgress"]


class TrainingProgress:
    """A progress bar over shared steps with a one-line status; silent when disabled.

    Args:
        total_steps: Steps of the whole run.
        start_step: Steps already done (resumed runs).
        enabled: Show anything at all.
    """

    def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]pretrain"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            disable=not enabled,
        )
        self._bar = self._progress.add_task("steps", total=total_steps, completed=start_step, status="")

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, step: int, losses: dict[str, float], images_per_s: float) -> None:
        status = "  ".join(f"{task} {loss:.3f}" for task, loss in losses.items())
        self._progress.update(self._bar, completed=step, status=f"{status}  {images_per_s:.1f} img/s")

    def print(self, message: str) -> None:
        """A line above the bar (validation results, warnings)."""
        if self.enabled:
            self._progress.console.print(message)
