"""The public Python API: the names at the top level, tasks without data, task databases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import medfoundry
from medfoundry.errors import ConfigError
from medfoundry.tasks import TASK_TYPES


def test_every_public_name_resolves_and_importing_medfoundry_stays_cheap() -> None:
    assert all(callable(getattr(medfoundry, name)) for name in medfoundry.__all__ if name != "__version__")
    code = "import sys, medfoundry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("type_name", TASK_TYPES.names())
def test_every_registered_task_type_is_created_without_data(type_name: str) -> None:
    cls = TASK_TYPES.get(type_name)
    task = medfoundry.create_task(type_name, classes=[] if cls.target == "image" else ["a", "b"])
    assert type(task) is cls and task.spec.type == type_name and task.spec.source is None
    assert isinstance(task.build_head(8), torch.nn.Module)
    with pytest.raises(ConfigError, match=r"^task 'task': source: required to read its data"):
        task.spec.data_source()


def test_a_task_database_needs_a_source_for_every_task(tmp_path: Path) -> None:
    tasks = [
        {"name": "a", "type": "classification", "classes": ["x", "y"], "source": {"path": "a.csv"}},
        {"name": "b", "type": "classification", "classes": ["x", "y"]},
    ]
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"tasks": tasks}))
    with pytest.raises(ConfigError) as error:
        medfoundry.load_task_database(tmp_path / "tasks.yaml")
    (line,) = error.value.problems
    assert line == f"{tmp_path / 'tasks.yaml'}: tasks.1.source: required key is missing"
    with pytest.raises(ConfigError, match="unknown task type 'clasification'; did you mean 'classification'"):
        medfoundry.create_task("clasification", classes=["x", "y"])
