"""Rebuild a multi-task model from a checkpoint folder (weights + config.json, no pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medfoundry.models.build import build_multitask_model
from medfoundry.models.config import ModelConfig
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training.checkpoint import load_checkpoint_config, load_model_weights

__all__ = ["load_multitask_model"]


def load_multitask_model(
    path: Path, device: str | torch.device = "cpu"
) -> tuple[MultiTaskModel, dict[str, Any]]:
    """The model of a checkpoint, in eval mode, and its ``config.json``.

    Raises:
        ConfigError: ``path`` is not a medfoundry checkpoint, or its weights do not fit.
    """
    config = load_checkpoint_config(path)
    model_cfg = ModelConfig.model_validate(config["model"])
    # the weights come from the checkpoint: never fetch the backbone's original ones
    model_cfg = model_cfg.model_copy(
        update={"encoder": model_cfg.encoder.model_copy(update={"pretrained": False})}
    )
    tasks = {spec.name: build_task(spec) for spec in (TaskSpec.model_validate(t) for t in config["tasks"])}
    model = build_multitask_model(model_cfg, tasks)
    load_model_weights(path, model)
    return model.to(device).eval(), config
