"""Shared fixtures: a real multi-task database from packaged images (the corpus's small
selection), and small configs (thread and cache settings: the repository's ``conftest.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The microscopy of the corpus's small selection (real packaged images: stardist nuclei,
    scikit-image IHC / phase contrast / fundus, mahotas nuclei; napari's held-out nuclei):
    returns its ``labelled_tasks.yaml`` (``nuclei_seg``, ``nuclei_det``, ``imaging_technique``,
    with train / val / test splits). Siblings: ``tasks.yaml`` (plus ``all_images``) and
    ``heldout_tasks.yaml`` (``heldout_nuclei_count``, ``heldout_nuclei_det``)."""
    from medfoundry.corpus.selections import MICROSCOPY, build_selection

    folder = tmp_path_factory.mktemp("small_db") / "corpus"
    return build_selection(folder, "small", sources=MICROSCOPY).labelled_tasks


def tiny_config(run_dir: Path, tasks: Any, **overrides: Any) -> dict[str, Any]:
    """A pretraining config small enough for a few CPU steps in seconds."""
    cfg: dict[str, Any] = {
        "run_dir": str(run_dir),
        "seed": 0,
        "enable_progress": False,
        "tasks": tasks,
        "model": {
            "image_size": 32,
            "encoder": {"name": "resnet10t"},
            "pixel_decoder": {"channels": 16, "embed_dim": 8},
            "detection_decoder": {"channels": 16, "num_convs": 1, "num_levels": 3},
        },
        "data": {"batch_size": 8},
        "training": {
            "max_steps": 6,
            "optimizer": {"lr": 1e-3},
            "checkpoint_every_steps": 2,
            "log_every_steps": 1,
        },
    }
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg
