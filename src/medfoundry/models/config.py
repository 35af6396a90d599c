"""Typed configuration of the shared model. Field names and defaults equal the constructors'.

The builder supplies what comes from elsewhere: ``img_size`` from ``ModelConfig.image_size``,
decoder input channels and strides from the encoder's ``feature_info``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "TIMM_ARGUMENTS",
    "DetectionDecoderConfig",
    "EncoderConfig",
    "MaskedImageConfig",
    "ModelConfig",
    "PixelDecoderConfig",
    "TimmArguments",
]

TIMM_ARGUMENTS = frozenset(
    {
        # sizes and shapes
        "img_size", "patch_size", "window_size", "embed_dim", "depth", "depths", "dims", "layers",
        "num_heads", "head_dim", "mlp_ratio", "kernel_sizes", "channels", "stem_width", "stem_size",
        "cardinality", "base_width", "output_stride",
        # layer choices given by name (timm resolves names to its own layers)
        "norm_layer", "act_layer", "stem_type", "global_pool", "weight_init", "norm_eps",
        # switches
        "qkv_bias", "qk_norm", "class_token", "pos_embed", "no_embed_class", "reg_tokens",
        "num_reg_tokens", "pre_norm", "final_norm", "fc_norm", "dynamic_img_size", "dynamic_img_pad",
        "strict_img_size", "always_partition", "avg_down", "conv_mlp", "use_grn", "init_values",
        "ls_init_value", "use_abs_pos_emb", "use_rot_pos_emb", "use_fc_norm",
        # regularisation
        "drop_rate", "pos_drop_rate", "patch_drop_rate", "proj_drop_rate", "attn_drop_rate",
        "drop_path_rate", "drop_block_rate",
    }
)  # fmt: skip
"""``timm.create_model`` arguments a config (or a checkpoint's ``config.json``) may pass: the
architecture's shape, layer names and regularisation. Arguments that make timm open files
(``checkpoint_path``, ``pretrained_cfg``, ``cache_dir``) or take code objects are refused, so a
crafted config or checkpoint cannot make timm load something else."""

OVERLAY_KEYS = frozenset({"file", "mean", "std"})
"""Keys of ``pretrained_cfg_overlay``: start from exported weights (``file``, read only with
``pretrained: true``, through timm's weights-only loading) and their input normalisation."""

_Plain = bool | int | float | str | None


def _check_timm_arguments(kwargs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Refuse ``model_kwargs`` outside ``TIMM_ARGUMENTS`` and values that are not plain data."""
    for key, value in (kwargs or {}).items():
        if key == "pretrained_cfg_overlay":
            if not isinstance(value, dict) or not set(value) <= OVERLAY_KEYS:
                raise ValueError(
                    f"pretrained_cfg_overlay may only set {', '.join(sorted(OVERLAY_KEYS))}, got {value!r}"
                )
            continue
        if key not in TIMM_ARGUMENTS:
            raise ValueError(
                f"'{key}' is not an allowed timm argument (allowed: {', '.join(sorted(TIMM_ARGUMENTS))}, "
                "pretrained_cfg_overlay)"
            )
        items = value if isinstance(value, list | tuple) else [value]
        if not all(isinstance(item, _Plain) for item in items):
            raise ValueError(f"'{key}' must be a number, string, boolean or a list of them, got {value!r}")
    return kwargs


TimmArguments = Annotated[dict[str, Any] | None, AfterValidator(_check_timm_arguments)]
"""Extra ``timm.create_model`` arguments, restricted to ``TIMM_ARGUMENTS``."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Frozen):
    """Arguments of ``medfoundry.models.create_encoder`` (see there)."""

    name: str
    pretrained: bool = False
    model_kwargs: TimmArguments = None
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
