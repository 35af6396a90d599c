"""``medfoundry pretrain`` reads the corpus's tasks.yaml as it is, every task type included."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medfoundry.corpus import CorpusBuild
from medfoundry.recipes import pretrain
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.metrics_log import read_metrics
from tests.conftest import tiny_config

pytestmark = pytest.mark.integration


def test_pretraining_runs_on_every_task_of_the_corpus(small_corpus: CorpusBuild, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", str(small_corpus.tasks), **{"training.max_steps": 2})
    path = tmp_path / "corpus_run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    config = load_pretrain_config(path)
    assert {spec.type for spec in config.tasks} == {
        "classification",
        "segmentation",
        "detection",
        "masked_image",
    }
    run_dir = pretrain.run(config)
    rows = read_metrics(run_dir / "metrics.jsonl")
    trained = {
        key.split("/")[1] for row in rows if row["kind"] == "train" for key in row if key.startswith("loss/")
    }
    assert trained == {spec.name for spec in config.tasks}
