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


def test_every_public_name_resolves_and_importing_medfoundry_stays_cheap() -> None:
    assert all(callable(getattr(medfoundry, name)) for name in medfoundry.__all__ if name != "__version__")
    code = "import sys, medfoundry; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("type_name", "classes", "outputs", "targets"),
    [
        ("classification", ["a", "b"], torch.zeros(3, 2), torch.tensor([0, 1, 1])),
        ("multilabel", ["a", "b"], torch.zeros(3, 2), torch.tensor([[1.0, 0.0]] * 3)),
        ("segmentation", ["bg", "fg"], torch.zeros(1, 2, 4, 4), torch.ones(1, 4, 4, dtype=torch.long)),
    ],
)
def test_a_task_without_data_builds_its_head_and_loss(
    type_name: str, classes: list[str], outputs: torch.Tensor, targets: torch.Tensor
) -> None:
    task = medfoundry.create_task(type_name, classes=classes)
    assert task.spec.source is None and isinstance(task.build_head(8), torch.nn.Module)
    assert 0.5 < task.loss(outputs, targets).item() <= 1.0 + 1e-6  # about 1 at chance
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
