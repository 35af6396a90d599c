"""Fixtures of the evaluation tests: a tiny pretrained checkpoint, and a task with centers.

The center task (``sites``) is built from the same real packaged images as the small corpus
(fundus, immunohistochemistry, phase contrast, H&E, fluorescence; see ``tests.packaged``).
Its *centers* are honest stand-ins for acquisition sites: ``left``, ``middle`` and ``right``
say which third of each source image's width a crop was cut from, so each center sees other
tissue (or retina) than the others, as two hospitals see other patients. The label is the
imaging technique; every center has train, val and test crops of every class.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from medfoundry.recipes import pretrain
from medfoundry.recipes.pretrain.config import load_pretrain_config
from tests.conftest import tiny_config
from tests.packaged import TECHNIQUES as MODALITY_SOURCES

CENTERS = ("left", "middle", "right")
SPLITS_PER_CENTER = ("train", "train", "train", "train", "val", "test")


@pytest.fixture(scope="session")
def checkpoint(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A medfoundry checkpoint of a few pretraining steps on the small corpus (resnet10t, 32 px)."""
    root = tmp_path_factory.mktemp("pretrained")
    (root / "c.yaml").write_text(
        yaml.safe_dump(tiny_config(root / "run", str(small_db), **{"training.max_steps": 3}))
    )
    return pretrain.run(load_pretrain_config(root / "c.yaml")) / "checkpoints" / "last"


@pytest.fixture(scope="session")
def sites_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tasks.yaml`` of the ``sites`` task: technique crops with a center column (module docstring)."""
    root = tmp_path_factory.mktemp("sites")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    crop = 40
    rows = []
    for label, load in MODALITY_SOURCES.items():
        source = load()
        height, width = source.shape[:2]
        margin = height // 7 if label == "fundus" else 0  # stay inside the fundus disc
        third = width // 3
        for c, center in enumerate(CENTERS):
            x_lo, x_hi = max(margin, c * third), min(width - margin, (c + 1) * third) - crop
            for i, split in enumerate(SPLITS_PER_CENTER):
                x, y = int(rng.integers(x_lo, x_hi)), int(rng.integers(margin, height - margin - crop))
                name = f"{label}_{center}_{i}.png"
                Image.fromarray(np.ascontiguousarray(source[y : y + crop, x : x + crop])).save(
                    root / "images" / name
                )
                rows.append({"image": f"images/{name}", "label": label, "split": split, "center": center})
    with (root / "sites.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    task = {
        "name": "sites",
        "type": "classification",
        "classes": list(MODALITY_SOURCES),
        "source": {"path": "sites.csv"},
    }
    (root / "tasks.yaml").write_text(yaml.safe_dump({"tasks": [task]}))
    return root / "tasks.yaml"


def tasks_of(*databases: Path) -> list[dict[str, Any]]:
    """The task specs of several ``tasks.yaml`` files, with absolute source paths."""
    tasks = []
    for database in databases:
        for task in yaml.safe_load(database.read_text())["tasks"]:
            task["source"]["path"] = str(database.parent / task["source"]["path"])
            tasks.append(task)
    return tasks


def study_config(
    study_dir: Path, tasks: list[dict[str, Any]], checkpoint: Path, **overrides: Any
) -> dict[str, Any]:
    """A pretrained-versus-random study small enough for seconds on a CPU."""
    cfg: dict[str, Any] = {
        "study_dir": str(study_dir),
        "tasks": tasks,
        "image_size": 32,
        "encoders": [
            {"name": "pretrained", "source": str(checkpoint)},
            {"name": "random", "source": str(checkpoint), "pretrained": False},
        ],
        "fractions": [0.25, 1.0],
        "seeds": 2,
        "probe": {"c_values": [0.01, 1.0], "k": 5},
        "finetune": {
            "max_steps": 2,
            "eval_every_steps": 2,
            "batch_size": 8,
            "pixel_decoder": {"channels": 16, "embed_dim": 8},
            "detection_decoder": {"channels": 16, "num_convs": 1, "num_levels": 3},
        },
        "progress": False,
    }
    cfg.update(overrides)
    return cfg
