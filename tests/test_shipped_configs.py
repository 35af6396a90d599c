"""Every YAML config that ships with medfoundry validates and builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medfoundry.models import build_multitask_model
from medfoundry.recipes.pretrain.config import load_pretrain_config
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
def test_config_validates_and_builds(path: Path, small_db: Path) -> None:
    assert path.read_text().startswith("#"), "a shipped YAML opens with the command that runs it"
    tasks = yaml.safe_load(path.read_text())["tasks"]
    # the small corpus has a task file for labelled and hybrid configs; masked-image configs list theirs;
    # a config that lists its tasks (a released encoder's recipe) is validated with them
    overrides = [] if isinstance(tasks, list) else [f"tasks={small_db.parent / Path(tasks).name}"]
    if (yaml.safe_load(path.read_text()).get("training") or {}).get("transfer_monitor"):
        # held-out tasks of the small corpus stand in for the corpus's
        monitor = "training.transfer_monitor"
        overrides += [
            f"{monitor}.tasks={small_db}",
            f"{monitor}.task_names=[imaging_technique]",
        ]
    cfg = load_pretrain_config(path, overrides)
    tasks = {spec.name: build_task(spec) for spec in cfg.tasks}
    model = build_multitask_model(cfg.model, tasks)
    assert set(model.heads) == set(tasks)


def test_released_recipe_pretrains_on_the_corpus_tasks_plus_two_views() -> None:
    """The released encoder's recipe lists its tasks inline: exactly the corpus's labelled
    pretraining tasks (names, types, classes, manifests) and one two-view task on every
    pretraining image, so that it cannot drift from the corpus it names."""
    from medfoundry.corpus.tasks import MASKED_IMAGE_TASK, TASKS

    path = ROOT / "configs" / "released_resnet18_views.yaml"
    listed = yaml.safe_load(path.read_text())["tasks"]
    labelled = {
        t["name"]: (t["type"], tuple(t["classes"]), Path(t["source"]["path"]).name)
        for t in listed
        if t["type"] != "two_view"
    }
    assert labelled == {
        d.name: (d.type, d.classes, f"{d.name}.csv")
        for d in TASKS.values()
        if not d.heldout and d.name != MASKED_IMAGE_TASK
    }
    (views,) = [t for t in listed if t["type"] == "two_view"]
    assert Path(views["source"]["path"]).name == f"{MASKED_IMAGE_TASK}.csv"
    assert all(t["source"]["path"].startswith("../runs/corpus/") for t in listed)
