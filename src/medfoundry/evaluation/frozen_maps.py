"""A frozen encoder's feature maps, computed once per distinct input image.

A ``frozen-decoder`` cell trains a decoder under an encoder that never changes: every training
image (and each of its flips) gives the same maps at every step, and the validation images the
same maps at every validation. Recomputing them is most of the cost of a small decoder's step
on a CPU (ResNet-18 at 64 px: 90 ms of a 120 ms step at batch 16). ``memoized_maps`` keys each
image by a hash of its pixels, so whatever the augmentation produces is looked up, not
recomputed, and anything the cache has no room for is computed as before: the maps a decoder
sees are the encoder's own, only the arithmetic is saved (an image computed in another batch
can differ in the last float bit).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["DEFAULT_MAX_BYTES", "memoized_maps"]

DEFAULT_MAX_BYTES = 2 * 2**30
"""At most this much memory holds cached maps (64 px ResNet-18: 123 KB an image)."""

Maps = list[torch.Tensor]


@contextmanager
def memoized_maps(encoder: nn.Module, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[dict[bytes, Maps]]:
    """Within the block, ``encoder(images)`` computes the maps of images it has not seen and
    looks up the others. The encoder must be frozen (eval mode, no trainable parameters):
    otherwise its maps change between calls and caching them would be wrong.

    Yields:
        The cache (image key -> the image's maps), for inspection.

    Raises:
        ValueError: the encoder has a parameter that requires gradients, or is in training mode.

    Examples:
        >>> conv = nn.Conv2d(3, 4, 3).eval().requires_grad_(False)
        >>> wrapped = nn.Sequential()  # any module whose forward returns a list of maps
        >>> wrapped.forward = lambda x: [conv(x)]
        >>> wrapped.eval()  # doctest: +ELLIPSIS
        Sequential()
        >>> with memoized_maps(wrapped) as cache:
        ...     a = wrapped(torch.ones(2, 3, 8, 8))   # two equal images: one key
        ...     b = wrapped(torch.ones(1, 3, 8, 8))   # looked up
        >>> len(cache), torch.equal(a[0][0], b[0][0])
        (1, True)
    """
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    if trainable or encoder.training:
        raise ValueError(
            "memoized_maps needs a frozen encoder in eval mode; "
            + (f"{trainable[0]} requires gradients" if trainable else "it is in training mode")
        )
    compute: Callable[[torch.Tensor], Maps] = encoder.forward
    cache: dict[bytes, Maps] = {}
    room = max_bytes

    def forward(images: torch.Tensor) -> Maps:
        nonlocal room
        keys = [_key(image) for image in images]
        missing = list(dict.fromkeys(k for k in keys if k not in cache))
        computed: dict[bytes, Maps] = {}
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            with torch.no_grad():
                maps = compute(images[[first[k] for k in missing]])
            for j, k in enumerate(missing):
                computed[k] = [m[j] for m in maps]
                size = sum(m.numel() * m.element_size() for m in computed[k])
                if size <= room:
                    cache[k] = [m.clone() for m in computed[k]]  # not a view of the whole batch
                    room -= size
        per_image = [cache.get(k) or computed[k] for k in keys]
        return [torch.stack(level) for level in zip(*per_image, strict=True)]

    encoder.forward = forward  # type: ignore[method-assign]
    try:
        yield cache
    finally:
        del encoder.forward  # the class's forward again


def _key(image: torch.Tensor) -> bytes:
    """A digest of the image's shape, dtype and pixels."""
    data = image.detach().contiguous().cpu()
    digest = hashlib.blake2b(str((tuple(data.shape), data.dtype)).encode(), digest_size=16)
    digest.update(data.numpy().tobytes())
    return digest.digest()
