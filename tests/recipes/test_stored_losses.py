"""The first training losses of tiny runs on real images, against stored values: a 3-task run
(classification, segmentation, detection) and a hybrid run (a masked-image task beside a
labelled one).

A change in numerics (initialisation, augmentation, masking, sampling order, a loss, the step)
changes these numbers; the test makes that a visible, deliberate decision, as torchtune's recipe
tests do. The runs are deterministic: one intra-op thread (the repository's ``conftest.py``),
fixed seeds, the small corpus's fixed tiles.

To update the stored values after an intended change, run

    MEDFOUNDRY_UPDATE_STORED_LOSSES=1 python -m pytest tests/recipes/test_stored_losses.py

and commit ``stored_losses.json`` and ``stored_losses_hybrid.json`` with a message that says
why the numbers moved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from medfoundry.recipes import pretrain
from medfoundry.recipes.pretrain.config import load_pretrain_config
from tests.conftest import tiny_config
from tests.evaluation.conftest import tasks_of

STORED = Path(__file__).with_name("stored_losses.json")
STORED_HYBRID = Path(__file__).with_name("stored_losses_hybrid.json")
RTOL = 1e-4


def _train_losses(cfg: dict[str, Any], folder: Path) -> dict[str, dict[str, float]]:
    """Step -> ``loss/<task>`` -> value of the run ``cfg``."""
    (folder / "c.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = pretrain.run(load_pretrain_config(folder / "c.yaml"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {
        str(row["step"]): {k: v for k, v in row.items() if k.startswith("loss/")}
        for row in rows
        if row["kind"] == "train"
    }


def _equal_the_stored(losses: dict[str, dict[str, float]], stored_file: Path) -> None:
    """Compare with ``stored_file`` (or rewrite it, with MEDFOUNDRY_UPDATE_STORED_LOSSES=1)."""
    if os.environ.get("MEDFOUNDRY_UPDATE_STORED_LOSSES") == "1":
        stored_file.write_text(json.dumps(losses, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"stored losses rewritten: {stored_file}")
    stored = json.loads(stored_file.read_text())
    assert losses.keys() == stored.keys()
    for step, values in stored.items():
        assert losses[step].keys() == values.keys()
        for name, value in values.items():
            assert losses[step][name] == pytest.approx(value, rel=RTOL), f"step {step} {name}"


@pytest.mark.integration
def test_first_losses_of_a_tiny_three_task_run_equal_the_stored_ones(small_db: Path, tmp_path: Path) -> None:
    losses = _train_losses(
        tiny_config(tmp_path / "run", str(small_db), **{"training.max_steps": 3}), tmp_path
    )
    assert list(losses) == ["1", "2", "3"] and all(len(v) == 3 for v in losses.values())
    _equal_the_stored(losses, STORED)


@pytest.mark.integration
def test_first_losses_of_a_tiny_hybrid_run_equal_the_stored_ones(small_db: Path, tmp_path: Path) -> None:
    """A masked-image task (its masking drawn from the run's seed) beside a classification task."""
    modality = next(t for t in tasks_of(small_db) if t["name"] == "imaging_technique")
    tiles = {
        "name": "tiles",
        "type": "masked_image",
        "source": {"path": str(small_db.parent / "all_images.csv")},
    }
    cfg = tiny_config(tmp_path / "run", [modality, tiles], **{"training.max_steps": 3})
    cfg["model"]["masked_image"] = {"decoder_dim": 16, "decoder_depth": 1, "decoder_num_heads": 2}
    losses = _train_losses(cfg, tmp_path)
    assert list(losses) == ["1", "2", "3"]
    assert all(v.keys() == {"loss/imaging_technique", "loss/tiles"} for v in losses.values())
    _equal_the_stored(losses, STORED_HYBRID)
