"""Radiology task of the demo database: the modality of packaged DICOM images, from their headers.

``dicom_modality`` (classification: radiograph, CT, MR, US): random square crops of the
distinct images that pydicom, pydicom-data and deid-data ship (``DICOM_IMAGES``), each crop
labelled by its file's ``Modality`` header with the corpus's rule
(``corpus.labels.dicom_header``: CR and DX merged as "radiograph"). Pixels go
through medfoundry's DICOM reader: rescale slope/intercept, the header's window or VOI LUT,
MONOCHROME1 inverted, palette colour applied; multi-frame files give their first frame.

Splits are by source image, so no image gives crops to both splits: per class, the images in
``VALIDATION_IMAGES`` are validation, the others training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfoundry.corpus.files import save_png, write_csv
from medfoundry.corpus.labels.dicom_header import modality_class
from medfoundry.data.dicom import read_dicom_header, read_dicom_image
from medfoundry.data.intensity import AutoIntensity
from medfoundry.demo import packaged_images as images

__all__ = ["VALIDATION_IMAGES", "write_dicom_modality"]

VALIDATION_IMAGES = {
    "RG3_UNCR.dcm",
    "explicit_VR-UN.dcm",
    "MR-SIEMENS-DICOM-WithOverlays.dcm",
    "US1_UNCR.dcm",
    "examples_palette.dcm",
}


def write_dicom_modality(out_dir: Path, crops_per_image: int, rng: np.random.Generator) -> None:
    """``dicom_modality.csv`` and its PNG crops under ``out_dir``."""
    rows = []
    for expected, files in images.DICOM_IMAGES.items():
        for package, file_name in files:
            path = images.dicom_file(package, file_name)
            header = read_dicom_header(path)
            label = modality_class(header)
            assert label == expected, f"{file_name}: header says {label}, listed as {expected}"
            frames = int(header.get("NumberOfFrames", 1) or 1)
            pixels = read_dicom_image(path, 0 if frames > 1 else None, AutoIntensity())
            image = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
            image = image[..., 0] if image.shape[-1] == 1 else image
            split = "val" if file_name in VALIDATION_IMAGES else "train"
            for i, crop in enumerate(_crops(image, crops_per_image, rng)):
                name = f"dicom/{Path(file_name).stem}_{i:02d}.png"
                save_png(crop, out_dir / name)
                rows.append({"image": name, "label": label, "split": split, "group": file_name})
    write_csv(out_dir / "dicom_modality.csv", rows)


def _crops(image: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Square crops of 40-80% of the shorter side at random places (the whole image first)."""
    height, width = image.shape[:2]
    side = min(height, width)
    crops = [image[(height - side) // 2 : (height + side) // 2, (width - side) // 2 : (width + side) // 2]]
    for _ in range(count - 1):
        size = int(side * rng.uniform(0.4, 0.8))
        y = int(rng.integers(0, height - size + 1))
        x = int(rng.integers(0, width - size + 1))
        crops.append(image[y : y + size, x : x + size])
    return crops
