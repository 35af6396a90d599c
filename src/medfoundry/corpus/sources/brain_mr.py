"""Brain MR sources with tissue labels: the MNI152 template (nilearn) and neuropycon-data's subject.

- ``mni152``: nilearn's MNI ICBM152 2009a symmetric T1 template (an average of 152 subjects,
  197x233x189 at 1 mm) with its grey- and white-matter probability maps. Every non-empty slice
  in three planes: ``brain_tissue`` (``labels.brain_tissue``), ``volume_plane``,
  ``slice_position``; and patches of axial and coronal slices, centred on a brain voxel and
  labelled ``brain_region`` by the MNI octant of their centre: ``patch_size`` mm patches every
  ``patch_size / 2`` mm on every second slice, half-size patches without overlap on the slices
  between. Sagittal slices give no region patches: in the symmetric template the
  slices at x and -x are identical, so the hemisphere cannot be seen in them.
- ``neuropycon``: one subject's resting-state BOLD run (64x32x32, 88 volumes) with binary
  grey-matter, white-matter and CSF masks. Its temporal mean (volumes are 99.9 % correlated,
  so single time points would be near-copies) in three planes: ``bold_tissue``,
  ``volume_plane``, ``slice_position``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from medfoundry.corpus.geometry import foreground_box
from medfoundry.corpus.image import CorpusImage
from medfoundry.corpus.labels.brain_region import mni_octant
from medfoundry.corpus.labels.brain_tissue import tissue_from_masks, tissue_from_probabilities
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources.slicing import labelled_slices, volume_to_uint8
from medfoundry.errors import DataError

__all__ = ["mni152_images", "neuropycon_images"]

REGION_EVERY = 2
"""Brain-region patches are cut from every slice, alternating two patch sizes."""


def _canonical(path: Path) -> nib.Nifti1Image:
    if not path.is_file():
        raise DataError(f"{path}: expected packaged volume is missing; reinstall its package")
    image: nib.Nifti1Image = nib.as_closest_canonical(nib.load(path))
    return image


def _zooms(image: nib.Nifti1Image) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in image.header.get_zooms()[:3])
    return x, y, z


def coordinate_volumes(affine: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """World coordinates (mm) of every voxel: ``{"x_mm", "y_mm", "z_mm"}`` float32 volumes."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape[:3]], indexing="ij"), axis=-1)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    return {f"{axis}_mm": world[..., i].astype(np.float32) for i, axis in enumerate("xyz")}


def mni152_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Slices and region patches of the MNI152 template (see the module docstring)."""
    data = folder / "datasets" / "data"
    t1_image = _canonical(data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    t1 = np.asarray(t1_image.get_fdata(), np.float32)
    grey, white = (
        np.asarray(_canonical(data / f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz").get_fdata())
        / 255.0
        for k in ("gm", "wm")
    )  # the probability maps are stored as 0..255
    coords = coordinate_volumes(t1_image.affine, t1.shape)
    head = t1 > 0.1 * np.percentile(t1, 99)
    box = foreground_box(head, margin=2)
    t1_8 = volume_to_uint8(t1[box])
    brain = ((grey + white) > 0.5)[box]
    maps = {name: volume[box] for name, volume in coords.items()}
    maps["brain"] = brain.astype(np.uint8)
    tissue = tissue_from_probabilities(grey[box], white[box])
    for cut, image in labelled_slices(
        "mni152",
        "mni152",
        t1_8,
        zooms=_zooms(t1_image),
        settings=settings,
        foreground=head[box],
        masks={"brain_tissue": tissue},
        maps=maps,
    ):
        yield image
        step = (cut.index - cut.first) % REGION_EVERY
        if cut.plane != "sagittal" and step in (0, REGION_EVERY // 2):
            # two scales on alternate slices: patch_size with half overlap, half that without
            size = settings.patch_size if step == 0 else settings.patch_size // 2
            yield from _region_patches(image, cut.maps, cut.inside, size, settings.patch_size // 2)


def _region_patches(
    image: CorpusImage, maps: dict[str, np.ndarray], inside: np.ndarray, size: int, stride: int
) -> Iterator[CorpusImage]:
    """Patches every ``stride`` pixels, centred on a brain pixel, wholly inside the slice."""
    height, width = image.pixels.shape
    half = size // 2
    for y in range(0, height - size + 1, stride):
        for x in range(0, width - size + 1, stride):
            cy, cx = y + half, x + half
            if not maps["brain"][cy, cx] or not inside[y : y + size, x : x + size].all():
                continue
            centre = [float(maps[f"{a}_mm"][cy, cx]) for a in "xyz"]
            yield CorpusImage(
                source=image.source,
                name=f"{image.name}_patch{size}_y{y:03d}_x{x:03d}",
                pixels=image.pixels[y : y + size, x : x + size],
                group=image.group,
                labels={"brain_region": mni_octant(*centre)},
                columns={f"{a}_mm": f"{v:.17g}" for a, v in zip("xyz", centre, strict=True)},
            )


def neuropycon_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Slices of the neuropycon subject's mean BOLD image with GM / WM / CSF labels."""
    data = folder / "data" / "data_nii"
    bold: Any = nib.load(data / "sub-test_task-rs_bold.nii")  # a spatial image (typed as its base class)
    mean = np.asarray(bold.dataobj, np.float32).mean(axis=-1)
    image = nib.as_closest_canonical(nib.Nifti1Image(mean, bold.affine))
    masks = [np.asarray(_canonical(data / f"sub-test_mask-anat{k}.nii").dataobj) for k in ("GM", "WM", "CSF")]
    tissue = tissue_from_masks(masks, str(data))
    volume = np.asarray(image.dataobj, np.float32)
    head = volume > 0.2 * np.percentile(volume, 99)
    for _, corpus_image in labelled_slices(
        "neuropycon",
        "neuropycon_bold_mean",
        volume_to_uint8(volume),
        zooms=_zooms(image),
        settings=settings,
        foreground=head,
        masks={"bold_tissue": tissue},
        min_foreground=0.1,
    ):
        yield corpus_image
