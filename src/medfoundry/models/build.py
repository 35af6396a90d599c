"""Build the multi-task model from its config and the tasks."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from medfoundry.models.config import ModelConfig
from medfoundry.models.encoder import create_encoder
from medfoundry.models.masked_image import create_masked_image_objective
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.models.pixel_decoder import UNetPixelDecoder
from medfoundry.tasks.task_type import FeatureKind, TaskType

__all__ = ["build_multitask_model"]


def build_multitask_model(cfg: ModelConfig, tasks: Mapping[str, TaskType]) -> MultiTaskModel:
    """Encoder, the shared decoders the tasks need, and one head per task.

    Args:
        cfg: Model configuration.
        tasks: Task name -> task; heads are built in this order.

    Returns:
        The model, in training mode, on the CPU.

    Raises:
        ConfigError: from ``create_encoder`` (unknown encoder, bad arguments) or
            ``create_masked_image_objective`` (no masking route, sizes that do not fit).
    """
    encoder = create_encoder(img_size=cfg.image_size, **cfg.encoder.model_dump())
    channels = [level.channels for level in encoder.feature_info]
    strides = [level.stride for level in encoder.feature_info]
    kinds: dict[str, FeatureKind] = {name: task.feature for name, task in tasks.items()}
    pixel_decoder = detection_decoder = masked_image = None
    if "pixel" in kinds.values():
        pixel_decoder = UNetPixelDecoder(channels, strides, **cfg.pixel_decoder.model_dump())
    if "pyramid" in kinds.values():
        from medfoundry.models.detection_decoder import FCOSDecoder

        detection_decoder = FCOSDecoder(channels, strides, **cfg.detection_decoder.model_dump())
    if "masked" in kinds.values():
        masked_image = create_masked_image_objective(
            encoder, image_size=cfg.image_size, **cfg.masked_image.model_dump()
        )
    widths = {
        "pooled": encoder.out_channels,
        "pixel": cfg.pixel_decoder.embed_dim,
        "pyramid": cfg.detection_decoder.channels,
        "masked": encoder.out_channels,  # masked-image heads add no layers
        "views": encoder.out_channels,  # two-view heads expand the pooled deepest map
    }
    heads: dict[str, nn.Module] = {
        name: task.build_head(widths[task.feature]) for name, task in tasks.items()
    }
    return MultiTaskModel(
        encoder,
        heads,
        head_features=kinds,
        pixel_decoder=pixel_decoder,
        detection_decoder=detection_decoder,
        masked_image=masked_image,
    )
