"""CT tissue classes from Hounsfield units.

Every pixel of a CT slice gets one class by its HU value (after the DICOM Modality LUT, i.e.
``RescaleSlope`` / ``RescaleIntercept``), with the usual textbook ranges:

| class | HU |
|---|---|
| ``air_lung`` | below -190 (air, lung parenchyma) |
| ``fat`` | -190 to below -30 |
| ``soft_tissue`` | -30 to below 300 (fluid, muscle, organs, brain, enhanced vessels) |
| ``bone`` | 300 and above |
"""

from __future__ import annotations

import numpy as np

__all__ = ["CT_TISSUE_CLASSES", "HU_EDGES", "ct_tissue_mask"]

CT_TISSUE_CLASSES = ("air_lung", "fat", "soft_tissue", "bone")
HU_EDGES = (-190.0, -30.0, 300.0)
"""Class ``i`` holds ``HU_EDGES[i - 1] <= HU < HU_EDGES[i]``."""


def ct_tissue_mask(hu: np.ndarray) -> np.ndarray:
    """``(H, W)`` HU -> ``(H, W)`` uint8 class indices into ``CT_TISSUE_CLASSES``."""
    classes: np.ndarray = np.digitize(hu, HU_EDGES).astype(np.uint8)
    return classes
