"""The command line: bad input stops before training with one clear line, exit 2, nothing written."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from medfoundry.cli.main import app
from tests.conftest import tiny_config

runner = CliRunner()


def _pretrain(tmp_path: Path, cfg: dict[str, Any], *extra: str) -> tuple[int, str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["pretrain", str(path), *extra])
    return result.exit_code, result.output


def test_help_is_fast_and_does_not_import_torch() -> None:
    start = time.perf_counter()
    code = "import sys, medfoundry.cli.main as m; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"training.lrr": 1}, r"c.yaml: training.lrr: unknown key \(valid: strategy, epochs"),
        ({"model.encoder.name": "resnet181"}, r"unknown timm model 'resnet181'; did you mean 'resnet18'"),
        ({"training.precision": "fp8"}, r"training.precision: Input should be 'fp32', 'bf16' or 'fp16'"),
    ],
)
def test_bad_config_exits_2_and_writes_nothing(
    small_db: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    code, output = _pretrain(tmp_path, tiny_config(tmp_path / "run", str(small_db), **change))
    assert code == 2
    assert output.startswith("error: ") and len(output.strip().splitlines()) == 1
    assert re.search(message, output), output
    assert not (tmp_path / "run").exists()


def test_bad_data_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "img.png").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("image,label\nimg.png,horse\nmissing.png,cat\n")
    (tmp_path / "empty.csv").write_text("image,label\n")
    tasks = [
        {
            "name": "a",
            "type": "classification",
            "classes": ["cat", "dog"],
            "source": {"path": str(tmp_path / "labels.csv")},
        },
    ]
    code, output = _pretrain(tmp_path, tiny_config(tmp_path / "run", tasks))
    assert code == 2
    assert "labels.csv, row 2: label 'horse' is not a declared class (cat, dog)" in output
    assert "labels.csv, row 3: file not found" in output
    tasks[0]["source"]["path"] = str(tmp_path / "empty.csv")
    code, output = _pretrain(tmp_path, tiny_config(tmp_path / "run", tasks))
    assert code == 2 and "empty.csv: the manifest has no rows" in output
    assert not (tmp_path / "run").exists()


def test_existing_run_dir_is_not_overwritten(small_db: Path, tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    code, output = _pretrain(tmp_path, tiny_config(tmp_path / "run", str(small_db)))
    assert code == 2 and "already exists" in output and "--resume" in output


def test_missing_config_file() -> None:
    result = runner.invoke(app, ["pretrain", "nowhere.yaml"])
    assert result.exit_code == 2 and "nowhere.yaml: config file not found" in result.output


def test_ls_lists_task_types() -> None:
    result = runner.invoke(app, ["ls"])
    assert result.exit_code == 0
    assert "classification, detection, masked_image, multilabel, segmentation" in result.output


@pytest.mark.parametrize(
    ("command", "device", "message"),
    [
        ("embed", "tpu", r"^error: --device: unknown device 'tpu' \(use auto, cpu, cuda or cuda:N\)$"),
        ("predict", "tpu", r"^error: --device: unknown device 'tpu'"),
    ],
)
def test_device_errors_name_the_option_the_user_set(
    small_db: Path, tmp_path: Path, command: str, device: str, message: str
) -> None:
    """``--device`` is a command-line option of embed and predict, not a config key."""
    images = small_db.parent / "images"
    argv = {
        "embed": ["embed", "resnet10t", str(small_db), "-o", str(tmp_path / "f.npz"), "--random"],
        "predict": ["predict", str(tmp_path / "no_checkpoint"), str(images), "-o", str(tmp_path / "out")],
    }[command]
    result = runner.invoke(app, [*argv, "--device", device])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert re.search(message, result.output.strip()), result.output
    assert not (tmp_path / "f.npz").exists() and not (tmp_path / "out").exists()
