"""The ``config.json`` of a checkpoint: how to rebuild the model, what it expects, where it came from."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medfoundry.recipes.pretrain_config import PretrainConfig

__all__ = ["checkpoint_config", "library_versions"]


def checkpoint_config(
    cfg: PretrainConfig,
    step: int,
    metrics: dict[str, Any] | None = None,
    sample_counts: dict[str, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Everything a reader needs, without medfoundry's code or pickle.

    Args:
        cfg: The run's config.
        step: Shared steps done.
        metrics: Validation results to record (best checkpoints).
        sample_counts: Task -> split -> samples (2D images, slices or frames) it was trained on
            (model cards report them).
    """
    model = cfg.model.model_dump(mode="json")
    return {
        "model": model,
        "tasks": [spec.model_dump(mode="json") for spec in cfg.tasks],
        "input": {
            "channels": 3,
            "dtype": "float32",
            "value_range": [0.0, 1.0],
            "image_size": cfg.model.image_size,
            "normalisation": "inside the model (the encoder's mean/std); feed [0, 1] images",
            "grayscale": "replicate to 3 channels",
        },
        "encoder": {
            "timm_name": cfg.model.encoder.name,
            "weights": "medfoundry multi-task pretraining",
            "embedding": "global average of the deepest feature map",
        },
        "training": {"step": step, "seed": cfg.seed, "strategy": cfg.training.strategy},
        "intended_use": (
            "Research: an image encoder for biomedical images to be probed or fine-tuned on "
            "downstream tasks. Not a medical device; not validated for clinical use."
        ),
        "metrics": metrics or {},
        "sample_counts": sample_counts or {},
        "versions": library_versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape the weights."""
    versions = {"python": platform.python_version()}
    for package in ("medfoundry", "torch", "torchvision", "timm", "safetensors"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "unknown"
    return versions
