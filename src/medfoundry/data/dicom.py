"""DICOM: single images (CR, DX, frames of multi-frame files) and CT/MR series read as volumes.

Intensity, following the DICOM pixel pipeline (PS3.4 N.2) with pydicom's own functions:

1. the Modality LUT (``RescaleSlope`` / ``RescaleIntercept`` or a LUT): CT values become HU;
2. ``window`` (CT only): the task's windows in HU; ``voi`` (and ``auto``): the header's VOI
   LUT or window; without either, the 0.5-99.5 percentiles of the image (of the volume, for
   series); ``range``: stored values / ``2^BitsStored - 1``; ``minmax`` / ``percentile``: of the
   Modality LUT output;
3. ``MONOCHROME1`` (where low values are white, as on many CR/DX plates) is inverted, so that
   every image shows dense tissue bright (not for windows: HU already fix the meaning).

Enhanced multi-frame objects (enhanced CT / MR, PS3.3 C.7.6.16) keep rescale and window in
functional groups rather than at the top level, where pydicom's LUT functions look: a frame's
own groups, else the shared ones, are lifted to the top level before steps 1-2.

Colour images (RGB, YBR, which pydicom converts to RGB, and palette colour) are scaled by their
dtype range. Compressed files need pydicom's optional decoders (e.g. ``pip install
pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg``); the error names the transfer syntax.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.errors
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from medfoundry.data.intensity import (
    PercentileIntensity,
    RangeIntensity,
    apply_windows,
    intensity_bounds,
    linear_to_unit,
    scale_to_unit,
)
from medfoundry.data.volumes import LPS_TO_RAS, Volume, reoriented_shape, to_canonical
from medfoundry.errors import DataError

__all__ = [
    "DicomSeriesLoader",
    "frame_header",
    "read_dicom_header",
    "read_dicom_image",
    "series_shape",
    "sort_series",
]

_FALLBACK = PercentileIntensity()


def read_dicom_header(path: Path) -> pydicom.Dataset:
    """The header (no pixel data) of a DICOM file.

    Raises:
        DataError: the file is not DICOM or is damaged.
    """
    try:
        return _dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises many types for damaged files
        raise DataError(f"{path}: cannot read DICOM header ({type(e).__name__}: {str(e)[:120]})") from None


def read_dicom_image(path: Path, frame: int | None, intensity: Any) -> np.ndarray:
    """Decode one DICOM image (or one frame of a multi-frame file).

    Args:
        path: The file.
        frame: Frame index of a multi-frame file; ``None`` for single-frame files.
        intensity: The task's intensity setting.

    Returns:
        ``(H, W, C)`` float32 in [0, 1]; ``C`` 3 for colour or CT windows, else 1.

    Raises:
        DataError: unreadable or truncated file, missing decoder, bad frame, or windows on a
            modality other than CT.
    """
    ds, pixels = _read_pixels(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    where = f"{path} [{frame}]" if frame is not None else str(path)
    if frames > 1:
        if frame is None or not 0 <= frame < frames:
            raise DataError(f"{where}: the file has {frames} frames; a frame index 0..{frames - 1} is needed")
        pixels = pixels[frame]
    elif frame not in (None, 0):
        raise DataError(f"{where}: the file has one frame")
    ds = frame_header(ds, frame or 0)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    if pixels.ndim == 3:
        if intensity.type in ("window", "voi"):
            raise DataError(
                f"{where}: intensity '{intensity.type}' needs a grayscale image, this is {photometric}"
            )
        return scale_to_unit(pixels, _or_range(intensity), where=where)
    if intensity.type == "range":
        image = _bits_range(pixels, ds)
    else:
        values = apply_modality_lut(pixels, ds)
        if intensity.type == "window":
            _require_ct(ds, where)
            return apply_windows(values, intensity)
        image = (
            _voi(values, ds, where)
            if intensity.type in ("auto", "voi")
            else scale_to_unit(values, intensity, where=where)
        )
    return 1.0 - image if photometric == "MONOCHROME1" else image


def sort_series(headers: list[tuple[Path, pydicom.Dataset]]) -> list[Path] | None:
    """The files of one series in slice order, or ``None`` when they do not form a volume.

    A volume needs two or more single-frame slices with the same size and orientation and
    distinct positions (``ImagePositionPatient``); they are sorted along the slice normal.
    """
    if len(headers) < 2:
        return None
    try:
        orientation = np.array([float(v) for v in headers[0][1].ImageOrientationPatient])
        shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in headers}
        same = all(
            np.allclose([float(v) for v in ds.ImageOrientationPatient], orientation, atol=1e-4)
            for _, ds in headers
        )
        frames = {int(ds.get("NumberOfFrames", 1) or 1) for _, ds in headers}
        normal = np.cross(orientation[:3], orientation[3:])
        depth = [float(np.dot(normal, [float(v) for v in ds.ImagePositionPatient])) for _, ds in headers]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(shapes) != 1 or not same or frames != {1} or len(set(np.round(depth, 4))) != len(depth):
        return None
    return [headers[i][0] for i in np.argsort(depth)]


@dataclass(frozen=True)
class DicomSeriesLoader:
    """Loads a series as a canonical volume; records name the series by its first file.

    Args:
        series: First file -> all files of the series, in slice order.
    """

    series: dict[Path, tuple[Path, ...]]

    def __call__(self, path: Path) -> Volume:
        files = self.series[path]
        datasets, slices = zip(*(_read_pixels(f) for f in files), strict=True)
        values = np.stack(
            [apply_modality_lut(s, ds) for ds, s in zip(datasets, slices, strict=True)], axis=-1
        )
        volume = to_canonical(values.astype(np.float32).transpose(1, 0, 2), _series_affine(datasets))
        head = datasets[0]
        photometric = str(head.get("PhotometricInterpretation", "MONOCHROME2"))
        fallback = intensity_bounds(volume.data, _FALLBACK)
        volume.extra = _SeriesVoi(head, photometric == "MONOCHROME1", fallback, str(path))
        return volume

    def cache_key(self, signature: Callable[[Path], str]) -> str:
        return repr(sorted((str(k), [signature(f) for f in v]) for k, v in self.series.items()))


@dataclass
class _SeriesVoi:
    """The first slice's VOI applied to any slice of the volume (windowing is per value);
    without one, the volume's percentiles."""

    header: pydicom.Dataset
    invert: bool
    fallback: tuple[float, float]
    where: str

    def __call__(self, values: np.ndarray) -> np.ndarray:
        image = _voi(values, self.header, self.where, self.fallback)
        return 1.0 - image if self.invert else image


FRAME_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")
"""Functional groups that hold the Modality LUT (rescale) and the VOI (window) of a frame."""


def frame_header(ds: pydicom.Dataset, frame: int) -> pydicom.Dataset:
    """The header as pydicom's LUT functions need it for ``frame``: rescale and window of an
    enhanced multi-frame object lifted from its functional groups (the frame's own over the
    shared ones) to the top level; ``ds`` itself when it has no such groups."""
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    groups = [*shared[:1], *per_frame[frame : frame + 1]]
    lifted = [getattr(g, name)[0] for g in groups for name in FRAME_GROUPS if getattr(g, name, None)]
    if not lifted:
        return ds
    flat = pydicom.Dataset()
    for element in ds:
        if element.keyword not in (
            "PixelData",
            "SharedFunctionalGroupsSequence",
            "PerFrameFunctionalGroupsSequence",
        ):
            flat.add(element)
    for item in lifted:  # shared first, then the frame's own: the frame's win
        for element in item:
            flat[element.tag] = element
    return flat


def _dcmread(path: Path, *, stop_before_pixels: bool = False) -> pydicom.Dataset:
    """``pydicom.dcmread``; a file written without the 128-byte preamble and ``DICM`` marker
    (older writers, ACR-NEMA) is read as its elements, if they describe an image.

    Raises:
        Exception: whatever pydicom raises for a file that is neither.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError:
        forced = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, force=True)
        if "SOPClassUID" not in forced and not ("Rows" in forced and "Columns" in forced):
            raise
        if "TransferSyntaxUID" not in getattr(forced, "file_meta", {}):  # raw elements: as read
            implicit, little = forced.original_encoding
            forced.file_meta = FileMetaDataset()
            forced.file_meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian
                if implicit
                else ExplicitVRLittleEndian
                if little
                else ExplicitVRBigEndian
            )
        return forced


def _read_pixels(path: Path) -> tuple[pydicom.Dataset, np.ndarray]:
    try:
        ds = _dcmread(path)
    except Exception as e:  # pydicom raises many types for damaged files
        raise DataError(f"{path}: cannot read DICOM ({type(e).__name__}: {str(e)[:120]})") from None
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data (SOP class {ds.get('SOPClassUID', '?')})")
    try:
        return ds, ds.pixel_array
    except Exception as e:  # truncated data, missing decoders, bad attributes
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = f" (transfer syntax {syntax.name})" if syntax is not None else ""
        raise DataError(
            f"{path}: cannot decode DICOM pixels{hint}: {type(e).__name__}: {str(e)[:160]}"
        ) from None


def _voi(
    values: np.ndarray, ds: pydicom.Dataset, where: str, fallback: tuple[float, float] | None = None
) -> np.ndarray:
    """The header's VOI LUT or window, scaled to [0, 1]; percentiles (``fallback`` bounds, or the
    image's) when there is none."""
    if "VOILUTSequence" in ds:
        depth = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        integral = values.astype(np.int64) if np.array_equal(values, np.round(values)) else values
        out = apply_voi_lut(integral, ds, prefer_lut=True).astype(np.float32)
        return linear_to_unit(out, 0, 2**depth - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        # apply_windowing maps onto the stored value range; extremes tell that range
        low, high = apply_voi_lut(np.array([-1e12, 1e12]), ds, prefer_lut=False)
        out = apply_voi_lut(values.astype(np.float64), ds, prefer_lut=False)
        return linear_to_unit(out, low, high)
    return scale_to_unit(values, _FALLBACK, where=where, bounds=fallback)


def _bits_range(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    bits = int(ds.get("BitsStored", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return linear_to_unit(pixels, low, high)


def _or_range(intensity: Any) -> Any:
    return RangeIntensity() if intensity.type == "auto" else intensity


def _require_ct(ds: pydicom.Dataset, where: str) -> None:
    modality = str(ds.get("Modality", "?"))
    if modality != "CT":
        raise DataError(f"{where}: CT windows (HU) need a CT image; this is modality {modality}")


def series_shape(headers: list[pydicom.Dataset]) -> tuple[int, int, int]:
    """Canonical (RAS+) shape of a sorted series, from its headers."""
    shape = (int(headers[0].Columns), int(headers[0].Rows), len(headers))
    return reoriented_shape(shape, _series_affine(headers))


def _series_affine(datasets: Sequence[pydicom.Dataset]) -> np.ndarray:
    """Voxel (column, row, slice) -> RAS from the DICOM geometry (PS3.3 C.7.6.2.1.1).

    Written out because nibabel's DICOM support covers single files and Siemens mosaics only.
    """
    first, last = datasets[0], datasets[-1]
    orientation = np.array([float(v) for v in first.ImageOrientationPatient])
    row_mm, col_mm = (float(v) for v in first.PixelSpacing)
    start = np.array([float(v) for v in first.ImagePositionPatient])
    end = np.array([float(v) for v in last.ImagePositionPatient])
    affine = np.eye(4)
    affine[:3, 0] = orientation[:3] * col_mm  # along a row: increasing column index
    affine[:3, 1] = orientation[3:] * row_mm  # down a column: increasing row index
    affine[:3, 2] = (end - start) / (len(datasets) - 1)
    affine[:3, 3] = start
    return LPS_TO_RAS @ affine
