"""One way to write: every temporary file has one name scheme, is cleaned once its process is
gone, never half-replaces a file and never writes through a link."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medfoundry.errors import ConfigError
from medfoundry.evaluation.predictions import load_predictions, save_predictions
from medfoundry.evaluation.study_cells import write_csv
from medfoundry.safe_writes import (
    process_alive,
    remove_orphans,
    temporary_name,
    write_file_atomically,
    write_file_with,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "medfoundry"


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(done.stdout)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = write_file_atomically(tmp_path / "results.csv", "old\n")

    def half(f: object) -> None:
        f.write(b"ne")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_with(path, half)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_no_write_goes_through_a_link_at_the_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    path = tmp_path / "cells" / "a.json"
    path.parent.mkdir()
    temporary_name(path).symlink_to(victim)  # planted where this process writes first
    write_file_atomically(path, "{}")
    assert victim.read_text() == "mine" and path.read_text() == "{}"
    assert not path.is_symlink()


def test_study_files_use_the_one_temporary_name_that_orphan_removal_cleans(tmp_path: Path) -> None:
    """A worker killed while writing a prediction leaves a temporary file that the next run removes
    (before, the study's writers used names of their own that nothing ever cleaned)."""
    seen: list[str] = []
    real = np.savez_compressed

    def spy(f: object, **arrays: object) -> None:
        seen.extend(p.name for p in tmp_path.iterdir())  # what exists while it is written
        real(f, **arrays)  # type: ignore[arg-type]

    np.savez_compressed = spy  # type: ignore[assignment]
    try:
        save_predictions(tmp_path / "cell.npz", {"test": {"y": np.arange(3)}})
    finally:
        np.savez_compressed = real  # type: ignore[assignment]
    assert seen == [temporary_name(tmp_path / "cell.npz").name]
    assert load_predictions(tmp_path / "cell.npz")["test"]["y"].tolist() == [0, 1, 2]
    dead = re.sub(r"-\d+$", f"-{_dead_pid()}", seen[0])
    (tmp_path / dead).write_bytes(b"half a file")
    live = temporary_name(tmp_path / "other.npz")
    live.write_bytes(b"being written")
    assert remove_orphans(tmp_path) == [tmp_path / dead]
    assert live.exists()


def test_csv_is_written_whole(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "summary.csv", [{"a": 1, "b": 0.5}, {"a": 2}], ["a", "b"])
    assert path.read_bytes() == b"a,b\r\n1,0.5\r\n2,\r\n"  # as csv writes it, whole
    with pytest.raises(ConfigError, match="summary.csv: cannot be written"):
        write_csv(tmp_path / "missing" / "summary.csv", [], ["a"])


def test_one_liveness_check() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(_dead_pid())
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        while not Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            pass  # exited, not yet reaped: a zombie is not alive
        assert not process_alive(zombie.pid)
    finally:
        zombie.wait()


def test_one_writer_one_temporary_scheme_one_liveness_check() -> None:
    """Files are replaced and processes probed only in safe_writes (grep says so)."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "safe_writes.py":
            continue
        text = path.read_text()
        for pattern in (r"os\.replace\(", r"os\.kill\(", r"\.tmp\b[\"'}]", r"uuid4\(\)\.hex\[:8\]\}\.tmp"):
            if re.search(pattern, text):
                offenders.append(f"{path.relative_to(SRC)}: {pattern}")
    assert offenders == []
