"""The shared encoder: any timm backbone as a feature pyramid of NCHW maps.

``create_encoder`` is the one way to build an encoder. It wraps ``timm.create_model`` and reads
features with the model's ``forward_intermediates`` (NCHW for every family, Swin included), so
the backbone inside is a plain timm model whose ``state_dict`` exports unchanged. Input
normalisation (the backbone's mean/std) happens here, once: images enter in [0, 1].

BatchNorm layers are replaced by GroupNorm (``use_groupnorm``): each training step sees a batch
of one task only, so batch statistics would change from task to task [0].

Plain ViTs give one stride (16): a simple feature pyramid (ViTDet [1]) turns their last map into
strides 4, 8, 16, 32 so that U-Net and FPN decoders work on them too.

[0] Schäfer et al., Nature Computational Science 4, 495-509 (2024).
[1] Li et al., "Exploring Plain Vision Transformer Backbones for Object Detection", ECCV 2022.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
from timm.layers import BatchNormAct2d, GroupNormAct
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models.feature_level import FeatureLevel
from medfoundry.models.simple_pyramid import SimplePyramid
from medfoundry.registry import unknown_name_message

__all__ = ["HUB_PREFIXES", "Encoder", "FeatureLevel", "create_encoder", "replace_batchnorm"]

PYRAMID_STRIDES = (4, 8, 16, 32)
HUB_PREFIXES = ("hf-hub:", "local-dir:")
"""timm's names of exported models: a Hugging Face Hub repository, or a local folder."""


class Encoder(nn.Module):
    """timm backbone + input normalisation (+ a simple pyramid for plain ViTs).

    Input: ``(B, 3, H, W)`` float32 in [0, 1]. Output: a list of ``(B, C_i, H/s_i, W/s_i)`` maps,
    finest first, described by ``feature_info`` before any forward pass.

    Args:
        backbone: A timm model (``num_classes=0``) with ``forward_intermediates``.
        indices: Which of the backbone's intermediates to return.
        mean: Per-channel mean the backbone expects.
        std: Per-channel std the backbone expects.
        pyramid: Simple pyramid applied to the single returned map (plain ViTs), or ``None``.
    """

    # timm models expose their API (forward_intermediates, feature_info, pretrained_cfg)
    # dynamically, so the backbone is typed loosely; the buffers are declared for type checkers.
    backbone: Any
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        backbone: Any,
        indices: list[int],
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        pyramid: SimplePyramid | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.indices = list(indices)
        self.pyramid = pyramid
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        info = backbone.feature_info
        if pyramid is not None:
            self.feature_info = pyramid.feature_info
        else:
            self.feature_info = [FeatureLevel(info[i]["num_chs"], info[i]["reduction"]) for i in self.indices]

    @property
    def out_channels(self) -> int:
        """Width of the deepest map, which is also the pooled vector's width."""
        return self.feature_info[-1].channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.features(self.normalize(images))

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> the backbone's normalised input."""
        return (images - self.mean) / self.std

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output maps for an already normalised input (masked-image objectives edit it first)."""
        features = self.backbone.forward_intermediates(
            x, indices=self.indices, norm=True, stop_early=True, intermediates_only=True
        )
        if self.pyramid is not None:
            levels: list[torch.Tensor] = self.pyramid(features[-1])
            return levels
        return list(features)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute backbone activations in backward instead of storing them."""
        self.backbone.set_grad_checkpointing(enable)


def create_encoder(
    name: str,
    *,
    pretrained: bool = False,
    img_size: int | None = None,
    model_kwargs: dict[str, Any] | None = None,
    use_groupnorm: bool = True,
    use_grad_checkpointing: bool = False,
    config_key: str | None = "model.encoder",
) -> Encoder:
    """Build an encoder from any timm model name.

    Args:
        name: timm model name, e.g. ``swin_tiny_patch4_window7_224``, ``convnext_atto``,
            ``resnet18``, ``vit_small_patch16_224``, or an exported model: ``hf-hub:ORG/NAME``
            (through the Hugging Face cache; offline, it must be there) or ``local-dir:DIR``.
        pretrained: Load timm's pretrained weights (downloads from the hub; fails offline).
        img_size: Input size for models that fix it (ViT, Swin); ignored by CNNs.
        model_kwargs: Further ``timm.create_model`` arguments, e.g. ``{"window_size": 4}``.
        use_groupnorm: Replace every BatchNorm with GroupNorm.
        use_grad_checkpointing: Recompute activations in backward (less memory, ~30% slower).
        config_key: Where the user set these arguments, as messages name it (``None``: the
            caller names the encoder itself; messages then say ``pretrained: false``).

    Returns:
        The encoder; ``encoder.feature_info`` lists channels and strides of its outputs.

    Raises:
        ConfigError: unknown model name, arguments the model does not take, pretrained
            weights that cannot be fetched, or an ``img_size`` that the model's patches do not
            divide (a ViT at 40 px with 16-pixel patches would never see 8 pixels of each row).

    Examples:
        >>> enc = create_encoder("resnet18")
        >>> [(f.channels, f.stride) for f in enc.feature_info]
        [(64, 4), (128, 8), (256, 16), (512, 32)]
        >>> [tuple(f.shape) for f in enc(torch.rand(1, 3, 64, 64))][-1]
        (1, 512, 2, 2)
    """
    if not (timm.is_model(name) or name.startswith(HUB_PREFIXES)):
        raise ConfigError(
            f"{_prefix(config_key, 'name')}{unknown_name_message('timm model', name, timm.list_models())}"
        )
    backbone = _create_backbone(name, pretrained, img_size, dict(model_kwargs or {}), config_key)
    _check_patches_cover(name, backbone, img_size)
    if use_groupnorm and replace_batchnorm(backbone):
        # recorded so that an exported config rebuilds the same layers in plain timm
        backbone._model_args = {**getattr(backbone, "_model_args", {}), "norm_layer": "groupnorm"}
    cfg = backbone.pretrained_cfg
    info = backbone.feature_info
    reductions = [level["reduction"] for level in info]
    if len(set(reductions)) == 1:  # plain ViT: one stride everywhere
        last = len(info) - 1
        pyramid = SimplePyramid(info[last]["num_chs"], reductions[0])
        encoder = Encoder(backbone, [last], mean=cfg["mean"], std=cfg["std"], pyramid=pyramid)
    else:
        indices = [i for i, r in enumerate(reductions) if r in PYRAMID_STRIDES]
        if not indices:
            raise ConfigError(
                f"{_prefix(config_key, 'name')}'{name}' has no feature maps at strides {PYRAMID_STRIDES}"
            )
        encoder = Encoder(backbone, indices, mean=cfg["mean"], std=cfg["std"])
    if use_grad_checkpointing:
        encoder.set_grad_checkpointing(True)
    return encoder


def _check_patches_cover(name: str, backbone: Any, img_size: int | None) -> None:
    """Patch embeddings drop the pixels that do not fill a last patch: refuse such sizes."""
    embed = getattr(backbone, "patch_embed", None)
    patch = getattr(embed, "patch_size", None)
    if img_size is None or patch is None or getattr(embed, "dynamic_img_pad", False):
        return
    side = patch if isinstance(patch, int) else int(patch[0])
    if img_size % side:
        lower, upper = img_size - img_size % side, img_size - img_size % side + side
        raise ConfigError(
            f"image_size {img_size} is not a multiple of the {side}-pixel patches of '{name}': the last "
            f"{img_size % side} pixels of every row and column would never be seen; use "
            f"{' or '.join(str(v) for v in (lower, upper) if v > 0)}"
        )


def _prefix(config_key: str | None, field: str | None = None) -> str:
    """``model.encoder.name: `` (or nothing, when the caller names the encoder)."""
    if config_key is None:
        return ""
    return f"{config_key}.{field}: " if field else f"{config_key}: "


def _create_backbone(
    name: str, pretrained: bool, img_size: int | None, kwargs: dict[str, Any], config_key: str | None
) -> Any:
    where = _prefix(config_key)
    unset = f"set {config_key}.pretrained=false" if config_key else "use pretrained: false (embed: --random)"
    try:
        if img_size is not None:
            try:
                return timm.create_model(
                    name, pretrained=pretrained, num_classes=0, img_size=img_size, **kwargs
                )
            except TypeError:
                pass  # CNNs take any input size and reject the argument
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}timm model '{name}' does not accept these arguments: {e}") from None
    except (OSError, RuntimeError) as e:
        if name.startswith(HUB_PREFIXES):
            raise ConfigError(
                f"{where}cannot load '{name}' ({type(e).__name__}: {str(e).splitlines()[0][:160]}); "
                "a hf-hub model is read from the Hugging Face cache when offline (HF_HUB_OFFLINE=1), so "
                "download it once with network access, or give its exported folder as local-dir:DIR"
            ) from None
        if pretrained:
            raise ConfigError(
                f"{where}could not load pretrained weights for '{name}' ({type(e).__name__}: "
                f"{str(e).splitlines()[0][:160]}); the weights download from the Hugging Face hub, which "
                f"needs internet access; {unset} or pre-download the weights."
            ) from None
        raise


def replace_batchnorm(module: nn.Module, max_groups: int = 32) -> int:
    """Swap every ``BatchNorm2d`` for a GroupNorm with the same affine weights, in place.

    The group count is the largest divisor of the channel count that is at most ``max_groups``
    (32 for usual widths), matching timm's ``norm_layer="groupnorm"`` so that exported weights
    load into plain timm models built with that argument. timm's fused ``BatchNormAct2d``
    becomes ``GroupNormAct`` with the same activation.

    Args:
        module: Any module; children are replaced recursively.
        max_groups: Upper bound on groups.

    Returns:
        How many layers were replaced.
    """
    replaced = 0
    for child_name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, child_name, _groupnorm_like(child, max_groups))
            replaced += 1
        else:
            replaced += replace_batchnorm(child, max_groups)
    return replaced


def _groupnorm_like(bn: nn.BatchNorm2d, max_groups: int) -> nn.Module:
    channels = bn.num_features
    # timm's norm_layer="groupnorm" uses 32 groups; matching it keeps exports loadable in timm
    groups = max(g for g in range(1, max_groups + 1) if channels % g == 0)
    norm: nn.GroupNorm
    if isinstance(bn, BatchNormAct2d):
        norm = GroupNormAct(channels, num_groups=groups, eps=bn.eps, affine=bn.affine)
        norm.act, norm.drop = bn.act, bn.drop
    else:
        norm = timm.layers.GroupNorm(channels, num_groups=groups, eps=bn.eps, affine=bn.affine)
    if bn.affine:
        with torch.no_grad():
            norm.weight.copy_(bn.weight)
            norm.bias.copy_(bn.bias)
    return norm
