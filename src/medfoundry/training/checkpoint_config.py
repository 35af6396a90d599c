"""The ``config.json`` of a checkpoint: how to rebuild the model, what it expects, where it came from."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict

from medfoundry.config_io import validate_config
from medfoundry.models.config import ModelConfig
from medfoundry.tasks.spec import TaskSpec

__all__ = ["check_checkpoint_config", "checkpoint_config", "library_versions"]


class _RebuildKeys(BaseModel):
    """The part of ``config.json`` that rebuilds the model; the rest is description."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: ModelConfig
    tasks: list[TaskSpec]


def checkpoint_config(
    model: ModelConfig,
    tasks: Sequence[TaskSpec],
    *,
    seed: int,
    strategy: str,
    step: int,
    metrics: dict[str, Any] | None = None,
    sample_counts: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Everything a reader needs, without medfoundry's code or pickle.

    Args:
        model: The model's config.
        tasks: The task specs (with their classes).
        seed: The run's seed.
        strategy: The training strategy (``memory_constant`` or ``joint``).
        step: Shared steps done.
        metrics: Validation results to record (best checkpoints).
        sample_counts: Task -> split -> samples (2D images, slices or frames) it was trained on
            (model cards report them).
    """
    return {
        "model": model.model_dump(mode="json"),
        "tasks": [spec.model_dump(mode="json") for spec in tasks],
        "input": {
            "channels": 3,
            "dtype": "float32",
            "value_range": [0.0, 1.0],
            "image_size": model.image_size,
            "normalisation": "inside the model (the encoder's mean/std); feed [0, 1] images",
            "grayscale": "replicate to 3 channels",
        },
        "encoder": {
            "timm_name": model.encoder.name,
            "weights": "medfoundry multi-task pretraining",
            "embedding": "global average of the deepest feature map",
        },
        "training": {"step": step, "seed": seed, "strategy": strategy},
        "intended_use": (
            "Research: an image encoder for biomedical images to be probed or fine-tuned on "
            "downstream tasks. Not a medical device; not validated for clinical use."
        ),
        "metrics": metrics or {},
        "sample_counts": sample_counts or {},
        "versions": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def check_checkpoint_config(config: dict[str, Any], source: str) -> None:
    """Check that a checkpoint's ``model`` and ``tasks`` rebuild a model: every key present and of
    the right type, and only allowed timm arguments (``models.config.TIMM_ARGUMENTS``), so that a
    crafted ``config.json`` cannot make timm open files or take other code paths.

    Raises:
        ConfigError: one line per problem, naming ``source`` and the key.
    """
    validate_config(_RebuildKeys, config, source)


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the weights."""
    versions = {"python": platform.python_version()}
    for package in ("medfoundry", "torch", "torchvision", "timm", "safetensors"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions
