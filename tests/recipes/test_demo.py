"""The built-in demo: `medfoundry demo --quick` end to end, and its clear errors."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.corpus import packages
from medfoundry.recipes import demo

runner = CliRunner()


@pytest.mark.integration
def test_quick_demo_builds_pretrains_evaluates_and_reports(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    study = tmp_path / "study"
    for name in ("results.csv", "summary.csv", "paired.csv", "efficiency.csv", "report.html"):
        assert (study / name).is_file(), name
    with (study / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["task"] for r in rows} == {"heldout_nuclei_count"}  # another specimen, never pretrained on
    assert {"pretrained", "random", "pixels"} <= {r["encoder"] for r in rows}
    assert {r["shots"] for r in rows} == {"", "5"}  # the fractions and 5-shot episodes
    pretrained_on = {
        t["name"]: t["type"]
        for t in yaml.safe_load((tmp_path / "pretrain" / "config.yaml").read_text())["tasks"]
    }
    # the corpus's labelled tasks of the quick sources, no held-out task, no masked-image task
    assert {"nuclei_seg", "nuclei_det", "imaging_technique", "dicom_modality"} <= set(pretrained_on)
    assert not any(name.startswith("heldout") for name in pretrained_on)
    assert "masked_image" not in pretrained_on.values()
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "heldout_nuclei_count (in-domain" in output and "report:" in output
    assert "vs random (paired 95% intervals" in output and "vs pixels (paired 95% intervals" in output
    saving = "pretrained (linear) on heldout_nuclei_count: "
    assert saving in output and saving in (study / "report.html").read_text()


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
    monkeypatch.setattr(demo.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 5, 5))
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "the demo needs about 800 MB free" in result.output
    assert not (tmp_path / "out").exists()
