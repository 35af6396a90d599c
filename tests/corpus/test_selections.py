"""Named selections are the corpus built from fewer sources, by the same code: the small one
(``medfoundry demo-data``, the tests' ``small_db``) adds test splits that pretraining never sees."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from medfoundry.corpus import TASKS
from medfoundry.corpus.selections import build_selection
from medfoundry.errors import ConfigError


def _rows(root: Path, task: str) -> list[dict[str, str]]:
    with (root / f"{task}.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_the_small_selection_has_the_corpus_tasks_with_test_splits(small_db: Path) -> None:
    root = small_db.parent
    listed = yaml.safe_load(small_db.read_text())["tasks"]
    assert [t["name"] for t in listed] == ["nuclei_seg", "nuclei_det", "imaging_technique"]
    for task in listed:  # the corpus's names, types and classes
        definition = TASKS[task["name"]]
        assert task["type"] == definition.type and task.get("classes", []) == list(definition.classes)
        rows = _rows(root, task["name"])
        assert {r["split"] for r in rows} == {"train", "val", "test"}, task["name"]
        splits = defaultdict(set)
        for row in rows:
            splits[row["group"]].add(row["split"])
        assert all(len(s) == 1 for s in splits.values()), "a group straddles splits"
    technique = _rows(root, "imaging_technique")
    trained = {r["label"] for r in technique if r["split"] == "train"}
    assert trained == {r["label"] for r in technique}  # every class is trained on


def test_pretraining_never_sees_a_test_or_heldout_image(small_db: Path) -> None:
    root = small_db.parent
    pretraining = {r["image"] for r in _rows(root, "all_images")}
    listed = yaml.safe_load((root / "tasks.yaml").read_text())["tasks"]
    assert "all_images" in [t["name"] for t in listed]
    tested = {
        r["image"]
        for t in ("nuclei_seg", "nuclei_det", "imaging_technique")
        for r in _rows(root, t)
        if r["split"] == "test"
    }
    heldout = {r["image"] for r in _rows(root, "heldout_nuclei_count")}
    assert tested and heldout
    assert not pretraining & tested and not pretraining & heldout
    assert {r["split"] for r in _rows(root, "heldout_nuclei_count")} == {"train", "val", "test"}


def test_an_unknown_selection_or_a_source_outside_it_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown corpus selection 'tiny' \\(known: small, quick\\)"):
        build_selection(tmp_path / "a", "tiny")
    with pytest.raises(ConfigError, match="source\\(s\\) dipy are not in the selection 'small'"):
        build_selection(tmp_path / "b", "small", sources=("stardist", "dipy"))
    assert list(tmp_path.iterdir()) == []
