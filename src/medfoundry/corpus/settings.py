"""Settings that change what the corpus holds (all part of its fingerprint)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CorpusSettings"]


@dataclass(frozen=True)
class CorpusSettings:
    """How images are cut and split.

    Attributes:
        tile_size: Side, in pixels, of the tiles cut from large 2D images (radiographs,
            slides, microscopy) and of the crops of CT slices.
        patch_size: Side, in voxels (1 mm), of the brain MR patches labelled by region.
        nuclei_tile_size: Side of the fluorescence nuclei tiles (segmentation, detection, counts).
        min_box_pixels: Smallest part of an instance inside a tile that gets a box or is counted.
        val_percent: Share of groups (subjects, volumes, slabs, files) that pretraining tasks
            validate on.
        test_percent: Share of groups that pretraining tasks test on (0: the corpus's pretraining
            tasks have no test split; its held-out tasks do). Test images are never pretrained
            on, ``all_images`` included.
        slab_slices: Slices per slab: neighbouring slices of one volume are nearly identical,
            so single-volume sources are split by slabs, never by slice.
        seed: Seeds crop positions and split assignment.
    """

    tile_size: int = 256
    patch_size: int = 64
    nuclei_tile_size: int = 64
    min_box_pixels: int = 40
    val_percent: int = 20
    test_percent: int = 0
    slab_slices: int = 16
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
