"""Every DICOM file the corpus reads decodes correctly through medfoundry's reader.

Checked against pydicom's raw pixels: CT values are HU (the window cuts at the header's HU
bounds), MONOCHROME1 plates are inverted (dense tissue bright), VOI windows are applied, and no
image comes out empty. Mosaics are unpacked by nibabel into non-empty volumes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array

from medfoundry.corpus.sources import SOURCES
from medfoundry.corpus.sources.dicom_files import DICOM_FILES, DicomFile
from medfoundry.data.dicom import frame_header, read_dicom_image
from medfoundry.data.intensity import AutoIntensity

pytestmark = pytest.mark.slow

ENTRIES = [(source, entry) for source, (_, files) in DICOM_FILES.items() for entry in files]
NAMES = [f"{source}:{entry.path.split('/')[-1]}" for source, entry in ENTRIES]


def _path(source: str, entry: DicomFile) -> Path:
    folder = SOURCES[source].package.folder()
    assert folder is not None, f"{SOURCES[source].package.distribution} is not installed (make setup)"
    return folder / DICOM_FILES[source][0] / entry.path


@pytest.mark.parametrize(
    ("source", "entry"), ENTRIES, ids=[f"{s}:{e.path.split('/')[-1]}" for s, e in ENTRIES]
)
def test_every_listed_dicom_decodes_to_a_real_image(source: str, entry: DicomFile) -> None:
    path = _path(source, entry)
    ds = pydicom.dcmread(path, stop_before_pixels=not entry.mosaic)
    if entry.mosaic:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            from nibabel.nicom import dicomwrappers

            volume = np.asarray(dicomwrappers.wrapper_from_data(ds).get_data())
        assert volume.ndim == 3 and volume.shape[2] > 10 and volume.std() > 0
        return
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    raw = pixel_array(path, index=0 if frames > 1 else None)  # one frame: cine loops are long
    image = read_dicom_image(path, 0 if frames > 1 else None, AutoIntensity())
    assert image.shape[:2] == raw.shape[:2] and np.isfinite(image).all()
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0.02  # not blank
    if raw.ndim == 3 or ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        return
    header = frame_header(ds, 0)
    values = raw * float(header.get("RescaleSlope", 1)) + float(header.get("RescaleIntercept", 0))
    gray = image[..., 0]
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        assert np.corrcoef(values.ravel(), gray.ravel())[0, 1] < -0.5  # inverted: dense tissue bright
    else:
        assert np.corrcoef(values.ravel(), gray.ravel())[0, 1] > 0.5
    if "WindowCenter" in header and "VOILUTSequence" not in header:
        center, width = (float(np.atleast_1d(header[k].value)[0]) for k in ("WindowCenter", "WindowWidth"))
        below, above = values < center - 0.5 - (width - 1) / 2, values > center - 0.5 + (width - 1) / 2
        low, high = (0.0, 1.0) if ds.get("PhotometricInterpretation") != "MONOCHROME1" else (1.0, 0.0)
        assert np.allclose(gray[below], low) and np.allclose(gray[above], high)  # the header's window
    if ds.get("Modality") == "CT":
        assert values.min() < -500 and values.max() > 100  # HU: air around, tissue inside
