"""Volumes without tissue labels, cut into slices labelled by plane and slice position.

- ``ct_brain_atlas``: totalsegmentator's CT brain atlas (202x202x179 at 1 mm; a skull-stripped
  brain, 0 outside it), shown in the brain window (level 40, width 80 HU). Its values are not
  full-range HU (no air, no skull), so the CT tissue rule is not applied to it.
- ``nibabel``: nibabel's test volumes that are real scans: ``anatomical.nii`` (T1, 33x41x25 at
  2 mm) and the first volume of ``example4d.nii.gz`` (EPI, 128x96x24).
- ``dipy``: dipy's test volumes: ``S0_10slices`` (b=0 diffusion image, 10 thick axial slices:
  axial only), ``aniso_vox`` (58x58x24, 4x4x5 mm), ``test_piesno`` (96x96x14, axial only by
  anisotropy) and ``t1_coronal_slice.npy`` (one 256x256 coronal T1 slice).

MR volumes are scaled to 8 bits between their 0.5th and 99.5th percentiles; the foreground
(which decides the near-empty slices) is every voxel above 10 % of the 99th percentile.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from medfoundry.corpus.geometry import pad_square
from medfoundry.corpus.image import CorpusImage
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources.slicing import labelled_slices, volume_to_uint8
from medfoundry.data.intensity import WINDOW_PRESETS_HU, linear_to_unit
from medfoundry.data.volumes import load_volume

__all__ = ["ct_atlas_images", "dipy_images", "nibabel_volume_images"]


def mr_volume_images(
    source: str, name: str, path: Path, *, settings: CorpusSettings, volume_index: int | None = None
) -> Iterator[CorpusImage]:
    """Plane- and position-labelled slices of one MR volume file."""
    volume = load_volume(path, volume_index)
    data = np.asarray(volume.data, np.float32)
    foreground = data > 0.1 * np.percentile(data, 99)
    for _, image in labelled_slices(
        source, name, volume_to_uint8(data), zooms=volume.zooms, settings=settings, foreground=foreground
    ):
        yield image


def ct_atlas_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Slices of the CT brain atlas in the brain window."""
    volume = load_volume(folder / "resources" / "ct_brain_atlas_1mm.nii.gz", None)
    level, width = WINDOW_PRESETS_HU["brain"]
    hu = np.asarray(volume.data, np.float32)
    image = (linear_to_unit(hu, level - width / 2, level + width / 2) * 255).round().astype(np.uint8)
    for _, corpus_image in labelled_slices(
        "ct_brain_atlas", "ct_brain_atlas", image, zooms=volume.zooms, settings=settings, foreground=hu > 0
    ):
        yield corpus_image


def nibabel_volume_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """nibabel's real test volumes (its DICOM files are read by ``dicom_files``)."""
    data = folder / "tests" / "data"
    yield from mr_volume_images("nibabel", "anatomical", data / "anatomical.nii", settings=settings)
    yield from mr_volume_images(
        "nibabel", "example4d", data / "example4d.nii.gz", settings=settings, volume_index=0
    )


def dipy_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """dipy's test volumes and its coronal T1 slice."""
    files = folder / "data" / "files"
    yield from mr_volume_images(
        "dipy", "S0_10slices", files / "S0_10slices.nii.gz", settings=settings, volume_index=0
    )
    yield from mr_volume_images("dipy", "aniso_vox", files / "aniso_vox.nii.gz", settings=settings)
    yield from mr_volume_images("dipy", "test_piesno", files / "test_piesno.nii.gz", settings=settings)
    t1 = np.load(files / "t1_coronal_slice.npy")
    yield CorpusImage(
        source="dipy",
        name="t1_coronal_slice",
        pixels=pad_square(volume_to_uint8(t1.astype(np.float32)))[0],
        group="dipy/t1_coronal_slice",
        labels={"volume_plane": "coronal"},
    )
