"""Real files that ship inside installed packages, and small writers for test inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.packaged import package_folder


@pytest.fixture(scope="session")
def dicom_file() -> Callable[[str], Path]:
    """``dicom_file("CT_small.dcm")``: a pydicom / pydicom-data test file."""
    from pydicom.data import get_testdata_file

    def get(name: str) -> Path:
        path = get_testdata_file(name)
        if path is None:
            pytest.skip(f"{name} is not installed (pip install pydicom-data)")
        return Path(str(path))

    return get


@pytest.fixture(scope="session")
def nibabel_data() -> Path:
    """nibabel's test volumes (anatomical.nii 33x41x25 MR, example4d.nii.gz, ...)."""
    from nibabel.testing import data_path

    return Path(data_path)


@pytest.fixture(scope="session")
def stardist_images() -> Path:
    """stardist's fluorescence nuclei (img2d.tif, uint16) with its instance mask (mask2d.tif)."""
    return package_folder("stardist") / "data" / "images"


@pytest.fixture(scope="session")
def skimage_data() -> Path:
    """scikit-image's bundled images (retina.jpg, ihc.png, cell.png)."""
    return package_folder("skimage") / "data"


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def gray(size: int = 8, value: int = 0) -> np.ndarray:
    return np.full((size, size), value, np.uint8)
