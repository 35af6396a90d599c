"""Microscopy and photography tasks of the demo database; the labels are the corpus's rules
(``corpus.labels``: ``instances`` for the nuclei masks and boxes, ``technique`` for the classes).

- ``nuclei_seg`` (segmentation, background/nucleus): stardist's fluorescence image cut into
  non-overlapping tiles; the mask is the instance mask's foreground (any nucleus id > 0).
- ``nuclei_det`` (detection, nucleus): the same tiles; one box per nucleus, the bounding box
  of its pixels inside the tile (fragments under ``min_box_pixels`` pixels are left out).
- ``imaging_technique`` (classification, 5 classes): random square crops of five images,
  labelled by the imaging technique of the source image: fundus photograph,
  immunohistochemistry, phase contrast, H&E, fluorescence. The fluorescence crops come from
  mahotas' nuclei image, not from stardist's, so that pretraining on this task never sees the
  nuclei tasks' image.
- unlabelled tiles of the H&E and IHC images, for masked-image pretraining (``all_images``).

Splits are spatial: the rightmost ``val_fraction`` of each source image (by x) is held out: for
the nuclei tiles it is the test part, with a validation column to its left; for the technique
crops its upper half is validation and its lower half test; for the unlabelled tiles it is
validation.
Fluorescence intensities are scaled to 8 bits between the 1st and 99.8th percentile.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from medfoundry.corpus.files import save_png, write_csv
from medfoundry.corpus.labels.instances import instance_boxes, instance_foreground
from medfoundry.corpus.labels.technique import technique_of
from medfoundry.corpus.pixels import to_uint8
from medfoundry.demo import packaged_images as images

__all__ = ["TECHNIQUES", "write_imaging_technique", "write_nuclei", "write_unlabelled_tiles"]

MODALITY_FILES = (
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/cell.png"),
    ("stardist", "data/images/histo.jpg"),
    ("mahotas", "demos/data/nuclear.png"),  # not stardist's nuclei: those are another task's
)
TECHNIQUES: dict[str, Callable[[], np.ndarray]] = {
    technique_of(package, path): partial(images.packaged_image, package, path)
    for package, path in MODALITY_FILES
}
"""The ``imaging_technique`` class of each image (the corpus's ``labels.technique``) and its reader."""


def write_nuclei(out_dir: Path, tile: int, val_fraction: float, *, min_box_pixels: int) -> None:
    """``nuclei_seg.csv`` and ``nuclei_det.csv`` over tiles of stardist's nuclei image.

    Columns of tiles, left to right: training; validation (half as many columns as test); test,
    the rightmost ``val_fraction`` of the columns (evaluation studies score on these tiles).
    """
    image, instances = images.nuclei_fluorescence()
    image8 = to_uint8(image)
    height, width = image.shape
    columns = width // tile
    test_columns = max(1, round(columns * val_fraction))
    test_from = (columns - test_columns) * tile
    val_from = test_from - max(1, test_columns // 2) * tile
    seg_rows, det_rows = [], []
    for y in range(0, height - tile + 1, tile):
        for x in range(0, width - tile + 1, tile):
            name = f"tile_y{y:03d}_x{x:03d}.png"
            ids = instances[y : y + tile, x : x + tile]
            save_png(image8[y : y + tile, x : x + tile], out_dir / "nuclei" / "images" / name)
            save_png(instance_foreground(ids), out_dir / "nuclei" / "masks" / name)
            split = "test" if x >= test_from else "val" if x >= val_from else "train"
            seg_rows.append(
                {"image": f"nuclei/images/{name}", "mask": f"nuclei/masks/{name}", "split": split}
            )
            boxes = json.dumps([list(box) for box in instance_boxes(ids, min_box_pixels, "nucleus")])
            det_rows.append({"image": f"nuclei/images/{name}", "boxes": boxes, "split": split})
    write_csv(out_dir / "nuclei_seg.csv", seg_rows)
    write_csv(out_dir / "nuclei_det.csv", det_rows)


def write_imaging_technique(
    out_dir: Path, crop: int, per_class: int, *, val_fraction: float, rng: np.random.Generator
) -> None:
    """``imaging_technique.csv``: crops labelled by the source image's imaging technique.

    Training crops come from the left of each image; the rightmost ``val_fraction`` of its width
    is split in a validation (upper half) and a test (lower half) region, so no held-out crop
    overlaps a training crop.
    """
    rows = []
    held = max(1, round(per_class * val_fraction / 2))  # crops per class for val, and for test
    for label, load in TECHNIQUES.items():
        source = load()
        height, width = source.shape[:2]
        margin = height // 7 if label == "fundus" else 0  # stay inside the fundus disc
        held_from, middle = int(width * (1 - val_fraction)), height // 2
        for i in range(per_class):
            split = "val" if i < held else "test" if i < 2 * held else "train"
            if split == "train":
                x = _draw(rng, margin, held_from - crop)
                y = _draw(rng, margin, height - margin - crop)
            else:
                x = _draw(rng, held_from, width - margin - crop)
                y = (
                    _draw(rng, margin, middle - crop)
                    if split == "val"
                    else _draw(rng, middle, height - margin - crop)
                )
            name = f"{label}_{i:03d}.png"
            save_png(source[y : y + crop, x : x + crop], out_dir / "imaging_technique" / name)
            rows.append({"image": f"imaging_technique/{name}", "label": label, "split": split})
    write_csv(out_dir / "imaging_technique.csv", rows)


def _draw(rng: np.random.Generator, low: int, high: int) -> int:
    """A position in ``[low, high]`` (``low`` when the range is empty)."""
    return int(rng.integers(low, max(low, high) + 1))


def write_unlabelled_tiles(out_dir: Path, tile: int, val_fraction: float) -> list[dict[str, str]]:
    """Tiles of the H&E and IHC images that no task labels; returns their rows (image, split)."""
    rows = []
    for label, load in (("h_and_e", images.h_and_e), ("ihc", images.immunohistochemistry)):
        source = load()
        height, width = source.shape[:2]
        val_from = int(width * (1 - val_fraction)) // tile * tile
        for y in range(0, height - tile + 1, tile):
            for x in range(0, width - tile + 1, tile):
                name = f"{label}_y{y:03d}_x{x:03d}.png"
                save_png(source[y : y + tile, x : x + tile], out_dir / "unlabelled" / name)
                rows.append({"image": f"unlabelled/{name}", "split": "val" if x >= val_from else "train"})
    return rows
