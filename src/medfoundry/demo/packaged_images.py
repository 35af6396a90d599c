"""Real biomedical images that ship inside Python packages, read straight from their files.

The packages are only located (``importlib.util.find_spec`` does not import them): stardist's
data files need no TensorFlow, scikit-image's bundled images need no download.

Sources (see docs/demo.md for licences and how labels are derived):

- stardist ``data/images/img2d.tif``: fluorescence nuclei, 512x512 uint16, with
  ``mask2d.tif``, an instance mask of 125 nuclei; ``histo.jpg``: an H&E tile, 300x500 RGB.
- scikit-image ``data/retina.jpg`` (fundus photograph, 1411x1411 RGB), ``ihc.png``
  (immunohistochemistry of colon, 512x512 RGB), ``cell.png`` (quantitative phase, 660x550).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medfoundry.errors import DataError

__all__ = [
    "fundus",
    "h_and_e",
    "immunohistochemistry",
    "nuclei_fluorescence",
    "package_folder",
    "phase_contrast",
]

INSTALL_HINT = "pip install 'medfoundry[data]'  (or: make setup)"


def package_folder(package: str) -> Path:
    """Folder of an installed package, without importing it.

    Raises:
        DataError: the package is not installed (with the command that installs it).
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"the demo images need the package '{package}', which is not installed: {INSTALL_HINT}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def nuclei_fluorescence() -> tuple[np.ndarray, np.ndarray]:
    """stardist's fluorescence nuclei: image ``(512, 512)`` uint16 and instance ids ``(512, 512)``."""
    folder = package_folder("stardist") / "data" / "images"
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


def h_and_e() -> np.ndarray:
    """stardist's H&E tile ``(300, 500, 3)`` uint8."""
    return _read(package_folder("stardist") / "data" / "images" / "histo.jpg")


def fundus() -> np.ndarray:
    """scikit-image's retina fundus photograph ``(1411, 1411, 3)`` uint8."""
    return _read(package_folder("skimage") / "data" / "retina.jpg")


def immunohistochemistry() -> np.ndarray:
    """scikit-image's IHC image of colon ``(512, 512, 3)`` uint8."""
    return _read(package_folder("skimage") / "data" / "ihc.png")


def phase_contrast() -> np.ndarray:
    """scikit-image's quantitative phase image of cells ``(660, 550)`` uint8."""
    return _read(package_folder("skimage") / "data" / "cell.png")


def _read(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{path}: expected packaged image is missing; reinstall: {INSTALL_HINT}")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
