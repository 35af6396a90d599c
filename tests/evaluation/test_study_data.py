"""A study's fixed splits: held-out test rows per center, center groups, segmentation options."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medfoundry.errors import ConfigError
from medfoundry.evaluation.study_data import load_task_data
from medfoundry.tasks import TaskSpec, build_task
from tests.evaluation.conftest import CENTERS, tasks_of


def _sites(sites_db: Path, drop_test: bool, tmp_path: Path) -> TaskSpec:
    (task,) = tasks_of(sites_db)
    if drop_test:  # the same rows, without a test split
        manifest = Path(task["source"]["path"])
        lines = manifest.read_text().splitlines()
        kept = [lines[0]] + [line for line in lines[1:] if ",test," not in line]
        (tmp_path / "sites.csv").write_text("\n".join(kept) + "\n")
        task["source"] = {"path": str(tmp_path / "sites.csv"), "root": str(manifest.parent)}
    return TaskSpec.model_validate(task)


def test_given_splits_are_kept_and_centers_found(sites_db: Path, tmp_path: Path) -> None:
    spec = _sites(sites_db, False, tmp_path)
    data = load_task_data(spec, build_task(spec), 0, 0.2, 0.2)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 60, "val": 15, "test": 15}
    assert data.held_out == 0 and set(data.centers) == set(CENTERS)
    assert len(data.center_records("test", "left")) == 5


def test_missing_test_split_is_held_out_per_center_and_stratified(sites_db: Path, tmp_path: Path) -> None:
    spec = _sites(sites_db, True, tmp_path)
    data = load_task_data(spec, build_task(spec), 0, 0.2, 0.25)
    assert data.held_out == len(data.splits["test"]) == 15 and len(data.splits["train"]) == 45
    assert Counter(r.center for r in data.splits["test"]) == {c: 5 for c in CENTERS}
    assert Counter(r.label for r in data.splits["test"]) == {c: 3 for c in range(5)}
    assert not {r.image for r in data.splits["test"]} & {r.image for r in data.splits["train"]}
    again = load_task_data(spec, build_task(spec), 0, 0.2, 0.25)
    assert [r.image for r in again.splits["test"]] == [r.image for r in data.splits["test"]]


def test_named_center_groups(sites_db: Path, tmp_path: Path) -> None:
    spec = _sites(sites_db, False, tmp_path)
    data = load_task_data(
        spec, build_task(spec), 0, 0.2, 0.2, {"west": ["left", "middle"], "east": ["right"]}
    )
    assert len(data.center_records("train", "west")) == 40
    with pytest.raises(ConfigError, match=r"centers: task 'sites' has no center\(s\) north"):
        load_task_data(spec, build_task(spec), 0, 0.2, 0.2, {"a": ["north"]})


def test_segmentation_ignore_index_option_is_honoured(tmp_path: Path) -> None:
    rows = ["image,mask,split"]
    for i, split in enumerate(["train", "train", "val", "test"]):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"i{i}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask[:2], mask[-1] = 1, 7  # 7: unlabelled pixels
        Image.fromarray(mask).save(tmp_path / f"m{i}.png")
        rows.append(f"i{i}.png,m{i}.png,{split}")
    (tmp_path / "seg.csv").write_text("\n".join(rows) + "\n")
    spec = TaskSpec.model_validate(
        yaml.safe_load(
            f"{{name: seg, type: segmentation, classes: [bg, fg], source: {{path: {tmp_path / 'seg.csv'}}}, "
            "options: {ignore_index: 7}}"
        )
    )
    data = load_task_data(spec, build_task(spec), 0, 0.2, 0.2)
    assert len(data.train_subset(0.5, seed=0)) == 1
