"""Build a small multi-task database (PNG files, CSV manifests, ``tasks.yaml``) from packaged images.

Tasks and how their labels are made (all images are real; see ``packaged_images``):

- ``nuclei_seg`` (segmentation, background/nucleus): stardist's fluorescence image cut into
  non-overlapping tiles; the mask is the instance mask's foreground (any nucleus id > 0).
- ``nuclei_det`` (detection, nucleus): the same tiles; one box per nucleus, the bounding box of
  its pixels inside the tile (fragments under ``min_box_pixels`` pixels are left out).
- ``modality`` (classification, 5 classes): random square crops of five images, labelled by
  the source image's imaging technique: fundus photograph, immunohistochemistry, phase
  contrast, H&E, fluorescence.
- ``unlabelled`` (masked_image): every image above, without its label, for masked-image
  pretraining; each image keeps the split it has in its labelled task.

``tasks.yaml`` lists the three labelled tasks, ``mim_tasks.yaml`` the unlabelled one and
``hybrid_tasks.yaml`` all four.

Splits are spatial, never random, so that validation pixels are never seen in training: the
rightmost ``val_fraction`` of each source image's width is validation.
Fluorescence intensities (uint16) are scaled to 8 bits between the 1st and 99.8th percentile.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from medfoundry.demo import packaged_images as images

__all__ = ["build_demo_database"]

MODALITY_SOURCES = {
    "fundus": images.fundus,
    "immunohistochemistry": images.immunohistochemistry,
    "phase_contrast": images.phase_contrast,
    "h_and_e": images.h_and_e,
    "fluorescence": lambda: _to_uint8(images.nuclei_fluorescence()[0]),
}


def build_demo_database(
    out_dir: Path,
    tile_size: int = 64,
    crop_size: int = 96,
    crops_per_class: int = 32,
    val_fraction: float = 0.25,
    min_box_pixels: int = 12,
    seed: int = 0,
) -> Path:
    """Write the database and return the path of its ``tasks.yaml`` (the others lie beside it).

    Args:
        out_dir: Folder to write into (created).
        tile_size: Side of the nuclei tiles, in pixels.
        crop_size: Side of the modality crops, in pixels.
        crops_per_class: Modality crops per class (train and val together).
        val_fraction: Rightmost share of each source image used for validation.
        min_box_pixels: Smallest nucleus fragment (pixels inside a tile) that gets a box.
        seed: Seeds the crop positions.

    Raises:
        DataError: a package holding the images is missing (names the install command).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_nuclei(out_dir, tile_size, val_fraction, min_box_pixels)
    _write_modality(out_dir, crop_size, crops_per_class, val_fraction, np.random.default_rng(seed))
    tasks = [
        {
            "name": "nuclei_seg",
            "type": "segmentation",
            "classes": ["background", "nucleus"],
            "modality": "fluorescence microscopy",
            "source": {"path": "nuclei_seg.csv"},
        },
        {
            "name": "nuclei_det",
            "type": "detection",
            "classes": ["nucleus"],
            "modality": "fluorescence microscopy",
            "source": {"path": "nuclei_det.csv"},
        },
        {
            "name": "modality",
            "type": "classification",
            "classes": list(MODALITY_SOURCES),
            "modality": "mixed",
            "source": {"path": "modality.csv"},
        },
    ]
    unlabelled = {
        "name": "unlabelled",
        "type": "masked_image",
        "modality": "mixed",
        "source": {"path": "unlabelled.csv"},
    }
    _write_csv(
        out_dir / "unlabelled.csv",
        [
            {"image": row["image"], "split": row["split"]}
            for manifest in ("nuclei_seg.csv", "modality.csv")
            for row in _read_csv(out_dir / manifest)
        ],
    )
    for name, listed in (("mim_tasks.yaml", [unlabelled]), ("hybrid_tasks.yaml", [*tasks, unlabelled])):
        (out_dir / name).write_text(yaml.safe_dump({"tasks": listed}, sort_keys=False))
    path = out_dir / "tasks.yaml"
    path.write_text(yaml.safe_dump({"tasks": tasks}, sort_keys=False))
    return path


def _write_nuclei(out_dir: Path, tile: int, val_fraction: float, min_box_pixels: int) -> None:
    image, instances = images.nuclei_fluorescence()
    image8 = _to_uint8(image)
    (out_dir / "nuclei" / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "nuclei" / "masks").mkdir(parents=True, exist_ok=True)
    height, width = image.shape
    val_from = int(width * (1 - val_fraction)) // tile * tile
    seg_rows, det_rows = [], []
    for y in range(0, height - tile + 1, tile):
        for x in range(0, width - tile + 1, tile):
            name = f"tile_y{y:03d}_x{x:03d}.png"
            ids = instances[y : y + tile, x : x + tile]
            Image.fromarray(image8[y : y + tile, x : x + tile]).save(out_dir / "nuclei" / "images" / name)
            Image.fromarray((ids > 0).astype(np.uint8)).save(out_dir / "nuclei" / "masks" / name)
            split = "val" if x >= val_from else "train"
            seg_rows.append(
                {"image": f"nuclei/images/{name}", "mask": f"nuclei/masks/{name}", "split": split}
            )
            det_rows.append(
                {
                    "image": f"nuclei/images/{name}",
                    "boxes": json.dumps(_boxes(ids, min_box_pixels)),
                    "split": split,
                }
            )
    _write_csv(out_dir / "nuclei_seg.csv", seg_rows)
    _write_csv(out_dir / "nuclei_det.csv", det_rows)


def _boxes(ids: np.ndarray, min_pixels: int) -> list[list[float | str]]:
    boxes: list[list[float | str]] = []
    for instance in np.unique(ids[ids > 0]):
        ys, xs = np.nonzero(ids == instance)
        if ys.size >= min_pixels:
            boxes.append([int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, "nucleus"])
    return boxes


def _write_modality(
    out_dir: Path, crop: int, per_class: int, val_fraction: float, rng: np.random.Generator
) -> None:
    folder = out_dir / "modality"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    n_val = max(1, round(per_class * val_fraction))
    for label, load in MODALITY_SOURCES.items():
        source = load()
        height, width = source.shape[:2]
        margin = height // 7 if label == "fundus" else 0  # stay inside the fundus disc
        val_from = int(width * (1 - val_fraction))
        for i in range(per_class):
            split = "val" if i < n_val else "train"
            x_lo, x_hi = (val_from, width - crop) if split == "val" else (margin, val_from - crop)
            x = int(rng.integers(x_lo, max(x_lo + 1, x_hi)))
            y = int(rng.integers(margin, height - margin - crop))
            name = f"{label}_{i:03d}.png"
            Image.fromarray(np.ascontiguousarray(source[y : y + crop, x : x + crop])).save(folder / name)
            rows.append({"image": f"modality/{name}", "label": label, "split": split})
    _write_csv(out_dir / "modality.csv", rows)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1.0, 99.8])
    return (np.clip((image.astype(np.float32) - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
