"""Real biomedical images that ship inside Python packages, read straight from their files.

The packages are only located (``importlib.util.find_spec`` does not import them): stardist's
data files need no TensorFlow, scikit-image's bundled images need no download, nilearn's
templates are read with nibabel.

Sources (see docs/demo.md for licences and how labels are derived):

- stardist ``data/images/img2d.tif``: fluorescence nuclei, 512x512 uint16, with
  ``mask2d.tif``, an instance mask of 125 nuclei; ``histo.jpg``: an H&E tile, 300x500 RGB.
- scikit-image ``data/retina.jpg`` (fundus photograph, 1411x1411 RGB), ``ihc.png``
  (immunohistochemistry of colon, 512x512 RGB), ``cell.png`` (quantitative phase, 660x550).
- mahotas ``demos/data/nuclear.png``: fluorescence nuclei (another sample), 1344x1024 RGB.
- nilearn ``datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_converted.nii.gz``: the
  MNI ICBM152 2009a T1 template (average of 152 subjects) with grey- and white-matter
  probability maps, 197x233x189 at 1 mm.
- DICOM: pydicom's and pydicom-data's test files and deid-data's images (``DICOM_IMAGES``).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import tifffile

from medfoundry.corpus.packages import module_folder
from medfoundry.corpus.sources.microscopy import read_rgb_or_gray
from medfoundry.errors import DataError

__all__ = [
    "DICOM_IMAGES",
    "dicom_file",
    "fundus",
    "h_and_e",
    "immunohistochemistry",
    "mni152",
    "nuclei_fluorescence",
    "other_fluorescence",
    "package_folder",
    "packaged_image",
    "phase_contrast",
]

INSTALL_HINT = "pip install 'medfoundry[demo]'  (or: make setup)"

DICOM_IMAGES: dict[str, tuple[tuple[str, str], ...]] = {
    # distinct images only (pydicom ships many re-encodings of the same pixels); each entry is
    # (package, file name). deid-data's "ctbrain" files are drawings labelled CT: left out;
    # eCT_Supplemental (enhanced multi-frame CT, rescale and window in functional groups) is
    # read correctly since the reader lifts those groups, but the demo's recorded results
    # (docs/demo.md) were measured without it: left out until they are measured again.
    "radiograph": (("pydicom", "RG1_UNCR.dcm"), ("pydicom", "RG3_UNCR.dcm"), ("deid_data", "cat.dcm")),
    "CT": (
        ("pydicom", "CT_small.dcm"),
        ("pydicom", "693_UNCR.dcm"),
        ("pydicom", "explicit_VR-UN.dcm"),
    ),
    "MR": (
        ("pydicom", "MR_small.dcm"),
        ("pydicom", "MR2_UNCR.dcm"),
        ("pydicom", "emri_small.dcm"),
        ("pydicom", "MR-SIEMENS-DICOM-WithOverlays.dcm"),
        ("pydicom", "examples_overlay.dcm"),
    ),
    "US": (
        ("pydicom", "OBXXXX1A.dcm"),
        ("pydicom", "US1_UNCR.dcm"),
        ("pydicom", "examples_palette.dcm"),
        ("pydicom", "color-px.dcm"),
        ("pydicom", "gdcm-US-ALOKA-16.dcm"),
        ("deid_data", "GREYSCALE_IMAGE.dcm"),
        ("deid_data", "RGB_IMAGE.dcm"),
    ),
}


def package_folder(package: str) -> Path:
    """Folder of an installed package, without importing it.

    Raises:
        DataError: the package is not installed (with the command that installs it).
    """
    folder = module_folder(package)
    if folder is None:
        raise DataError(
            f"the demo images need the package '{package}', which is not installed: {INSTALL_HINT}"
        )
    return folder


def nuclei_fluorescence() -> tuple[np.ndarray, np.ndarray]:
    """stardist's fluorescence nuclei: image ``(512, 512)`` uint16 and instance ids ``(512, 512)``."""
    folder = package_folder("stardist") / "data" / "images"
    return tifffile.imread(folder / "img2d.tif"), tifffile.imread(folder / "mask2d.tif")


def other_fluorescence() -> np.ndarray:
    """mahotas' fluorescence nuclei image ``(1024, 1344, 3)`` uint8 (not the stardist sample)."""
    return packaged_image("mahotas", "demos/data/nuclear.png")


def h_and_e() -> np.ndarray:
    """stardist's H&E tile ``(300, 500, 3)`` uint8."""
    return packaged_image("stardist", "data/images/histo.jpg")


def fundus() -> np.ndarray:
    """scikit-image's retina fundus photograph ``(1411, 1411, 3)`` uint8."""
    return packaged_image("skimage", "data/retina.jpg")


def immunohistochemistry() -> np.ndarray:
    """scikit-image's IHC image of colon ``(512, 512, 3)`` uint8."""
    return packaged_image("skimage", "data/ihc.png")


def phase_contrast() -> np.ndarray:
    """scikit-image's quantitative phase image of cells ``(660, 550)`` uint8."""
    return packaged_image("skimage", "data/cell.png")


def mni152() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 2009a T1 template and its GM and WM probability maps, in RAS+ orientation.

    Returns:
        ``(t1, grey, white)``, each ``(197, 233, 189)`` float32 (x: left->right, y:
        posterior->anterior, z: inferior->superior); probabilities in [0, 1].
    """
    folder = package_folder("nilearn") / "datasets" / "data"
    volumes = []
    for kind in ("t1", "gm", "wm"):
        path = folder / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        if not path.is_file():
            raise DataError(f"{path}: expected packaged template is missing; reinstall: {INSTALL_HINT}")
        volumes.append(np.asarray(nib.as_closest_canonical(nib.load(path)).get_fdata(), dtype=np.float32))
    t1, grey, white = volumes
    return t1, grey / 255.0, white / 255.0  # the probability maps are stored as 0..255


def dicom_file(package: str, name: str) -> Path:
    """Path of a packaged DICOM file (pydicom / pydicom-data via ``get_testdata_file``, deid-data)."""
    if package == "pydicom":
        from pydicom.data import get_testdata_file

        found = get_testdata_file(name)
        if found is None:
            raise DataError(f"DICOM test file {name} not found: install pydicom-data ({INSTALL_HINT})")
        return Path(str(found))
    for path in (package_folder(package) / "data").rglob(name):
        return path
    raise DataError(f"DICOM file {name} not found in the package '{package}': {INSTALL_HINT}")


def packaged_image(package: str, path: str) -> np.ndarray:
    """An 8-bit image file of an installed package (``path`` below its folder), ``(H, W)`` or
    ``(H, W, 3)`` uint8."""
    return read_rgb_or_gray(package_folder(package) / path)
