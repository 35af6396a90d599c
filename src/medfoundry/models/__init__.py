"""Shared encoder (any timm backbone), shared decoders, and the multi-task model."""

from __future__ import annotations

from medfoundry.models.build import build_multitask_model
from medfoundry.models.config import DetectionDecoderConfig, EncoderConfig, ModelConfig, PixelDecoderConfig
from medfoundry.models.encoder import Encoder, FeatureLevel, create_encoder, replace_batchnorm
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.models.pixel_decoder import UNetPixelDecoder
from medfoundry.models.simple_pyramid import SimplePyramid

__all__ = [
    "DetectionDecoderConfig",
    "Encoder",
    "EncoderConfig",
    "FeatureLevel",
    "ModelConfig",
    "MultiTaskModel",
    "PixelDecoderConfig",
    "SimplePyramid",
    "UNetPixelDecoder",
    "build_multitask_model",
    "create_encoder",
    "replace_batchnorm",
]
