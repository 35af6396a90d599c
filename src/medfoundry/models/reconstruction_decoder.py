"""The light transformer decoder of the masked-image objectives (MAE's decoder [0, 1]).

Encoder tokens are projected to the decoder width, given fixed 2-D sine-cosine positions, run
through ``depth`` timm ViT blocks and projected to the pixel values of the area each token
covers. With token dropping, the decoder first puts a learned mask token at every dropped
position (MAE's unshuffle), so it always sees the full grid.

[0] He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
[1] https://github.com/facebookresearch/mae/blob/6a2ba402291005b003a70e99f7c87d1a2c376b0d/models_mae.py
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import trunc_normal_
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block
from torch import nn

__all__ = ["ReconstructionDecoder"]


class ReconstructionDecoder(nn.Module):
    """Tokens of a square grid -> pixel values per token.

    Args:
        in_dim: Width of the encoder tokens.
        out_dim: Values predicted per token (``3 * s^2`` for a token covering ``s x s`` pixels).
        dim: Decoder width (MAE: 512); divisible by 4 (2-D sine-cosine positions) and by ``num_heads``.
        depth: Transformer blocks (MAE: 8); 0 gives a linear decoder, as in SimMIM.
        num_heads: Attention heads per block (MAE: 16).
        use_mask_token: Learn a token for positions the encoder dropped (token dropping only).

    Examples:
        >>> decoder = ReconstructionDecoder(in_dim=32, out_dim=48, dim=16, depth=1, num_heads=2)
        >>> decoder(torch.rand(2, 16, 32), grid=4).shape
        torch.Size([2, 16, 48])
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, dim: int, depth: int, num_heads: int, use_mask_token: bool = False
    ) -> None:
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim)) if use_mask_token else None
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(
            *[
                Block(dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=norm)  # type: ignore[arg-type]
                for _ in range(depth)
            ]
        )
        self.norm = norm(dim)
        self.pred = nn.Linear(dim, out_dim)
        self.apply(_init_weights)
        if self.mask_token is not None:
            trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self, tokens: torch.Tensor, grid: int, ids_restore: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Predict pixel values for every position of the ``grid x grid`` token grid.

        Args:
            tokens: ``(B, N, in_dim)``: all ``grid^2`` tokens in row-major order, or, with
                ``ids_restore``, only the ``N`` kept tokens in the order they were kept.
            grid: Side of the token grid.
            ids_restore: ``(B, grid^2)`` int64: position ``j`` of the full grid is entry
                ``ids_restore[:, j]`` of ``[kept tokens, mask tokens]`` (MAE's unshuffle).

        Returns:
            ``(B, grid^2, out_dim)``.
        """
        x = self.embed(tokens)
        if ids_restore is not None:
            if self.mask_token is None:
                raise ValueError("ids_restore needs a decoder built with use_mask_token=True")
            b, kept, _ = x.shape
            fill = self.mask_token.to(x.dtype).expand(b, ids_restore.shape[1] - kept, -1)
            x = torch.cat([x, fill], dim=1)
            x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, self.dim))
        # fixed, not learned, as in MAE; recomputed because it is cheap and depends only on grid
        pos = build_sincos2d_pos_embed([grid, grid], self.dim, device=x.device, dtype=x.dtype)
        x = self.blocks(x + pos.unsqueeze(0))
        pixels: torch.Tensor = self.pred(self.norm(x))
        return pixels


def _init_weights(module: nn.Module) -> None:
    # MAE [1]: xavier-uniform linear layers, zero biases, unit LayerNorms
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
