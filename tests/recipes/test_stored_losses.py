"""The first training losses of a tiny 3-task run on real images, against stored values.

A change in numerics (initialisation, augmentation, sampling order, a loss, the step) changes
these numbers; the test makes that a visible, deliberate decision, as torchtune's recipe tests
do. The run is deterministic: one intra-op thread (the repository's ``conftest.py``), fixed seeds,
the demo database's fixed crops.

To update the stored values after an intended change, run

    MEDFOUNDRY_UPDATE_STORED_LOSSES=1 python -m pytest tests/recipes/test_stored_losses.py

and commit ``stored_losses.json`` with a message that says why the numbers moved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from medfoundry.recipes import pretrain_multitask
from medfoundry.recipes.pretrain_config import load_pretrain_config
from tests.conftest import tiny_config

STORED = Path(__file__).with_name("stored_losses.json")
RTOL = 1e-4


@pytest.mark.integration
def test_first_losses_of_a_tiny_three_task_run_equal_the_stored_ones(demo_db: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", str(demo_db), **{"training.max_steps": 3})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = pretrain_multitask.run(load_pretrain_config(tmp_path / "c.yaml"))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {
        str(row["step"]): {k: v for k, v in row.items() if k.startswith("loss/")}
        for row in rows
        if row["kind"] == "train"
    }
    assert list(losses) == ["1", "2", "3"] and all(len(v) == 3 for v in losses.values())
    if os.environ.get("MEDFOUNDRY_UPDATE_STORED_LOSSES") == "1":
        STORED.write_text(json.dumps(losses, indent=2, sort_keys=True) + "\n")
        pytest.skip(f"stored losses rewritten: {STORED}")
    stored = json.loads(STORED.read_text())
    assert losses.keys() == stored.keys()
    for step, values in stored.items():
        assert losses[step].keys() == values.keys()
        for name, value in values.items():
            assert losses[step][name] == pytest.approx(value, rel=RTOL), f"step {step} {name}"
