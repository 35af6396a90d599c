"""Trained encoder weights at another input size: the encoder's input-size contract.

CNNs take any input size. Transformers fix it where they keep position information per input
location: a plain ViT's absolute position embeddings (one per patch of the trained grid) and a
Swin's relative position bias tables (one per window size, which shrinks to the feature map
at small inputs). An encoder evaluated at another size is rebuilt at that size and given the
trained weights, these tables resampled with timm's own functions (bicubic for position
embeddings, as timm does when it loads ImageNet weights at another ``img_size``). Any other
weight whose shape depends on the size cannot be carried over, and the size is refused with
one line before any work.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table

from medfoundry.errors import ConfigError
from medfoundry.models.encoder import Encoder

__all__ = ["load_resized_weights"]


def load_resized_weights(
    rebuilt: Encoder, trained: Encoder, *, trained_size: int, image_size: int
) -> Encoder:
    """Load ``trained``'s weights into ``rebuilt`` (the same architecture built at ``image_size``).

    Args:
        rebuilt: A fresh encoder of the same config at the new size (its weights are replaced).
        trained: The trained encoder, built at ``trained_size``.
        trained_size: The side ``trained`` was trained at (for messages).
        image_size: The side ``rebuilt`` was built at.

    Returns:
        ``rebuilt``, holding the trained weights (position tables resampled).

    Raises:
        ConfigError: a weight other than a position table differs in shape between the two sizes.

    Examples:
        >>> from medfoundry.models.encoder import create_encoder
        >>> trained = create_encoder("vit_tiny_patch16_224", img_size=64)
        >>> rebuilt = load_resized_weights(
        ...     create_encoder("vit_tiny_patch16_224", img_size=32), trained, trained_size=64, image_size=32
        ... )
        >>> tuple(rebuilt.backbone.pos_embed.shape)  # 1 class token + 2 x 2 patches
        (1, 5, 192)
    """
    target = rebuilt.state_dict()
    state: dict[str, torch.Tensor] = {}
    fixed = []
    for key, value in trained.state_dict().items():
        if key not in target or target[key].shape == value.shape:
            state[key] = value
            continue
        resampled = _resampled_position_table(key, value, rebuilt, trained)
        if resampled is None:
            fixed.append(key)
        else:
            state[key] = resampled
    if fixed:
        raise ConfigError(
            f"trained at {trained_size} px, and its weights "
            f"{', '.join(fixed[:3])}{' ...' if len(fixed) > 3 else ''} depend on the input size, so it "
            f"cannot run at {image_size} px; evaluate it at {trained_size} px"
        )
    rebuilt.load_state_dict(state)
    return rebuilt


def _resampled_position_table(
    key: str, value: torch.Tensor, rebuilt: Encoder, trained: Encoder
) -> torch.Tensor | None:
    """A ViT position embedding or Swin relative position bias table at the rebuilt size, or
    ``None`` for any other weight."""
    owner_name, _, attribute = key.rpartition(".")
    # timm modules expose these attributes dynamically
    new: Any = rebuilt.get_submodule(owner_name)
    old: Any = trained.get_submodule(owner_name)
    if attribute == "pos_embed" and hasattr(new, "patch_embed") and value.ndim == 3:
        resampled: torch.Tensor = resample_abs_pos_embed(
            value,
            new_size=list(new.patch_embed.grid_size),
            old_size=list(old.patch_embed.grid_size),
            num_prefix_tokens=0 if getattr(new, "no_embed_class", False) else new.num_prefix_tokens,
        )
        return resampled
    if attribute == "relative_position_bias_table" and hasattr(new, "window_size"):
        table: torch.Tensor = resize_rel_pos_bias_table(
            value,
            new_window_size=tuple(new.window_size),
            new_bias_shape=tuple(new.relative_position_bias_table.shape),
            old_window_size=tuple(old.window_size),
        )
        return table
    return None
