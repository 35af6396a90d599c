"""Shared fixtures: a real multi-task database from packaged images, and small configs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# Tests run on 2 cores next to worker processes; one intra-op thread keeps timings steady and
# makes CPU results bit-for-bit repeatable across processes.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The preprocessing cache goes to a temporary folder, never the user's ~/.cache (commands
    run as subprocesses inherit the variable)."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if previous is None:
        del os.environ["XDG_CACHE_HOME"]
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real images (stardist nuclei, scikit-image fundus/IHC/phase, H&E): returns tasks.yaml."""
    from medfoundry.demo import build_demo_database

    return build_demo_database(tmp_path_factory.mktemp("demo_db"), parts=["microscopy"], crops_per_class=16)


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
