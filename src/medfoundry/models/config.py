"""Typed configuration of the shared model. Field names and defaults equal the constructors'.

The builder supplies what comes from elsewhere: ``img_size`` from ``ModelConfig.image_size``,
decoder input channels and strides from the encoder's ``feature_info``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DetectionDecoderConfig",
    "EncoderConfig",
    "MaskedImageConfig",
    "ModelConfig",
    "PixelDecoderConfig",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Frozen):
    """Arguments of ``medfoundry.models.create_encoder`` (see there)."""

    name: str
    pretrained: bool = False
    model_kwargs: dict[str, Any] | None = None
    use_groupnorm: bool = True
    use_grad_checkpointing: bool = False


class PixelDecoderConfig(_Frozen):
    """Arguments of ``medfoundry.models.UNetPixelDecoder``."""

    channels: int = Field(default=64, ge=1)
    embed_dim: int = Field(default=32, ge=1)
    up_convs: int = Field(default=1, ge=1)


class DetectionDecoderConfig(_Frozen):
    """Arguments of ``medfoundry.models.FCOSDecoder``."""

    channels: int = Field(default=64, ge=1)
    num_convs: int = Field(default=2, ge=0)
    num_levels: int = Field(default=5, ge=1, le=5)


class MaskedImageConfig(_Frozen):
    """Arguments of ``medfoundry.models.create_masked_image_objective`` (see there).

    Defaults are MAE's ViT-B setting [He et al. 2022]: ratio 0.75, 16-pixel units, an 8-block,
    512-wide decoder, per-unit normalised targets. Use a smaller decoder for small encoders.
    """

    masking: Literal["auto", "drop_tokens", "mask_token"] = "auto"
    mask_ratio: float = Field(default=0.75, gt=0, lt=1)
    mask_unit_size: int = Field(default=16, ge=1)
    decoder_dim: int = Field(default=512, ge=4)
    decoder_depth: int = Field(default=8, ge=0)
    decoder_num_heads: int = Field(default=16, ge=1)
    norm_pix_loss: bool = True


class ModelConfig(_Frozen):
    """The shared model and its input contract.

    Args:
        image_size: Side of the square input, in pixels. Images are 3-channel float32 in
            [0, 1]; the encoder normalises them.
        encoder: The backbone.
        pixel_decoder: Shared decoder of the segmentation tasks (built only when there is one).
        detection_decoder: Shared decoder of the detection tasks (built only when there is one).
        masked_image: Shared objective of the masked-image tasks (built only when there is one).
    """

    image_size: int = Field(default=224, ge=16)
    encoder: EncoderConfig
    pixel_decoder: PixelDecoderConfig = Field(default_factory=PixelDecoderConfig)
    detection_decoder: DetectionDecoderConfig = Field(default_factory=DetectionDecoderConfig)
    masked_image: MaskedImageConfig = Field(default_factory=MaskedImageConfig)
