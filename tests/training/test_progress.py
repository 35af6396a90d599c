"""Progress without a terminal: plain lines at least every interval, with counts, rate and ETA."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from medfoundry.training import progress
from medfoundry.training.progress import CountProgress, ProgressLines, TrainingProgress, format_duration


def test_lines_come_on_time_even_while_nothing_moves() -> None:
    lines: list[str] = []
    with ProgressLines("evaluate", 8, unit="cells", done=2, interval_s=0.05, emit=lines.append) as p:
        time.sleep(0.18)  # a long cell: no update, yet lines keep coming
        p.update(4, "pretrained / imaging_technique / linear")
        time.sleep(0.12)
    assert len(lines) >= 4
    assert lines[0].startswith("evaluate: 2/8 cells (25%), ") and "so far" in lines[0]
    last = lines[-1]
    assert last.startswith("evaluate: 4/8 cells (50%), ") and " cells/s, eta " in last
    assert last.endswith("; pretrained / imaging_technique / linear")


def test_a_console_without_terminal_gets_lines_instead_of_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.05)
    lines: list[str] = []
    monkeypatch.setattr(progress.log, "info", lines.append)
    file = io.StringIO()
    with TrainingProgress(100, start_step=10, console=Console(file=file)) as bar:
        bar.update(40, {"organ": 0.5}, 123.4)
        time.sleep(0.12)
    assert (
        lines and lines[-1].startswith("pretrain: 40/100 steps (40%), ") and lines[-1].endswith("123.4 img/s")
    )
    assert "\r" not in file.getvalue() and "━" not in file.getvalue()  # no bar drawn into the log
    lines.clear()
    with CountProgress("evaluate", 3, unit="cells", console=Console(file=io.StringIO())) as count:
        count.update(1, "a cell")
    assert lines == ["evaluate: 1/3 cells (33%), " + lines[0].split(", ", 1)[1]] and "a cell" in lines[0]
    with CountProgress(
        "evaluate", 3, unit="cells", enabled=False, console=Console(file=io.StringIO())
    ) as silent:
        silent.update(2)
    assert len(lines) == 1


def test_durations_read_like_a_person_wrote_them() -> None:
    assert [format_duration(s) for s in (3, 75, 3725)] == ["3 s", "1 min 15 s", "1 h 2 min"]
