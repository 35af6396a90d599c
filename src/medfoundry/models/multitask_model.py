"""The multi-task model: one shared encoder, shared decoders, one small head per task."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medfoundry.models.encoder import Encoder
from medfoundry.tasks.task_type import FeatureKind

__all__ = ["MultiTaskModel"]


class MultiTaskModel(nn.Module):
    """Routes a batch of one task through the shared blocks it needs and then its head.

    Classification-like heads read the pooled deepest map, segmentation heads the pixel
    decoder's embedding, detection heads the detection decoder's levels, masked-image tasks the
    output of the masked-image objective (which masks the images and runs the encoder itself),
    two-view heads the encoder and the images (they run the encoder on views they make).
    Only the blocks a task needs run, so a classification batch never pays for the decoders.

    Args:
        encoder: Shared encoder.
        heads: Task name -> head.
        head_features: Task name -> the shared feature its head reads.
        pixel_decoder: Shared pixel decoder (needed when any head reads ``"pixel"``).
        detection_decoder: Shared detection decoder (needed when any head reads ``"pyramid"``).
        masked_image: Shared masked-image objective, called as ``masked_image(encoder, images)``
            (needed when any head reads ``"masked"``).
    """

    def __init__(
        self,
        encoder: Encoder,
        heads: dict[str, nn.Module],
        *,
        head_features: dict[str, FeatureKind],
        pixel_decoder: nn.Module | None = None,
        detection_decoder: nn.Module | None = None,
        masked_image: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.pixel_decoder = pixel_decoder
        self.detection_decoder = detection_decoder
        self.masked_image = masked_image
        self.heads = nn.ModuleDict(heads)
        self.head_features = dict(head_features)

    def forward(self, task: str, images: torch.Tensor) -> Any:
        """Head output for a batch of ``task``: images ``(B, 3, H, W)`` float32 in [0, 1]."""
        kind = self.head_features[task]
        if kind == "masked":  # masking happens at the encoder's input: the objective runs it
            return self.heads[task](self.masked_image(self.encoder, images))  # type: ignore[misc]
        if kind == "views":  # the head makes views of the images and runs the encoder on them
            return self.heads[task](self.encoder, images)
        features = self.encoder(images)
        if kind == "pooled":
            shared: Any = features[-1].mean(dim=(-2, -1))
        elif kind == "pixel":
            shared = self.pixel_decoder(features, tuple(images.shape[-2:]))  # type: ignore[misc]
        else:
            shared = self.detection_decoder(features)  # type: ignore[misc]
        return self.heads[task](shared)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled deepest encoder map ``(B, C)``: the image embedding used by probes."""
        deepest: torch.Tensor = self.encoder(images)[-1]
        return deepest.mean(dim=(-2, -1))

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters of the encoder and shared decoders (one optimizer, stepped per round)."""
        head_ids = {id(p) for p in self.heads.parameters()}
        return [p for p in self.parameters() if id(p) not in head_ids]

    def head_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters of one task's head (its own optimizer, stepped after its own backward)."""
        return list(self.heads[task].parameters())
