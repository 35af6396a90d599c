"""Volumes to labelled 2D images: plane, slice position and label masks of every slice."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from medfoundry.corpus.image import CorpusImage, Label
from medfoundry.corpus.labels.slice_position import position_bin
from medfoundry.corpus.pixels import to_uint8
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.volume_slices import VolumeSlice, volume_slices

__all__ = ["labelled_slices", "volume_to_uint8"]


def volume_to_uint8(volume: np.ndarray) -> np.ndarray:
    """8 bits between the volume's 0.5th and 99.5th percentiles (every slice scaled alike)."""
    return to_uint8(volume, 0.5, 99.5)


def labelled_slices(
    source: str,
    volume_name: str,
    image: np.ndarray,
    *,
    zooms: tuple[float, float, float],
    settings: CorpusSettings,
    foreground: np.ndarray,
    masks: dict[str, np.ndarray] | None = None,
    maps: dict[str, np.ndarray] | None = None,
    planes: Sequence[str] = ("axial", "coronal", "sagittal"),
    min_foreground: float = 0.05,
) -> Iterator[tuple[VolumeSlice, CorpusImage]]:
    """Every non-empty slice of a canonical uint8 volume as a ``CorpusImage``.

    Labels: ``volume_plane``; ``slice_position`` (axial and coronal slices); one segmentation
    task per entry of ``masks`` (task name -> label volume). ``maps`` are cut alike and
    returned with the slice (e.g. coordinates for patch labels). Groups are slabs of
    ``settings.slab_slices`` slices along each plane's axis.
    """
    masks = masks or {}
    every_map = {**(maps or {}), **masks}
    for cut in volume_slices(
        image, zooms, foreground, maps=every_map, planes=planes, min_foreground=min_foreground
    ):
        labels: dict[str, Label] = {"volume_plane": cut.plane}
        if cut.plane != "sagittal":
            labels["slice_position"] = position_bin(cut.index, cut.first, cut.last)
        for task in masks:
            labels[task] = cut.maps[task].astype(np.uint8)
        slab = (cut.index - cut.first) // settings.slab_slices
        yield (
            cut,
            CorpusImage(
                source=source,
                name=f"{volume_name}_{cut.plane}_{cut.index:03d}",
                pixels=cut.pixels,
                group=f"{volume_name}/{cut.plane}/slab{slab:02d}",
                labels=labels,
            ),
        )
