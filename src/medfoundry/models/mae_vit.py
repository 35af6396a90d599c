"""Masked autoencoder for plain ViT encoders (MAE [0]): masked tokens are dropped, not computed.

The encoder is the plain timm ``VisionTransformer`` inside medfoundry's ``Encoder``, run through
its own parts (``patch_embed``, ``_pos_embed``, ``norm_pre``, ``blocks``, ``norm``) so that the
weights stay a plain timm model. After positions are added, the tokens of masked units are
removed: the encoder sees only the visible quarter of the image (at ratio 0.75), which is where
MAE's speed comes from [0]. The decoder (``ReconstructionDecoder``) puts a learned mask token at
every removed position and predicts all pixels; the loss counts masked units only.

``masking="mask_token"`` runs the same model without dropping: masked patch embeddings are
replaced by a learned token before positions are added (as SimMIM [2] does), so the encoder
processes every token. It exists to measure what dropping saves and for comparison with
mask-token methods.

[0] He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
[1] https://github.com/facebookresearch/mae/blob/6a2ba402291005b003a70e99f7c87d1a2c376b0d/models_mae.py
[2] Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from timm.layers import trunc_normal_
from timm.models import checkpoint_seq
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from medfoundry.models.encoder import Encoder
from medfoundry.models.masking import MaskedImageOutput, objective_mask, score_reconstruction, upsample_mask
from medfoundry.models.reconstruction_decoder import ReconstructionDecoder

__all__ = ["MaskedAutoencoderViT"]


class MaskedAutoencoderViT(nn.Module):
    """MAE objective around a plain-ViT ``Encoder``; the encoder is passed in at call time.

    Args:
        embed_dim: The ViT's token width.
        patch_size: The ViT's patch side, in pixels.
        image_size: Input side, in pixels (a multiple of ``mask_unit_size``).
        mask_ratio: Share of mask units masked, in (0, 1); each image gets exactly
            ``round(ratio * units)`` masked units.
        mask_unit_size: Side of a mask unit in pixels, a multiple of ``patch_size``: all patches
            of a masked unit are masked together.
        decoder_dim: Decoder width.
        decoder_depth: Decoder blocks.
        decoder_num_heads: Decoder attention heads.
        norm_pix_loss: Normalise each unit's target pixels by their mean and variance.
        masking: ``drop_tokens`` (MAE) or ``mask_token`` (same model, no dropping).

    Examples:
        >>> from medfoundry.models import create_encoder
        >>> encoder = create_encoder("vit_tiny_patch16_224", img_size=64)
        >>> mae = MaskedAutoencoderViT(192, 16, 64, decoder_dim=32, decoder_depth=1, decoder_num_heads=2)
        >>> out = mae(encoder, torch.rand(2, 3, 64, 64))
        >>> tuple(out.pred.shape), out.mask.sum(dim=1).tolist()
        ((2, 16, 768), [12.0, 12.0])
    """

    def __init__(
        self,
        embed_dim: int,
        patch_size: int,
        image_size: int,
        *,
        mask_ratio: float = 0.75,
        mask_unit_size: int = 16,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
        masking: Literal["drop_tokens", "mask_token"] = "drop_tokens",
    ) -> None:
        super().__init__()
        self.patch_size, self.mask_unit_size = patch_size, mask_unit_size
        self.unit_grid = image_size // mask_unit_size
        self.token_grid = image_size // patch_size
        self.num_masked = round(mask_ratio * self.unit_grid**2)
        self.num_kept_tokens = self.token_grid**2 - self.num_masked * (mask_unit_size // patch_size) ** 2
        self.norm_pix_loss = norm_pix_loss
        self.drop_tokens = masking == "drop_tokens"
        # without dropping, the encoder itself sees a mask token (its width), before positions
        self.mask_token = None if self.drop_tokens else nn.Parameter(torch.zeros(1, 1, embed_dim))
        if self.mask_token is not None:
            trunc_normal_(self.mask_token, std=0.02)
        self.decoder = ReconstructionDecoder(
            embed_dim,
            3 * patch_size**2,
            dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            use_mask_token=self.drop_tokens,
        )

    def forward(self, encoder: Encoder, images: torch.Tensor) -> MaskedImageOutput:
        """Mask (randomly in training, fixed masks in eval), encode, decode and score a batch.

        Args:
            encoder: The shared encoder (its backbone a timm ``VisionTransformer``).
            images: ``(B, 3, H, W)`` float32 in [0, 1].
        """
        x = encoder.normalize(images)
        unit_mask = objective_mask(
            x.shape[0], self.unit_grid**2, self.num_masked, device=x.device, training=self.training
        )
        token_mask = upsample_mask(unit_mask, self.unit_grid, self.mask_unit_size // self.patch_size)
        vit = cast(VisionTransformer, encoder.backbone)
        tokens = vit.patch_embed(x)  # (B, L, D), or (B, h, w, D) for dynamic image sizes
        if self.mask_token is not None:
            m = token_mask.view(*tokens.shape[:-1], 1).to(tokens.dtype)
            tokens = tokens * (1 - m) + self.mask_token.to(tokens.dtype) * m
        tokens = vit._pos_embed(tokens)  # (B, P + L, D) with P prefix (class, register) tokens
        prefix = vit.num_prefix_tokens
        ids_restore = None
        if self.drop_tokens:
            # visible tokens first (stable sort keeps their order), then the masked ones
            ids_shuffle = token_mask.argsort(dim=1, stable=True)
            ids_restore = ids_shuffle.argsort(dim=1)
            kept = ids_shuffle[:, : self.num_kept_tokens]
            patches = torch.gather(tokens[:, prefix:], 1, kept.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
            tokens = torch.cat([tokens[:, :prefix], patches], dim=1)
        tokens = vit.norm_pre(tokens)
        if vit.grad_checkpointing and not torch.jit.is_scripting():
            tokens = checkpoint_seq(vit.blocks, tokens)
        else:
            tokens = vit.blocks(tokens)
        latent = vit.norm(tokens)[:, prefix:]
        pred = self.decoder(latent, self.token_grid, ids_restore)  # (B, L, 3 p^2)
        return score_reconstruction(
            pred,
            self.patch_size,
            self.token_grid,
            x=x,
            unit_size=self.mask_unit_size,
            unit_mask=unit_mask,
            norm_pix_loss=self.norm_pix_loss,
        )
