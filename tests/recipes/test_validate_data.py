"""``medfoundry validate-data``: a summary table per task, every problem listed, exit code 2."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.tasks import TASK_TYPES
from tests.conftest import tiny_config

runner = CliRunner()


def test_demo_database_summary(small_db: Path) -> None:
    result = runner.invoke(app, ["validate-data", str(small_db), "--set", "image_size=32"])
    assert result.exit_code == 0, result.output
    for text in (
        "nuclei_seg",
        "segmentation",
        "fluorescence",
        "64x64",
        "fundus",
        "immunohistochemistry",
        "boxes",
        "ok: 3 task(s), every sample decoded",
    ):
        assert text in result.output, text


def test_a_pretraining_config_is_accepted(small_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run", str(small_db))))
    result = runner.invoke(app, ["validate-data", str(path)])
    assert result.exit_code == 0 and "ok: 3 task(s)" in result.output
    assert not (tmp_path / "run").exists()


def test_problems_of_every_task_exit_2(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("image,label\nmissing.png,cat\n")
    (tmp_path / "b.csv").write_text("image\nx.png\n")
    tasks = [
        {"name": "a", "type": "classification", "classes": ["cat", "dog"], "source": {"path": "a.csv"}},
        {"name": "b", "type": "classification", "classes": ["cat", "dog"], "source": {"path": "b.csv"}},
        {"name": "c", "type": "segmentaton", "classes": ["x"], "source": {"path": "b.csv"}},
    ]
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    result = runner.invoke(app, ["validate-data", str(tmp_path / "tasks.yaml")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [
        f"error: task 'a': {tmp_path / 'a.csv'}, row 2: file not found: {tmp_path / 'missing.png'}",
        f"error: task 'b': {tmp_path / 'b.csv'}: missing column(s) label (found: image)",
        "error: task 'c': unknown task type 'segmentaton'; did you mean 'segmentation'? "
        f"(valid: {', '.join(TASK_TYPES.names())})",
    ]


def test_unknown_key_names_the_file_and_key(tmp_path: Path) -> None:
    tasks = [
        {
            "name": "a",
            "type": "classification",
            "source": {"type": "image_folder", "path": "x", "recursive": True},
        }
    ]
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump(tasks))
    result = runner.invoke(app, ["validate-data", str(tmp_path / "tasks.yaml")])
    assert result.exit_code == 2
    assert result.output.startswith(
        f"error: {tmp_path / 'tasks.yaml'}: tasks.0.source.recursive: unknown key (valid: type, path"
    )
