"""The small demo database (``medfoundry demo-data``) speaks the corpus's language: its tasks have
the corpus's names, types and classes, and its labels come from the same rules, so the same
nuclei tile gets the same pixels, mask and boxes in both."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from medfoundry.corpus import TASKS, CorpusBuild, CorpusSettings
from medfoundry.demo import build_demo_database
from tests.corpus.conftest import read_rows


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _check_against_the_corpus(hybrid_tasks: Path) -> set[str]:
    """Every task of a demo database's ``hybrid_tasks.yaml`` is a corpus task with its type and
    classes (a subset, in the corpus's order); returns the task names."""
    listed = yaml.safe_load(hybrid_tasks.read_text())["tasks"]
    for task in listed:
        corpus = TASKS[task["name"]]
        classes = task.get("classes", [])
        assert task["type"] == corpus.type, task["name"]
        assert classes == [c for c in corpus.classes if c in classes], task["name"]  # same names, same order
        if corpus.type == "classification":
            labels = {r["label"] for r in _rows(hybrid_tasks.parent / task["source"]["path"])}
            assert labels == set(classes), task["name"]
    return {t["name"] for t in listed}


@pytest.mark.slow  # builds the brain and DICOM parts (about 15 s)
def test_every_demo_task_is_a_corpus_task_with_its_type_and_classes(demo_db: Path, tmp_path: Path) -> None:
    microscopy = _check_against_the_corpus(demo_db.parent / "hybrid_tasks.yaml")
    assert microscopy == {"nuclei_seg", "nuclei_det", "imaging_technique", "all_images"}
    radiology = build_demo_database(tmp_path / "db", parts=["tomography", "radiology"], crops_per_dicom=2)
    names = _check_against_the_corpus(radiology.parent / "hybrid_tasks.yaml")
    assert names == {"brain_tissue", "volume_plane", "dicom_modality", "all_images"}
    every_image = {r["image"] for r in _rows(radiology.parent / "all_images.csv")}
    for task in ("brain_tissue", "volume_plane", "dicom_modality"):  # all_images: every pretraining image
        assert {r["image"] for r in _rows(radiology.parent / f"{task}.csv")} <= every_image


def test_the_same_nuclei_tile_is_labelled_alike_in_the_demo_database_and_the_corpus(
    small_corpus: CorpusBuild, tmp_path: Path
) -> None:
    settings = CorpusSettings()
    tasks = build_demo_database(
        tmp_path / "demo",
        parts=["microscopy"],
        crops_per_class=2,
        tile_size=settings.nuclei_tile_size,
        min_box_pixels=settings.min_box_pixels,
    )
    corpus_seg = {Path(r["image"]).stem: r for r in read_rows(small_corpus, "nuclei_seg")}
    corpus_det = {Path(r["image"]).stem: r for r in read_rows(small_corpus, "nuclei_det")}
    demo_det = {r["image"]: r for r in _rows(tasks.parent / "nuclei_det.csv")}
    demo_seg = _rows(tasks.parent / "nuclei_seg.csv")
    assert len(demo_seg) == len(corpus_seg) == 64
    boxes = 0
    for row in demo_seg:
        stem = Path(row["image"]).stem.replace("tile_", "nuclei_")
        seg, det = corpus_seg[stem], corpus_det[stem]
        assert np.array_equal(_png(tasks.parent / row["image"]), _png(small_corpus.root / seg["image"]))
        assert np.array_equal(_png(tasks.parent / row["mask"]), _png(small_corpus.root / seg["mask"]))
        demo_boxes = json.loads(demo_det[row["image"]]["boxes"])
        assert demo_boxes == json.loads(det["boxes"]), stem
        boxes += len(demo_boxes)
    assert boxes > 100  # stardist's 125 nuclei, some cut by tile borders
