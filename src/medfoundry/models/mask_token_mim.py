"""Mask-token masked image modelling for hierarchical encoders (Swin as in VIS-MAE [0]; CNNs).

Hierarchical encoders merge neighbouring positions stage after stage, so masked positions cannot
be dropped: they are replaced by a learned mask token and the encoder computes the full grid
(no compute saving, unlike MAE's token dropping [1]).

- Swin (``masking_point="patch_embed"``): masked 16 x 16-pixel units are replaced by the mask
  token in the patch-embedding output, as in VIS-MAE and SimMIM [2]. timm's Swin patch
  embedding is channels-last ``(B, H/4, W/4, C)``; its stages and final norm follow.
- CNNs (``masking_point="input"``): a convolution's receptive field spans many positions, so
  there is no token to swap; masked units of the normalised input image are replaced by a
  learned 3-value (per-channel) token, and the network inpaints them, as context encoders
  do [3]. Convolutions see the mask's edges; that is the price of a dense CNN (sparse
  convolutions, as in SparK or ConvNeXt V2's FCMAE, avoid it but need their own layers).

The decoder is light (``ReconstructionDecoder``): a few transformer blocks on the tokens of the
deepest map (stride 32), each predicting the pixels of the 32 x 32 area it covers; the loss
counts masked units only. VIS-MAE uses a Swin decoder instead.

[0] Liu et al., "VIS-MAE", arXiv 2402.01034 (2024).
[1] He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.
[2] Xie et al., "SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022;
    https://github.com/microsoft/SimMIM/blob/0e7174608f5105f3d573f67724008c89b23b7fa2/models/simmim.py
[3] Pathak et al., "Context Encoders: Feature Learning by Inpainting", CVPR 2016.
"""

from __future__ import annotations

from typing import Literal, cast

import torch
from timm.layers import trunc_normal_
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from medfoundry.models.encoder import Encoder
from medfoundry.models.masking import MaskedImageOutput, objective_mask, score_reconstruction, upsample_mask
from medfoundry.models.reconstruction_decoder import ReconstructionDecoder

__all__ = ["MaskTokenMIM"]


class MaskTokenMIM(nn.Module):
    """Mask-token objective around a hierarchical ``Encoder``; the encoder is passed in at call time.

    Args:
        masking_point: ``patch_embed`` (Swin: the token is ``stem_channels`` wide) or ``input``
            (any CNN: the token is one value per image channel).
        stem_channels: Width of the patch embedding (``patch_embed``); ignored for ``input``.
        stem_stride: Pixels per patch-embedding position (4 for Swin; 1 for ``input``).
        deep_channels: Channels of the encoder's deepest map.
        deep_stride: Its stride (32); ``image_size`` must be a multiple.
        image_size: Input side, in pixels (a multiple of ``mask_unit_size``).
        mask_ratio: Share of mask units masked, in (0, 1).
        mask_unit_size: Side of a mask unit in pixels, a multiple of ``stem_stride``.
        decoder_dim: Decoder width.
        decoder_depth: Decoder blocks (0: a linear decoder, as in SimMIM).
        decoder_num_heads: Decoder attention heads.
        norm_pix_loss: Normalise each unit's target pixels by their mean and variance.

    Examples:
        >>> from medfoundry.models import create_encoder
        >>> encoder = create_encoder("resnet10t")
        >>> mim = MaskTokenMIM(masking_point="input", stem_channels=3, stem_stride=1, deep_channels=512,
        ...                    deep_stride=32, image_size=64, decoder_dim=32, decoder_depth=1,
        ...                    decoder_num_heads=2)
        >>> out = mim(encoder, torch.rand(2, 3, 64, 64))
        >>> tuple(out.pred.shape), out.mask.sum(dim=1).tolist()
        ((2, 16, 768), [12.0, 12.0])
    """

    def __init__(
        self,
        *,
        masking_point: Literal["patch_embed", "input"],
        stem_channels: int,
        stem_stride: int,
        deep_channels: int,
        deep_stride: int,
        image_size: int,
        mask_ratio: float = 0.75,
        mask_unit_size: int = 16,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
    ) -> None:
        super().__init__()
        self.masking_point = masking_point
        self.stem_stride = stem_stride if masking_point == "patch_embed" else 1
        self.mask_unit_size, self.deep_stride = mask_unit_size, deep_stride
        self.unit_grid = image_size // mask_unit_size
        self.deep_grid = image_size // deep_stride
        self.num_masked = round(mask_ratio * self.unit_grid**2)
        self.norm_pix_loss = norm_pix_loss
        if masking_point == "patch_embed":
            self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, stem_channels))
            trunc_normal_(self.mask_token, std=0.02)  # SimMIM [2]
        else:
            # zero in the normalised input: the training data's mean colour, to start with
            self.mask_token = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.decoder = ReconstructionDecoder(
            deep_channels,
            3 * deep_stride**2,
            dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
        )

    def forward(self, encoder: Encoder, images: torch.Tensor) -> MaskedImageOutput:
        """Mask (randomly in training, fixed masks in eval), encode, decode and score a batch.

        Args:
            encoder: The shared encoder (a timm Swin for ``patch_embed``).
            images: ``(B, 3, H, W)`` float32 in [0, 1].
        """
        x = encoder.normalize(images)
        b = x.shape[0]
        unit_mask = objective_mask(
            b, self.unit_grid**2, self.num_masked, device=x.device, training=self.training
        )
        factor = self.mask_unit_size // self.stem_stride
        grid = self.unit_grid * factor
        if self.masking_point == "patch_embed":
            swin = cast(SwinTransformer, encoder.backbone)  # V2 has the same parts
            tokens = swin.patch_embed(x)  # (B, H/4, W/4, C), channels last
            m = upsample_mask(unit_mask, self.unit_grid, factor).view(b, grid, grid, 1).to(tokens.dtype)
            tokens = tokens * (1 - m) + self.mask_token.to(tokens.dtype) * m
            deep = swin.norm(swin.layers(tokens)).flatten(1, 2)  # (B, (H/32)(W/32), C')
        else:
            m = upsample_mask(unit_mask, self.unit_grid, factor).view(b, 1, grid, grid).to(x.dtype)
            masked = x * (1 - m) + self.mask_token.to(x.dtype) * m
            deep = encoder.features(masked)[-1].flatten(2).transpose(1, 2)
        pred = self.decoder(deep, self.deep_grid)  # (B, (H/32)(W/32), 3 * 32^2)
        return score_reconstruction(
            pred,
            self.deep_stride,
            self.deep_grid,
            x=x,
            unit_size=self.mask_unit_size,
            unit_mask=unit_mask,
            norm_pix_loss=self.norm_pix_loss,
        )
