"""Packaged images that tests cut layouts of their own from (centres, MedMNIST files, folders)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from medfoundry.corpus.labels.technique import technique_of
from medfoundry.corpus.packages import module_folder
from medfoundry.corpus.sources.microscopy import read_rgb_or_gray

TECHNIQUE_FILES = (
    ("skimage", "data/retina.jpg"),
    ("skimage", "data/ihc.png"),
    ("skimage", "data/cell.png"),
    ("stardist", "data/images/histo.jpg"),
    ("mahotas", "demos/data/nuclear.png"),  # not stardist's nuclei: the nuclei tasks use those
)


def package_folder(module: str) -> Path:
    """The folder of an installed package (a test dependency)."""
    folder = module_folder(module)
    assert folder is not None, f"the tests need the package '{module}' (make setup)"
    return folder


def _read(module: str, path: str) -> np.ndarray:
    return read_rgb_or_gray(package_folder(module) / path)


TECHNIQUES: dict[str, Callable[[], np.ndarray]] = {
    technique_of(module, path): partial(_read, module, path) for module, path in TECHNIQUE_FILES
}
"""One 8-bit image of each imaging technique (fundus, IHC, phase contrast, H&E, fluorescence),
labelled by the corpus's rule, and its reader."""
