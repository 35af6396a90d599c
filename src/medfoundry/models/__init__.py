"""Shared encoder (any timm backbone), shared decoders, masked-image objectives, and the multi-task model."""

from __future__ import annotations

from medfoundry.models.build import build_multitask_model
from medfoundry.models.config import (
    DetectionDecoderConfig,
    EncoderConfig,
    MaskedImageConfig,
    ModelConfig,
    PixelDecoderConfig,
)
from medfoundry.models.encoder import Encoder, FeatureLevel, create_encoder, replace_batchnorm
from medfoundry.models.mae_vit import MaskedAutoencoderViT
from medfoundry.models.mask_token_mim import MaskTokenMIM
from medfoundry.models.masked_image import MaskedImageObjective, create_masked_image_objective
from medfoundry.models.masking import MaskedImageOutput
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.models.pixel_decoder import UNetPixelDecoder
from medfoundry.models.simple_pyramid import SimplePyramid

__all__ = [
    "DetectionDecoderConfig",
    "Encoder",
    "EncoderConfig",
    "FeatureLevel",
    "MaskTokenMIM",
    "MaskedAutoencoderViT",
    "MaskedImageConfig",
    "MaskedImageObjective",
    "MaskedImageOutput",
    "ModelConfig",
    "MultiTaskModel",
    "PixelDecoderConfig",
    "SimplePyramid",
    "UNetPixelDecoder",
    "build_multitask_model",
    "create_encoder",
    "create_masked_image_objective",
    "replace_batchnorm",
]
