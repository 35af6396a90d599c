"""3D volumes (NIfTI, NRRD; DICOM series via ``dicom``) sliced into 2D samples.

Every volume is first reoriented to the closest canonical (RAS+) orientation with nibabel, so
that ``axial``, ``coronal`` and ``sagittal`` mean the same for every file whatever its storage
order. Slices are then shown the radiological way (as a scanner console does): axial and
coronal slices with the patient's right on the image's left, the anterior (axial) or superior
(coronal, sagittal) side up. NRRD files in LPS space are converted to RAS first.

Intensity: ``percentile`` and ``minmax`` bounds come from the whole volume (so every slice of a
scan is scaled alike); ``window`` needs values in HU (CT). ``spacing_mm`` resamples each slice
in-plane (linear for images, nearest for labels) with scipy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import nibabel as nib
import nrrd
import numpy as np
from scipy import ndimage

from medfoundry.data.intensity import (
    PercentileIntensity,
    apply_windows,
    check_values,
    intensity_bounds,
    scale_to_unit,
)
from medfoundry.data.masks import MaskMapping
from medfoundry.data.record import Pixels, Record
from medfoundry.errors import DataError

__all__ = [
    "AXES",
    "Axis",
    "Volume",
    "VolumeLoader",
    "VolumeSliceReader",
    "canonical_shape",
    "load_volume",
    "plane_spacing",
    "reoriented_shape",
    "select_slices",
    "to_canonical",
    "volume_slice",
]

Axis = Literal["axial", "coronal", "sagittal"]
AXES: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}
"""Canonical (RAS+) array axis each slicing direction runs along."""
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DEFAULT_PERCENTILE = PercentileIntensity()


class VolumeLoader(Protocol):
    """Loads the volume a record names (e.g. a DICOM series by its first file)."""

    def __call__(self, path: Path) -> Volume: ...

    def cache_key(self, signature: Callable[[Path], str]) -> str:
        """Fingerprint of every file the volumes come from."""
        ...


@dataclass
class Volume:
    """A volume in canonical RAS+ orientation.

    Attributes:
        data: ``(X, Y, Z)`` array (values as stored, after any scaling the file declares).
        zooms: Voxel sizes in mm along X, Y, Z.
        extra: Format details a reader needs later (e.g. the DICOM header for its VOI window).
        affine: The stored voxel grid's voxel-to-RAS affine, before reorientation (to write
            results, e.g. predicted labels, back onto the input's grid).
    """

    data: np.ndarray
    zooms: tuple[float, float, float]
    extra: Any = None
    affine: np.ndarray | None = None


def to_canonical(data: np.ndarray, affine: np.ndarray) -> Volume:
    """Reorient ``(I, J, K)`` data with a voxel-to-RAS ``affine`` to canonical RAS+."""
    image = nib.as_closest_canonical(nib.Nifti1Image(data, affine))
    zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
    return Volume(np.asanyarray(image.dataobj), zooms, affine=np.asarray(affine, float))  # type: ignore[arg-type]


def load_volume(path: Path, volume_index: int | None) -> Volume:
    """Read a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) volume.

    Args:
        path: The file.
        volume_index: Which 3D volume of a 4D file (e.g. a time point); required for 4D files.

    Raises:
        DataError: unreadable file, not 3D (or 4D with ``volume_index``), index out of range.
    """
    try:
        if path.suffix.lower() in (".nrrd", ".nhdr"):
            data, header = nrrd.read(str(path))
            affine = _nrrd_affine(header, data.ndim)
        else:
            image: Any = nib.load(path)  # a spatial image (typed as its file-based base class)
            data, affine = np.asanyarray(image.dataobj), image.affine
    except DataError:
        raise
    except Exception as e:  # nibabel / pynrrd raise many types for corrupt files
        raise DataError(f"{path}: cannot read volume ({type(e).__name__}: {str(e)[:120]})") from None
    data = _pick_3d(data, volume_index, path)
    return to_canonical(data, affine)


def canonical_shape(path: Path, volume_index: int | None = None) -> tuple[int, int, int]:
    """Shape of a volume after canonical reorientation, from its header only.

    Raises:
        DataError: unreadable header, or not 3D (4D needs ``volume_index`` within range).
    """
    try:
        if path.suffix.lower() in (".nrrd", ".nhdr"):
            header = nrrd.read_header(str(path))
            shape, affine = tuple(int(s) for s in header["sizes"]), _nrrd_affine(header, len(header["sizes"]))
        else:
            image: Any = nib.load(path)
            shape, affine = image.shape, image.affine
    except Exception as e:  # nibabel / pynrrd raise many types for corrupt files
        raise DataError(f"{path}: cannot read volume header ({type(e).__name__}: {str(e)[:120]})") from None
    _check_dimensions(tuple(int(n) for n in shape), volume_index, path)
    return reoriented_shape(shape, affine)


def reoriented_shape(shape: Sequence[int], affine: np.ndarray) -> tuple[int, int, int]:
    """The first three dimensions of ``shape`` in canonical (RAS+) order."""
    order = nib.orientations.io_orientation(affine)[:, 0].astype(int)
    canonical = [0, 0, 0]
    for axis, target in enumerate(order):
        canonical[target] = int(shape[axis])
    return canonical[0], canonical[1], canonical[2]


def volume_slice(volume: np.ndarray, axis: str, index: int) -> np.ndarray:
    """A canonical volume's slice in radiological display orientation: ``(rows, cols, ...)``."""
    plane = np.take(volume, index, axis=AXES[axis])
    # canonical in-plane axes are (right, anterior/superior); flip both so that rows run from
    # anterior/superior down and columns from the patient's right to left
    return np.ascontiguousarray(np.flip(np.swapaxes(plane, 0, 1), axis=(0, 1)))


def plane_spacing(zooms: tuple[float, float, float], axis: str) -> tuple[float, float]:
    """``(row_mm, col_mm)`` of a slice from ``volume_slice``."""
    first, second = [z for i, z in enumerate(zooms) if i != AXES[axis]]
    return second, first


@dataclass(eq=False)
class VolumeSliceReader:
    """Reads slices of volumes (``record.image``) and of their label volumes (``record.mask``).

    Args:
        axis: Slicing direction.
        spacing_mm: In-plane ``(row, col)`` spacing to resample to; ``None`` keeps the file's.
        intensity: The task's intensity (``auto`` means ``percentile``).
        mask_mapping: Stored label values -> class indices.
        volume_index: 3D volume of a 4D file.
        load: Loads ``record.image``; default ``load_volume`` (the DICOM source passes its
            series loader).
    """

    axis: str
    spacing_mm: tuple[float, float] | None
    intensity: Any
    mask_mapping: MaskMapping | None
    volume_index: int | None = None
    load: VolumeLoader | None = None
    # records come volume by volume: remembering the last volume reads each file once
    _image: tuple[Path, Volume, Any] | None = field(default=None, init=False, repr=False)
    _labels: tuple[Path, np.ndarray, tuple[float, float, float]] | None = field(
        default=None, init=False, repr=False
    )
    # a volume that cannot be read fails every one of its slices alike: read it once
    _failed: dict[Path, list[str]] = field(default_factory=dict, init=False, repr=False)

    def read(self, record: Record) -> Pixels:
        assert record.frame is not None, "volume records always carry their slice index"
        volume, bounds = self._volume(record.image)
        image = self._scale(volume_slice(volume.data, self.axis, record.frame), volume, bounds, record.where)
        mask = None
        if record.mask is not None:
            mask = self._mask_slice(self._label_volume(record.mask, volume, record.image), record)
        if self.spacing_mm is not None:
            factors = self._zoom_factors(volume.zooms)
            image = ndimage.zoom(image, (*factors, 1), order=1, mode="nearest", grid_mode=True)
            image = np.clip(image, 0, 1).astype(np.float32)
            mask = _zoom_mask(mask, factors) if mask is not None else None
        return Pixels(image, mask)

    def read_mask(self, record: Record) -> np.ndarray | None:
        """The record's label slice as class indices, as ``read`` gives it, without reading the
        image volume (for listing the classes a slice shows)."""
        if record.mask is None:
            return None
        labels, zooms = self._load_labels(record.mask)
        mask = self._mask_slice(labels, record)
        return _zoom_mask(mask, self._zoom_factors(zooms)) if self.spacing_mm is not None else mask

    def volume(self, path: Path) -> Volume:
        """The canonical volume whose slices ``read`` cuts (loaded once, then remembered)."""
        return self._volume(path)[0]

    def cache_key(self, signature: Callable[[Path], str]) -> str:
        files = self.load.cache_key(signature) if self.load is not None else ""
        return repr((self.axis, self.spacing_mm, self.intensity, self.mask_mapping, self.volume_index, files))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_image": None, "_labels": None, "_failed": {}}  # no volumes sent to workers

    @property
    def _intensity(self) -> Any:
        return _DEFAULT_PERCENTILE if self.intensity.type == "auto" else self.intensity

    def _volume(self, path: Path) -> tuple[Volume, Any]:
        if self._image is None or self._image[0] != path:
            volume = self._once(path, lambda: self._checked(path))
            intensity = self._intensity
            bounds = (
                intensity_bounds(volume.data, intensity)
                if intensity.type in ("minmax", "percentile")
                else None
            )
            self._image = (path, volume, bounds)
        return self._image[1], self._image[2]

    def _label_volume(self, path: Path, image: Volume, image_path: Path) -> np.ndarray:
        labels, _ = self._load_labels(path)
        if labels.shape != image.data.shape:
            raise DataError(
                f"{path}: label volume shape {labels.shape} differs from image {image_path} "
                f"shape {image.data.shape} (after reorientation to RAS)"
            )
        return labels

    def _load_labels(self, path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
        if self._labels is None or self._labels[0] != path:
            volume = self._once(path, lambda: _integer_labels(path))
            self._labels = (path, volume.data, volume.zooms)
        return self._labels[1], self._labels[2]

    def _checked(self, path: Path) -> Volume:
        volume = self.load(path) if self.load else load_volume(path, self.volume_index)
        check_values(volume.data, str(path))  # once per volume, not once per slice
        return volume

    def _once(self, path: Path, load: Callable[[], Volume]) -> Volume:
        """``load()``, remembering a failure so that the other slices fail without rereading."""
        if path in self._failed:
            raise DataError(self._failed[path])
        try:
            return load()
        except DataError as e:
            self._failed[path] = e.problems
            raise

    def _scale(self, values: np.ndarray, volume: Volume, bounds: Any, where: str) -> np.ndarray:
        intensity = self._intensity
        if intensity.type == "window":
            return apply_windows(values, intensity)
        if intensity.type == "voi" and volume.extra is not None:
            voi: np.ndarray = volume.extra(values)  # a DICOM series' own VOI (see ``dicom``)
            return voi
        return scale_to_unit(values, intensity, where=where, bounds=bounds)

    def _mask_slice(self, labels: np.ndarray, record: Record) -> np.ndarray:
        assert record.frame is not None, "volume records always carry their slice index"
        mask = volume_slice(labels, self.axis, record.frame).astype(np.int64)
        if self.mask_mapping is not None:
            mask = self.mask_mapping.apply(mask, f"{record.mask} [{record.frame}]")
        return mask

    def _zoom_factors(self, zooms: tuple[float, float, float]) -> tuple[float, float]:
        """In-plane factors from the file's spacing to ``spacing_mm``."""
        assert self.spacing_mm is not None
        row_mm, col_mm = plane_spacing(zooms, self.axis)
        return row_mm / self.spacing_mm[0], col_mm / self.spacing_mm[1]


def _integer_labels(path: Path) -> Volume:
    volume = load_volume(path, None)
    labels = volume.data
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{path}: label volume holds non-integer values; labels are class indices")
    return volume


def _zoom_mask(mask: np.ndarray, factors: tuple[float, float]) -> np.ndarray:
    zoomed: np.ndarray = ndimage.zoom(mask, factors, order=0, mode="nearest", grid_mode=True)
    return zoomed


def _pick_3d(data: np.ndarray, volume_index: int | None, path: Path) -> np.ndarray:
    _check_dimensions(data.shape, volume_index, path)
    if data.ndim == 3:
        return data
    return data[..., 0 if data.shape[3] == 1 and volume_index is None else volume_index]


def _check_dimensions(shape: tuple[int, ...], volume_index: int | None, path: Path) -> None:
    """A 3D volume, or a 4D file with a ``volume_index`` in range (a trailing axis of 1 needs none)."""
    if len(shape) == 3 and volume_index in (None, 0):
        return
    if len(shape) == 4:
        if volume_index is None and shape[3] == 1:
            return
        if volume_index is None:
            raise DataError(
                f"{path}: the file is 4D (shape {shape}); set source.volume_index (predict: "
                "--volume-index) to pick a 3D volume"
            )
        if not 0 <= volume_index < shape[3]:
            raise DataError(f"{path}: volume_index {volume_index} is outside 0..{shape[3] - 1}")
        return
    raise DataError(f"{path}: expected a 3D volume, got shape {shape}")


def _nrrd_affine(header: dict[str, Any], ndim: int) -> np.ndarray:
    """NRRD ``space directions`` / ``space origin`` as a voxel-to-RAS affine."""
    affine = np.eye(4)
    directions = header.get("space directions")
    if directions is not None:
        spatial = [np.asarray(d, float) for d in directions if d is not None and not np.any(np.isnan(d))]
        affine[:3, :3] = np.stack(spatial[:3], axis=1)
        affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), float)
    elif "spacings" in header:
        affine[:3, :3] = np.diag([float(s) for s in header["spacings"][:3]])
    space = str(header.get("space", "")).lower()
    return LPS_TO_RAS @ affine if space in ("left-posterior-superior", "lps") else affine


def select_slices(
    labels: np.ndarray, axis: str, mode: str, *, background_ratio: float, background_values: set[int]
) -> list[int]:
    """Indices of the slices to use along ``axis`` of a canonical label volume.

    Args:
        labels: ``(X, Y, Z)`` stored label values.
        axis: Slicing direction.
        mode: ``all``, or ``foreground``: slices with a voxel outside ``background_values``.
        background_ratio: With ``foreground``, add this many background slices per foreground
            slice, evenly spaced through the volume (deterministic, so caches stay valid).
        background_values: Stored values that are background (or unlabelled).

    Returns:
        Sorted slice indices.
    """
    count = labels.shape[AXES[axis]]
    if mode == "all":
        return list(range(count))
    other = tuple(a for a in range(3) if a != AXES[axis])
    foreground = np.any(~np.isin(labels, list(background_values)), axis=other)
    chosen = set(np.flatnonzero(foreground).tolist())
    background = np.flatnonzero(~foreground)
    wanted = min(len(background), round(background_ratio * len(chosen)))
    if wanted:
        chosen |= set(background[np.linspace(0, len(background) - 1, wanted).round().astype(int)].tolist())
    return sorted(chosen)
