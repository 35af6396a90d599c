"""Build the demo's multi-task database (PNG files, CSV manifests, task lists) from packaged images.

Its tasks have the corpus's names, classes and label rules (``medfoundry.corpus.labels``); it is
smaller, and its nuclei and technique tasks have test splits. Parts (each can be left out, e.g.
for fast tests):

- ``microscopy``: ``nuclei_seg``, ``nuclei_det``, ``imaging_technique``, and unlabelled H&E
  and IHC tiles (see ``microscopy``);
- ``tomography``: ``brain_tissue``, ``volume_plane`` (see ``tomography``);
- ``radiology``: ``dicom_modality`` (see ``radiology``).

``all_images`` (masked-image modelling) lists, as in the corpus, every image that pretraining
may see: the unlabelled tiles and the images of the brain and DICOM tasks.

Written task lists: ``tasks.yaml`` (every labelled task built), ``pretrain_tasks.yaml`` (the
brain and DICOM tasks and ``all_images``), ``eval_tasks.yaml`` (the nuclei and technique tasks,
held out of pretraining so that the demo can measure transfer to them), ``mim_tasks.yaml``
(``all_images`` alone) and ``hybrid_tasks.yaml`` (every labelled task plus ``all_images``).
docs/demo.md describes every image and label.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from medfoundry.corpus.files import write_csv
from medfoundry.corpus.labels.dicom_header import MODALITY_CLASSES
from medfoundry.corpus.labels.slice_position import PLANES
from medfoundry.corpus.labels.technique import TECHNIQUES
from medfoundry.corpus.tasks import MASKED_IMAGE_TASK
from medfoundry.demo.microscopy import write_imaging_technique, write_nuclei, write_unlabelled_tiles
from medfoundry.demo.packaged_images import DICOM_IMAGES
from medfoundry.demo.radiology import write_dicom_modality
from medfoundry.demo.tomography import write_brain
from medfoundry.errors import ConfigError
from medfoundry.output_folders import check_output_folder, write_marker
from medfoundry.safe_writes import write_folder_atomically

__all__ = ["PARTS", "build_demo_database", "write_demo_data"]

PARTS = ("microscopy", "tomography", "radiology")
COMMAND = "demo-data"
"""The command name its output folders are marked with (``output_folders``)."""
EVAL_TASKS = ("nuclei_seg", "nuclei_det", "imaging_technique")
DICOM_CLASSES = [c for c in MODALITY_CLASSES if c in DICOM_IMAGES]
"""The corpus's ``dicom_modality`` classes that the demo's DICOM images show, in its order."""


def build_demo_database(
    out_dir: Path,
    *,
    parts: Sequence[str] = PARTS,
    tile_size: int = 64,
    crop_size: int = 96,
    crops_per_class: int = 40,
    crops_per_dicom: int = 8,
    val_fraction: float = 0.25,
    min_box_pixels: int = 12,
    seed: int = 0,
) -> Path:
    """Write the database and return the path of its ``tasks.yaml``.

    Args:
        out_dir: Folder to write into (created).
        parts: Which parts to build (see the module docstring).
        tile_size: Side of the nuclei tiles, in pixels.
        crop_size: Side of the ``imaging_technique`` crops, in pixels.
        crops_per_class: ``imaging_technique`` crops per class (train, val and test together).
        crops_per_dicom: ``dicom_modality`` crops per DICOM image.
        val_fraction: Rightmost share of each microscopy image used for validation.
        min_box_pixels: Smallest nucleus fragment (pixels inside a tile) that gets a box.
        seed: Seeds the crop positions.

    Raises:
        ConfigError: an unknown part.
        DataError: a package holding the images is missing (names the install command).
    """
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ConfigError(f"unknown demo part(s) {', '.join(unknown)} (valid: {', '.join(PARTS)})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tasks: list[dict[str, Any]] = []
    unlabelled_tiles: list[dict[str, str]] = []
    if "microscopy" in parts:
        write_nuclei(out_dir, tile_size, val_fraction, min_box_pixels=min_box_pixels)
        write_imaging_technique(out_dir, crop_size, crops_per_class, val_fraction=val_fraction, rng=rng)
        unlabelled_tiles = write_unlabelled_tiles(out_dir, tile_size, val_fraction)
        tasks += [
            _task("nuclei_seg", "segmentation", ["background", "nucleus"], "fluorescence microscopy"),
            _task("nuclei_det", "detection", ["nucleus"], "fluorescence microscopy"),
            _task("imaging_technique", "classification", list(TECHNIQUES), "microscopy and photography"),
        ]
    if "tomography" in parts:
        write_brain(out_dir)
        tasks += [
            _task(
                "brain_tissue",
                "segmentation",
                ["background", "grey_matter", "white_matter"],
                "MR (T1 template)",
            ),
            _task("volume_plane", "classification", list(PLANES), "MR (T1 template)"),
        ]
    if "radiology" in parts:
        write_dicom_modality(out_dir, crops_per_dicom, rng)
        tasks.append(_task("dicom_modality", "classification", DICOM_CLASSES, "CR, DX, CT, MR, US"))
    pretraining = [t for t in tasks if t["name"] not in EVAL_TASKS]
    all_images = _write_all_images(out_dir, unlabelled_tiles, [t["name"] for t in pretraining])
    _write_tasks(out_dir / "pretrain_tasks.yaml", pretraining + all_images)
    _write_tasks(out_dir / "eval_tasks.yaml", [t for t in tasks if t["name"] in EVAL_TASKS])
    _write_tasks(out_dir / "mim_tasks.yaml", all_images)
    _write_tasks(out_dir / "hybrid_tasks.yaml", tasks + all_images)
    return _write_tasks(out_dir / "tasks.yaml", tasks)


def write_demo_data(out_dir: Path) -> Path:
    """``medfoundry demo-data``: the whole database into ``out_dir``, which must be new, empty or
    an earlier ``demo-data`` folder (``output_folders``); written whole or not at all (a failed or
    killed build leaves the folder as it was, a rerun leaves nothing stale). Returns its
    ``tasks.yaml``."""

    def write(folder: Path) -> None:
        build_demo_database(folder)
        write_marker(folder, COMMAND)

    check_output_folder(out_dir, COMMAND)
    write_folder_atomically(Path(out_dir), write)
    return Path(out_dir) / "tasks.yaml"


def _task(name: str, task_type: str, classes: list[str], modality: str) -> dict[str, Any]:
    return {
        "name": name,
        "type": task_type,
        "classes": classes,
        "modality": modality,
        "source": {"path": f"{name}.csv"},
    }


def _write_all_images(
    out_dir: Path, unlabelled_tiles: list[dict[str, str]], pretraining_tasks: list[str]
) -> list[dict[str, Any]]:
    """``all_images.csv``: every image pretraining may see, once; the task's entry (none without
    images)."""
    rows = {row["image"]: row for row in unlabelled_tiles}
    for name in pretraining_tasks:
        with (out_dir / f"{name}.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                rows.setdefault(row["image"], {"image": row["image"], "split": row["split"]})
    if not rows:
        return []
    write_csv(out_dir / f"{MASKED_IMAGE_TASK}.csv", list(rows.values()))
    task = {
        "name": MASKED_IMAGE_TASK,
        "type": "masked_image",
        "modality": "every image pretraining may see (unlabelled tiles, brain and DICOM tasks' images)",
        "source": {"path": f"{MASKED_IMAGE_TASK}.csv"},
    }
    return [task]


def _write_tasks(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
    return path
