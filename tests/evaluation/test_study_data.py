"""A study's data: fixed splits (held-out test rows per center, center groups, segmentation options),
fractions that count samples in grouped tasks, classes read from the data, unlabelled tasks skipped."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from medfoundry.errors import ConfigError
from medfoundry.evaluation.study_cells import read_results
from medfoundry.evaluation.study_data import load_study_task_data
from medfoundry.recipes import evaluate
from medfoundry.recipes.evaluate.config import StudyConfig
from medfoundry.tasks import TaskSpec, build_task
from tests.evaluation.conftest import CENTERS, study_config, tasks_of


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
    data = load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.2)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 60, "val": 15, "test": 15}
    assert data.held_out == 0 and set(data.centers) == set(CENTERS)
    assert len(data.center_records("test", "left")) == 5


def test_missing_test_split_is_held_out_per_center_and_stratified(sites_db: Path, tmp_path: Path) -> None:
    spec = _sites(sites_db, True, tmp_path)
    data = load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.25)
    assert data.held_out == len(data.splits["test"]) == 15 and len(data.splits["train"]) == 45
    assert Counter(r.center for r in data.splits["test"]) == {c: 5 for c in CENTERS}
    assert Counter(r.label for r in data.splits["test"]) == {c: 3 for c in range(5)}
    assert not {r.image for r in data.splits["test"]} & {r.image for r in data.splits["train"]}
    again = load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.25)
    assert [r.image for r in again.splits["test"]] == [r.image for r in data.splits["test"]]


def test_named_center_groups(sites_db: Path, tmp_path: Path) -> None:
    spec = _sites(sites_db, False, tmp_path)
    data = load_study_task_data(
        spec,
        build_task(spec),
        split_seed=0,
        val_fraction=0.2,
        test_fraction=0.2,
        centers={"west": ["left", "middle"], "east": ["right"]},
    )
    assert len(data.center_records("train", "west")) == 40
    with pytest.raises(ConfigError, match=r"centers: task 'sites' has no center\(s\) north"):
        load_study_task_data(
            spec,
            build_task(spec),
            split_seed=0,
            val_fraction=0.2,
            test_fraction=0.2,
            centers={"a": ["north"]},
        )


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
    data = load_study_task_data(spec, build_task(spec), split_seed=0, val_fraction=0.2, test_fraction=0.2)
    assert len(data.train_subset(0.5, seed=0)) == 1


def _grouped_technique(small_db: Path, tmp_path: Path) -> dict[str, Any]:
    """The small corpus's imaging_technique tiles with a group column: all training tiles of a class
    form one group (like 14 slabs of 1002 patches), as in the report that fractions collapsed to groups."""
    rows = list(csv.DictReader((small_db.parent / "imaging_technique.csv").open()))
    for row in rows:
        row["image"] = str(small_db.parent / row["image"])
        row["group"] = f"{row['label']}-{row['split']}"
    with (tmp_path / "grouped.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (task,) = [t for t in tasks_of(small_db) if t["name"] == "imaging_technique"]
    return {**task, "name": "grouped", "source": {"path": str(tmp_path / "grouped.csv")}}


@pytest.mark.integration
def test_fractions_of_a_grouped_task_count_samples_and_efficiency_uses_distinct_subsets(
    small_db: Path, checkpoint: Path, tmp_path: Path
) -> None:
    task = _grouped_technique(small_db, tmp_path)
    cfg = study_config(
        tmp_path / "study",
        [task],
        checkpoint,
        modes=["linear"],
        fractions=[0.1, 0.101, 0.25, 0.5, 1.0],  # 10% and 10.1% of 292 are both 29 samples
        seeds=[0, 1],
        baselines=["pixels"],
    )
    study = evaluate.run(StudyConfig.model_validate(cfg))
    rows = [r for r in read_results(study / "results.csv") if r["metric"] == "balanced_accuracy"]
    for encoder in ("pretrained", "random", "pixels"):
        for seed in (0, 1):
            n = {r["fraction"]: r["n_train"] for r in rows if (r["encoder"], r["seed"]) == (encoder, seed)}
            # whole groups would have given every fraction all 292 tiles (5 groups, one per class)
            assert n == {0.1: 29, 0.101: 29, 0.25: 73, 0.5: 146, 1.0: 292}
    efficiency = {r["encoder"]: r for r in read_results_csv(study / "efficiency.csv")}
    assert set(efficiency) == {"pretrained", "pixels"}  # random init is the reference
    for row in efficiency.values():
        assert row["same_subset_fractions"] == "0.1=0.101"
        assert row["fraction_needed"] != "0.1", "no saving read from the smaller name of one subset"
    report = (study / "report.html").read_text()
    assert "fractions 10%, 10.1% trained on the same subset (n = 29)" in report


def read_results_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.integration
def test_classes_are_read_from_the_data_and_a_masked_image_task_is_skipped(
    small_db: Path, checkpoint: Path, tmp_path: Path
) -> None:
    (modality,) = [t for t in tasks_of(small_db) if t["name"] == "imaging_technique"]
    unlabelled = {"name": "tiles", "type": "masked_image", "source": {"path": modality["source"]["path"]}}
    no_classes = {**modality, "classes": []}  # read from the manifest's labels, as every command does
    cfg = study_config(tmp_path / "study", [unlabelled, no_classes], checkpoint, modes=["knn"], baselines=[])
    study = evaluate.run(StudyConfig.model_validate(cfg))
    rows = read_results(study / "results.csv")
    assert {r["task"] for r in rows} == {"imaging_technique"}
    written = yaml.safe_load((study / "study.yaml").read_text())["tasks"]
    assert next(t for t in written if t["name"] == "imaging_technique")["classes"] == sorted(
        {"fundus", "immunohistochemistry", "phase_contrast", "h_and_e", "fluorescence"}
    )
    assert (
        "task &#x27;tiles&#x27; (masked_image) has no metrics to evaluate: skipped"
        in (study / "report.html").read_text()
    )
