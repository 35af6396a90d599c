"""Choose and build the masked-image objective that fits the encoder.

Each encoder family has one masking route:

| family (timm class) | route | objective |
|---|---|---|
| plain ViT (``VisionTransformer``) | masked tokens dropped (MAE) | ``MaskedAutoencoderViT`` |
| Swin (``SwinTransformer``, ``V2``) | mask token at the patch embedding (VIS-MAE) | ``MaskTokenMIM`` |
| CNN (no self-attention anywhere) | mask token at the input | ``MaskTokenMIM`` |

Anything else (EVA, BEiT, hybrid attention networks, ...) has no route and is a ``ConfigError``.
Every check of the settings happens here, before any data is loaded or step is taken.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, TypedDict

import torch
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models.encoder import Encoder
from medfoundry.models.mae_vit import MaskedAutoencoderViT
from medfoundry.models.mask_token_mim import MaskTokenMIM
from medfoundry.models.masking import MaskedImageOutput

__all__ = ["MaskedImageObjective", "create_masked_image_objective"]

KEY = "model.masked_image"


class MaskedImageObjective(Protocol):
    """What the model, the recipe and the previews use of an objective."""

    mask_unit_size: int
    norm_pix_loss: bool

    def __call__(self, encoder: Encoder, images: torch.Tensor) -> MaskedImageOutput: ...


def create_masked_image_objective(
    encoder: Encoder,
    image_size: int,
    *,
    masking: Literal["auto", "drop_tokens", "mask_token"] = "auto",
    mask_ratio: float = 0.75,
    mask_unit_size: int = 16,
    decoder_dim: int = 512,
    decoder_depth: int = 8,
    decoder_num_heads: int = 16,
    norm_pix_loss: bool = True,
) -> nn.Module:
    """The objective (masking, decoder, loss) for ``encoder``, checked against the settings.

    Args:
        encoder: The shared encoder; the objective reads its parts but does not own it.
        image_size: Input side, in pixels.
        masking: ``auto`` (drop tokens for plain ViTs, a mask token otherwise), ``drop_tokens``
            (plain ViTs only) or ``mask_token``.
        mask_ratio: Share of mask units masked, in (0, 1).
        mask_unit_size: Side of a mask unit in pixels (16 in MAE and VIS-MAE).
        decoder_dim: Decoder width (MAE ViT-B: 512).
        decoder_depth: Decoder blocks (MAE ViT-B: 8).
        decoder_num_heads: Decoder attention heads (MAE ViT-B: 16).
        norm_pix_loss: Normalise each unit's target pixels by their mean and variance (MAE).

    Returns:
        A ``MaskedAutoencoderViT`` or ``MaskTokenMIM``; call it as ``objective(encoder, images)``.

    Raises:
        ConfigError: the encoder family has no masking route, or sizes, ratio or decoder
            settings do not fit (all problems at once, one line each).

    Examples:
        >>> from medfoundry.models import create_encoder
        >>> encoder = create_encoder("vit_tiny_patch16_224", img_size=64)
        >>> type(create_masked_image_objective(encoder, 64, decoder_dim=64, decoder_num_heads=4)).__name__
        'MaskedAutoencoderViT'
        >>> create_masked_image_objective(encoder, 72)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        medfoundry.errors.ConfigError: model.image_size: 72 is not a multiple of the mask unit ...
    """
    backbone = encoder.backbone
    problems = _setting_problems(image_size, mask_ratio, mask_unit_size, decoder_dim, decoder_num_heads)
    route, route_problems = _route(backbone, masking, mask_unit_size)
    problems += route_problems
    deep = encoder.feature_info[-1]
    if route in ("patch_embed", "input") and image_size % deep.stride:
        problems.append(
            f"model.image_size: {image_size} is not a multiple of the encoder's deepest stride "
            f"({int(deep.stride)} px), which the reconstruction decoder needs"
        )
    if problems:
        raise ConfigError(problems)
    settings = _Settings(
        mask_ratio=mask_ratio,
        mask_unit_size=mask_unit_size,
        decoder_dim=decoder_dim,
        decoder_depth=decoder_depth,
        decoder_num_heads=decoder_num_heads,
        norm_pix_loss=norm_pix_loss,
    )
    if isinstance(backbone, VisionTransformer):
        vit_masking: Literal["drop_tokens", "mask_token"] = "drop_tokens"
        if route == "mask_token":
            vit_masking = "mask_token"
        width, patch_size = backbone.embed_dim, backbone.patch_embed.patch_size[0]
        return MaskedAutoencoderViT(
            embed_dim=width, patch_size=patch_size, image_size=image_size, masking=vit_masking, **settings
        )
    deep_channels, deep_stride = deep.channels, int(deep.stride)
    if route == "patch_embed":
        patch_embed: Any = backbone.patch_embed
        stem_channels, stride = patch_embed.proj.out_channels, patch_embed.patch_size[0]
        return MaskTokenMIM(
            masking_point="patch_embed",
            stem_channels=stem_channels,
            stem_stride=stride,
            deep_channels=deep_channels,
            deep_stride=deep_stride,
            image_size=image_size,
            **settings,
        )
    return MaskTokenMIM(
        masking_point="input",
        stem_channels=3,
        stem_stride=1,
        deep_channels=deep_channels,
        deep_stride=deep_stride,
        image_size=image_size,
        **settings,
    )


def _setting_problems(
    image_size: int, mask_ratio: float, mask_unit_size: int, decoder_dim: int, decoder_num_heads: int
) -> list[str]:
    """What does not fit among the objective's own settings, one line each."""
    problems = []
    if not 0 < mask_ratio < 1:
        problems.append(f"{KEY}.mask_ratio: {mask_ratio} is outside (0, 1); MAE and VIS-MAE use 0.75")
    if image_size % mask_unit_size:
        problems.append(
            f"model.image_size: {image_size} is not a multiple of the mask unit "
            f"({KEY}.mask_unit_size: {mask_unit_size} px)"
        )
    if decoder_dim % 4 or decoder_dim % decoder_num_heads:
        problems.append(
            f"{KEY}.decoder_dim: {decoder_dim} must be a multiple of 4 (sine-cosine positions) and of "
            f"decoder_num_heads ({decoder_num_heads})"
        )
    units = (image_size // mask_unit_size) ** 2
    if not problems and not 1 <= round(mask_ratio * units) < units:
        problems.append(
            f"{KEY}.mask_ratio: {mask_ratio} of {units} mask units leaves no unit masked or none "
            "visible; use a larger image, smaller mask units or a ratio nearer 0.5"
        )
    return problems


def _route(backbone: nn.Module, masking: str, mask_unit_size: int) -> tuple[str, list[str]]:
    """Where the encoder is masked (``drop_tokens``/``mask_token`` for a ViT, ``patch_embed`` for
    a Swin, ``input`` for a CNN) and what does not fit that route.

    Raises:
        ConfigError: the encoder family has no masking route.
    """
    family = type(backbone).__name__
    if isinstance(backbone, VisionTransformer):
        patch = backbone.patch_embed.patch_size
        fits = patch[0] == patch[1] and not mask_unit_size % patch[0]
        problem = (
            f"{KEY}.mask_unit_size: {mask_unit_size} px is not a multiple of the ViT's patch {patch}; "
            f"set it to {patch[0]} or a multiple"
        )
        return ("drop_tokens" if masking == "auto" else masking), ([] if fits else [problem])
    if masking == "drop_tokens":
        return masking, [
            f"{KEY}.masking: drop_tokens needs a plain ViT, but the encoder is a {family}, whose stages "
            "need the full grid; use masking: mask_token (or auto)"
        ]
    if isinstance(backbone, SwinTransformer | SwinTransformerV2):
        patch_embed: Any = backbone.patch_embed
        stride = patch_embed.patch_size[0]
        problem = (
            f"{KEY}.mask_unit_size: {mask_unit_size} px is not a multiple of the Swin patch ({stride} px)"
        )
        return "patch_embed", ([problem] if mask_unit_size % stride else [])
    if not _has_self_attention(backbone):
        return "input", []
    raise ConfigError(
        f"model.encoder.name: {family} encoders have no masked-image route; masked_image tasks need a "
        "plain ViT (token dropping), a Swin (mask token at the patch embedding) or a CNN "
        "(mask token at the input)"
    )


class _Settings(TypedDict):
    """The objective settings both objective classes take as keywords."""

    mask_ratio: float
    mask_unit_size: int
    decoder_dim: int
    decoder_depth: int
    decoder_num_heads: int
    norm_pix_loss: bool


def _has_self_attention(module: nn.Module) -> bool:
    """Whether any layer attends over positions (query/key/value projections): then not a CNN.

    Channel attention (squeeze-and-excitation, ECA, CBAM, ResNeSt's split attention) has no
    query/key/value projections and does not count.
    """
    return any(
        isinstance(m, nn.MultiheadAttention)
        or hasattr(m, "qkv")
        or hasattr(m, "q_proj")
        or (hasattr(m, "q") and hasattr(m, "kv"))
        for m in module.modules()
    )
