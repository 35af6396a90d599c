"""One rule for relative paths: written in a YAML file, relative to that file; given on the
command line (``--set``), relative to the current folder (the demo's own overrides broke on it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medfoundry.recipes.evaluate.config import load_study_config
from medfoundry.recipes.pretrain.config import load_pretrain_config

TASKS = {
    "tasks": [
        {"name": "organ", "type": "classification", "classes": ["a", "b"], "source": {"path": "organ.csv"}}
    ]
}
MODEL = {"image_size": 32, "encoder": {"name": "resnet10t"}}


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A config folder and another current folder, each with its own task database."""
    config_dir, cwd = tmp_path / "configs", tmp_path / "work"
    for folder in (config_dir, cwd / "mine"):
        folder.mkdir(parents=True)
        (folder / "tasks.yaml").write_text(yaml.safe_dump(TASKS))
    monkeypatch.chdir(cwd)
    return config_dir, cwd


def test_paths_in_a_pretraining_config_are_relative_to_the_file(folders: tuple[Path, Path]) -> None:
    config_dir, _ = folders
    config = config_dir / "pretrain.yaml"
    config.write_text(yaml.safe_dump({"run_dir": "../runs/x", "tasks": "tasks.yaml", "model": MODEL}))
    cfg = load_pretrain_config(config)
    assert cfg.run_dir == config_dir.parent / "runs" / "x"
    assert cfg.tasks[0].source.path == config_dir / "organ.csv"


def test_paths_given_with_set_are_relative_to_the_current_folder(folders: tuple[Path, Path]) -> None:
    config_dir, cwd = folders
    config = config_dir / "pretrain.yaml"
    config.write_text(yaml.safe_dump({"run_dir": "../runs/x", "tasks": "tasks.yaml", "model": MODEL}))
    cfg = load_pretrain_config(config, ["run_dir=runs/mine", "tasks=mine/tasks.yaml"])
    assert cfg.run_dir == cwd / "runs" / "mine"
    assert cfg.tasks[0].source.path == cwd / "mine" / "organ.csv"  # a file's paths: relative to it
    config.write_text(yaml.safe_dump({"run_dir": "../runs/x", "tasks": TASKS["tasks"], "model": MODEL}))
    cfg = load_pretrain_config(config, ["tasks.0.source.path=mine/other.csv"])
    assert cfg.tasks[0].source.path == cwd / "mine" / "other.csv"


def test_a_study_config_follows_the_same_rule(folders: tuple[Path, Path]) -> None:
    config_dir, cwd = folders
    study = {
        "study_dir": "../studies/s",
        "tasks": "tasks.yaml",
        "encoders": [
            {"name": "mine", "source": "../runs/x/checkpoints/last"},
            {"name": "r", "source": "resnet18"},
        ],
        "fractions": [1.0],
    }
    config = config_dir / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    cfg = load_study_config(config)
    assert cfg.study_dir == config_dir.parent / "studies" / "s"
    assert cfg.encoders[0].source == str(config_dir.parent / "runs" / "x" / "checkpoints" / "last")
    assert cfg.encoders[1].source == "resnet18"  # a timm name, not a path
    cfg = load_study_config(
        config, ["study_dir=out", "tasks=mine/tasks.yaml", "encoders.0.source=runs/y/checkpoints/best"]
    )
    assert cfg.study_dir == cwd / "out"
    assert cfg.tasks[0].source.path == cwd / "mine" / "organ.csv"
    assert cfg.encoders[0].source == str(cwd / "runs" / "y" / "checkpoints" / "best")
