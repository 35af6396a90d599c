"""The raw-pixel baseline: images as their own features, so a study can see when an encoder is
worth less than the pixels it was given.

On some tasks a logistic regression on raw pixels beats every pretrained encoder (a region of
the brain is told by where the bright tissue is, which global pooling throws away); a study
that only compares "pretrained versus random init" cannot see that. ``PixelEncoder`` offers
the probes the image itself: each channel downsampled to ``size x size`` by area averaging and
flattened, as the intensities the encoders are given (nothing else: the linear probe then
standardises every feature on its training subset, as for any encoder). Brightness is kept on
purpose: standardising each image on its own (an earlier version) threw away what tells a tile
with three nuclei from one with none, and on the corpus's held-out nuclei-count task cut a
logistic regression on the pixels from 0.66 to 0.42 balanced accuracy (validation split, all
labels): a baseline weakened that way would let a weak encoder look useful. Nothing is learned,
so it runs the probe modes only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DEFAULT_PIXELS_SIZE", "PixelEncoder"]

DEFAULT_PIXELS_SIZE = 16
VERSION = "pixels/area-downsample/v2"


class PixelEncoder(nn.Module):
    """Downsampled pixels as features: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 3 * size**2)``.

    Args:
        image_size: Side of the square input (the study's input size).
        size: Side each channel is downsampled to (``image_size`` or less).

    Attributes:
        weights_sha256: Identifies the features in caches (there are no weights: a hash of the
            method and ``size``).

    Examples:
        >>> encoder = PixelEncoder(image_size=32, size=8)
        >>> features = encoder.embed(torch.rand(2, 3, 32, 32))
        >>> tuple(features.shape)
        (2, 192)
    """

    _anchor: torch.Tensor

    def __init__(self, image_size: int, size: int = DEFAULT_PIXELS_SIZE) -> None:
        super().__init__()
        self.image_size = image_size
        self.size = min(size, image_size)
        self.source = "pixels"
        self.pretrained = False
        self.weights_sha256 = hashlib.sha256(f"{VERSION}/{self.size}".encode()).hexdigest()
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)  # follows .to(device)

    @property
    def out_channels(self) -> int:
        """Width of the features: 3 channels of ``size x size``."""
        return 3 * self.size**2

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, levels: Sequence[int] = (-1,)) -> torch.Tensor:
        """Features ``(B, out_channels)`` float32 (``levels`` is accepted for the common interface)."""
        return F.adaptive_avg_pool2d(images.float(), self.size).flatten(1)
