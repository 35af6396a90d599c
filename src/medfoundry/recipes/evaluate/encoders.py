"""The encoders of an evaluation study: loaded at the study's input size (or a task's
``task_image_size``), and checked against the probe's pyramid levels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medfoundry.errors import ConfigError
from medfoundry.evaluation.pixel_encoder import DEFAULT_PIXELS_SIZE, PixelEncoder
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder, load_encoder, looks_like_path
from medfoundry.models.config import ModelConfig
from medfoundry.recipes.evaluate.config import StudyConfig, StudyEncoder
from medfoundry.released import is_released
from medfoundry.training.checkpoint import load_checkpoint_config

__all__ = ["Encoder", "check_levels", "load_study_encoders"]

Encoder = PretrainedEncoder | PixelEncoder


def load_study_encoders(
    cfg: StudyConfig, specs: dict[str, StudyEncoder], device: Any, size: int | None = None
) -> dict[str, Encoder]:
    """Every encoder at ``size`` (default: the study's input size); all problems reported together."""
    size = size or cfg.image_size or _first_checkpoint_size(cfg) or 224
    encoders: dict[str, Encoder] = {}
    problems = []
    for e in specs.values():
        try:
            if e.is_pixels:
                encoders[e.name] = PixelEncoder(size, e.pixels_size or DEFAULT_PIXELS_SIZE).to(device)
            else:
                encoders[e.name] = load_encoder(
                    e.source,
                    pretrained=e.pretrained,
                    image_size=size,
                    model_kwargs=e.model_kwargs,
                    device=device,
                )
        except ConfigError as error:
            problems += [f"encoders.{e.name}: {p}" for p in error.problems]
    if problems:
        raise ConfigError(problems)
    return encoders


def check_levels(cfg: StudyConfig, encoders: dict[str, Encoder]) -> None:
    """Every pooled level (of every candidate, when levels are chosen) must exist in every
    encoder with a pyramid."""
    pyramids = {n: e.num_levels for n, e in encoders.items() if isinstance(e, PretrainedEncoder)}
    problems = []
    choices = cfg.probe.feature_level_choices
    key, asked = (
        ("probe.feature_level_choices", sorted({v for c in choices for v in c}))
        if choices
        else ("probe.feature_levels", cfg.probe.feature_levels)
    )
    for level in asked:
        lacking = [name for name, levels in pyramids.items() if not -levels <= level < levels]
        if lacking:
            sizes = ", ".join(sorted({f"{pyramids[n]}" for n in lacking}))
            problems.append(
                f"{key}: {level} is not a level of encoder(s) {', '.join(lacking)} "
                f"({sizes} levels: 0 is the finest, -1 the deepest)"
            )
    if problems:
        raise ConfigError(problems)


def _first_checkpoint_size(cfg: StudyConfig) -> int | None:
    for e in cfg.encoders:
        if is_released(e.source) or (looks_like_path(e.source) and Path(e.source).is_dir()):
            return ModelConfig.model_validate(load_checkpoint_config(Path(e.source))["model"]).image_size
    return None
