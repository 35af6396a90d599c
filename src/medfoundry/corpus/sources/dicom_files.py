"""DICOM images that ship inside packages, decoded by medfoundry's DICOM reader.

Pixels go through ``medfoundry.data.dicom.read_dicom_image`` with ``auto`` intensity: the
Modality LUT (CT in HU), the header's window or VOI LUT (else the 0.5-99.5 percentiles),
MONOCHROME1 inverted, palette colour applied; enhanced multi-frame files take rescale and
window from their functional groups. Siemens mosaics (a volume's slices tiled in one frame) are
unpacked with nibabel's DICOM wrapper, reoriented to RAS+ with their affine, scaled between
their 0.5th and 99.5th percentiles and cut in three planes like any volume (``volume_plane``
and ``slice_position`` labels too).

Each frame gives a whole view and tiles at two scales (``views.image_views``).
Labels: ``dicom_modality`` and ``dicom_body_part`` from the header (``labels.dicom_header``);
CT also ``ct_tissue``, from the HU of every pixel (``labels.ct_tissue``). Groups: the file's
``PatientID`` (else the file), so images of one patient never straddle splits.

Files are listed one per distinct image (``DICOM_FILES``): re-encodings of the same pixels, test
patterns (SMPTE, LUT tests), tiny or all-zero test stubs, phantoms, images without a modality of
``MODALITY_CLASSES`` (SEG, RT dose, secondary capture) and deid-data's drawings labelled CT are
left out.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_modality_lut

from medfoundry.corpus.image import CorpusImage, Label
from medfoundry.corpus.labels.ct_tissue import ct_tissue_mask
from medfoundry.corpus.labels.dicom_header import body_part_class, modality_class
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources.slicing import labelled_slices, volume_to_uint8
from medfoundry.corpus.views import image_views
from medfoundry.data.dicom import frame_header, read_dicom_header, read_dicom_image
from medfoundry.data.intensity import AutoIntensity
from medfoundry.data.volumes import to_canonical
from medfoundry.errors import DataError

__all__ = ["DICOM_FILES", "DicomFile", "dicom_images"]


@dataclass(frozen=True)
class DicomFile:
    """One packaged DICOM file: path below the package's data folder, which frames to use."""

    path: str
    frame_step: int = 1
    mosaic: bool = False


DICOM_FILES: dict[str, tuple[str, tuple[DicomFile, ...]]] = {
    # source -> (data folder inside the package, files)
    "pydicom": (
        "data/test_files",
        (
            DicomFile("CT_small.dcm"),
            DicomFile("J2K_pixelrep_mismatch.dcm"),  # a CT head of another patient than 693
            DicomFile("MR_small.dcm"),
            DicomFile("examples_overlay.dcm"),
            DicomFile("examples_palette.dcm"),
            DicomFile("examples_rgb_color.dcm"),
            DicomFile("examples_ybr_color.dcm", frame_step=10),  # a 30-frame cine loop
        ),
    ),
    "pydicom_data": (
        "data",
        (
            DicomFile("RG1_UNCR.dcm"),  # CR chest, MONOCHROME1
            DicomFile("RG3_UNCR.dcm"),  # CR extremity, MONOCHROME1
            DicomFile("MR2_UNCR.dcm"),
            DicomFile("emri_small.dcm"),  # 10 MR head slices
            DicomFile("693_UNCR.dcm"),
            DicomFile("explicit_VR-UN.dcm"),
            DicomFile("bad_sequence.dcm"),  # CT neck, JPEG lossless (needs pylibjpeg-libjpeg)
            DicomFile("eCT_Supplemental.dcm"),  # enhanced CT, 2 frames
            DicomFile("MR-SIEMENS-DICOM-WithOverlays.dcm"),
            DicomFile("OBXXXX1A_2frame.dcm"),
            DicomFile("US1_UNCR.dcm"),
            DicomFile("color-px.dcm"),
            DicomFile("color3d_jpeg_baseline.dcm", frame_step=20),  # a 120-frame cine loop
            DicomFile("gdcm-US-ALOKA-16.dcm"),
            DicomFile("JPEG2000_UNC.dcm"),  # NM whole body
            DicomFile("JPGLosslessP14SV1_1s_1f_8b.dcm"),
        ),
    ),
    "deid_data": (
        "data",
        (
            DicomFile("animals/cat.dcm"),
            DicomFile("ultrasounds/GREYSCALE_IMAGE.dcm"),
            DicomFile("ultrasounds/RGB_IMAGE.dcm"),
            DicomFile("ultrasounds/ultrasound-multiframe.dcm", frame_step=10),
        ),
    ),
    "heudiconv": (
        "tests/data",
        (
            # its other files are a phantom (PHA_S, scout rings), noise or phase maps of it
            DicomFile("axasc35.dcm", mosaic=True),
            # the other two b0 volumes of this series repeat the first one's anatomy
            DicomFile("b0dwiForFmap/b0dwi_for_fmap+00001.dcm", mosaic=True),
        ),
    ),
    "pynetdicom": ("tests/dicom_files", (DicomFile("RTImageStorage.dcm"),)),
    # nibabel's other DICOMs hold all-zero pixel data (test stubs: 0.dcm, decimal_rescale,
    # siemens_dwi_*, philips_mprage)
    "nibabel": ("nicom/tests/data", (DicomFile("slicethickness_empty_string.dcm"),)),
}


def dicom_images(source: str, folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Every listed DICOM file of ``source`` (a key of ``DICOM_FILES``) as labelled images."""
    subfolder, files = DICOM_FILES[source]
    for entry in files:
        path = folder / subfolder / entry.path
        if not path.is_file():
            raise DataError(f"{path}: expected packaged DICOM file is missing; reinstall its package")
        header = read_dicom_header(path)
        modality = modality_class(header)
        if modality is None:
            raise DataError(f"{path}: modality {header.get('Modality')!r} is not a corpus class")
        labels: dict[str, Label] = {"dicom_modality": modality}
        body_part = body_part_class(header)
        if body_part is not None:
            labels["dicom_body_part"] = body_part
        name = Path(entry.path).stem.replace("+", "_").replace(".", "_")[:48]
        group = f"{source}/{str(header.get('PatientID', '') or name).strip()}"
        if entry.mosaic:
            yield from _mosaic_images(source, name, path, group, labels, settings)
            continue
        for frame_name, pixels, hu in _frames(path, header, entry.frame_step):
            yield from _views(source, f"{name}{frame_name}", pixels, hu, group, labels, settings.tile_size)


def _frames(
    path: Path, header: pydicom.Dataset, step: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray | None]]:
    """``(name suffix, uint8 pixels, HU or None)`` of every ``step``-th frame."""
    count = int(header.get("NumberOfFrames", 1) or 1)
    dataset = pydicom.dcmread(path) if header.get("Modality") == "CT" else None
    for frame in range(0, count, step):
        index = frame if count > 1 else None
        unit = read_dicom_image(path, index, AutoIntensity())
        pixels = (unit * 255).round().astype(np.uint8)
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
        hu = None
        if dataset is not None:
            stored = dataset.pixel_array[frame] if count > 1 else dataset.pixel_array
            hu = np.asarray(apply_modality_lut(stored, frame_header(dataset, frame)), np.float32)
        yield (f"_f{frame:03d}" if count > 1 else ""), pixels, hu


def _mosaic_images(
    source: str, name: str, path: Path, group: str, labels: dict[str, Label], settings: CorpusSettings
) -> Iterator[CorpusImage]:
    """A Siemens mosaic as the volume it is: cut in three planes (``sources.slicing``)."""
    with warnings.catch_warnings():  # nibabel calls its DICOM wrappers experimental on import
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import dicomwrappers

        wrapper = dicomwrappers.wrapper_from_data(pydicom.dcmread(path))
        volume = to_canonical(np.asarray(wrapper.get_data(), np.float32), wrapper.affine)
    data = np.asarray(volume.data, np.float32)
    foreground = data > 0.1 * np.percentile(data, 99)
    for _, image in labelled_slices(
        source, name, volume_to_uint8(data), zooms=volume.zooms, settings=settings, foreground=foreground
    ):
        image.labels.update(labels)
        image.group = group
        yield image


def _views(
    source: str,
    name: str,
    pixels: np.ndarray,
    hu: np.ndarray | None,
    group: str,
    labels: dict[str, Label],
    tile: int,
) -> Iterator[CorpusImage]:
    """The views of one frame (``views.image_views``); CT views also get ``ct_tissue``."""
    mask = None if hu is None else ct_tissue_mask(hu)
    for suffix, view, view_mask in image_views(pixels, tile, mask):
        view_labels = dict(labels)
        if view_mask is not None:
            view_labels["ct_tissue"] = view_mask
        yield CorpusImage(source, f"{name}{suffix}", view, group, view_labels)
