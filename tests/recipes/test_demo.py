"""The built-in demo's clear errors (the demo itself runs, from a fresh folder with its default
paths, in tests/test_readme_commands.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.corpus import packages
from medfoundry.recipes import demo

runner = CliRunner()


def test_missing_heldout_packages_name_the_install_command(tmp_path: Path, monkeypatch: Any) -> None:
    real = packages.importlib.util.find_spec
    monkeypatch.setattr(
        packages.importlib.util, "find_spec", lambda name: None if name == "pydeface" else real(name)
    )
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: the demo's held-out tasks need packages that are not installed: "
        "pip install --no-deps pydeface==2.1.0  (or: make setup)"
    )
    assert not (tmp_path / "out").exists()


def test_too_little_disk_is_said_before_any_work(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(
        demo.job.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 5, 5)
    )
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "the demo needs about 800 MB free" in result.output
    assert not (tmp_path / "out").exists()
