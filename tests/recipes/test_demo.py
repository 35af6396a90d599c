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
from medfoundry.recipes import demo

runner = CliRunner()


@pytest.mark.integration
def test_quick_demo_builds_pretrains_evaluates_and_reports(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    study = tmp_path / "study"
    for name in ("results.csv", "summary.csv", "efficiency.csv", "report.html"):
        assert (study / name).is_file(), name
    with (study / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["task"] for r in rows} == {"nuclei_seg", "nuclei_det", "modality"}  # held out of pretraining
    assert {r["encoder"] for r in rows} == {"pretrained", "random", "pixels"}
    assert {r["task"] for r in rows if r["encoder"] == "pixels"} == {"modality"}  # probes only
    pretrained_on = {
        t["name"]: t["type"]
        for t in yaml.safe_load((tmp_path / "pretrain" / "config.yaml").read_text())["tasks"]
    }
    assert pretrained_on == {
        "brain_tissue": "segmentation",
        "brain_plane": "classification",
        "dicom_modality": "classification",
        "unlabelled": "masked_image",
    }
    assert (tmp_path / "pretrain" / "previews" / "unlabelled").is_dir()
    assert "report:" in result.output and "nuclei_seg (mean_dice" in result.output
    assert "nuclei_det (map_50" in result.output and "modality (balanced_accuracy, linear" in result.output


def test_missing_demo_packages_name_the_install_command(tmp_path: Path, monkeypatch: Any) -> None:
    real = demo.find_spec
    monkeypatch.setattr(demo, "find_spec", lambda name: None if name == "nilearn" else real(name))
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: the demo needs the packages nilearn, which are not installed: "
        "pip install 'medfoundry[demo]'  (or: make setup)"
    )
    assert not (tmp_path / "out").exists()


def test_too_little_disk_is_said_before_any_work(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(demo.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 5, 5))
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "the demo needs about 500 MB free" in result.output
    assert not (tmp_path / "out").exists()
