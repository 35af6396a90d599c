"""Every YAML config that ships with medfoundry validates and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medfoundry.models import build_multitask_model
from medfoundry.recipes.pretrain_config import load_pretrain_config
from medfoundry.tasks import build_task

ROOT = Path(__file__).resolve().parents[1]
# *study*.yaml are evaluation studies, validated in tests/evaluation/test_study_config.py
CONFIGS = sorted(
    p for p in [*ROOT.glob("configs/*.yaml"), *ROOT.glob("src/medfoundry/**/*.yaml")] if "study" not in p.name
)


def test_configs_are_found() -> None:
    assert {p.name for p in CONFIGS} >= {
        "tiny_cpu.yaml",
        "umedpt_swin_t.yaml",
        "demo_pretrain.yaml",
        "mae_vit_b16.yaml",
        "vismae_swin_t.yaml",
        "mae_tiny_cpu.yaml",
        "hybrid_swin_t.yaml",
        "hybrid_tiny_cpu.yaml",
    }


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_validates_and_builds(path: Path, demo_db: Path) -> None:
    assert path.read_text().startswith("#"), "a shipped YAML opens with the command that runs it"
    # the demo database has a task file for each kind of config (labelled, masked-image, hybrid)
    tasks_file = demo_db.parent / Path(yaml.safe_load(path.read_text())["tasks"]).name
    cfg = load_pretrain_config(path, [f"tasks={tasks_file}"])
    tasks = {spec.name: build_task(spec) for spec in cfg.tasks}
    model = build_multitask_model(cfg.model, tasks)
    assert set(model.heads) == set(tasks)
