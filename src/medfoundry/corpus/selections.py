"""Named selections of the corpus: a few of its sources with settings of their own, built by the
same code, with the same task names and label rules, as the whole corpus (``build_corpus``).

- ``small`` (``medfoundry demo-data``): the nuclei, imaging-technique, brain MR (MNI152) and
  DICOM tasks with train / val / test splits (about a fifth of the groups each for validation
  and test), and the held-out nuclei specimen; 1,961 images, 20 MB, about 20 s on 2 cores.
  The tests and the API examples build its microscopy sources alone (1,285 images, 3 s).
- ``quick`` (``medfoundry demo --quick``): microscopy and a few DICOMs for pretraining (the
  corpus's settings: no test splits), the held-out nuclei specimen for the study.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medfoundry.corpus.build import CorpusBuild, build_corpus, logger
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources import SOURCES
from medfoundry.errors import ConfigError

__all__ = ["MICROSCOPY", "SELECTIONS", "Selection", "build_selection"]


@dataclass(frozen=True)
class Selection:
    """Sources of the corpus (``corpus.sources.SOURCES`` names) and the settings to cut them with."""

    sources: tuple[str, ...]
    settings: CorpusSettings


MICROSCOPY = ("stardist", "mahotas", "skimage", "napari_nuclei")
"""The small selection's microscopy: nuclei (instance masks and boxes), imaging technique (H&E,
IHC, fluorescence, phase contrast, fundus), and the held-out 3D nuclei specimen."""

SELECTIONS: dict[str, Selection] = {
    # 128-mm brain region patches: 250 of them instead of 2,518 (64 mm), for quick runs
    "small": Selection((*MICROSCOPY, "mni152", "pydicom"), CorpusSettings(patch_size=128, test_percent=20)),
    "quick": Selection(
        ("stardist", "mahotas", "skimage", "tiatoolbox", "wsidicom_data", "pydicom", "napari_nuclei"),
        CorpusSettings(),
    ),
}


def build_selection(
    out_dir: Path,
    name: str,
    *,
    sources: tuple[str, ...] | None = None,
    progress: Callable[[str], None] = logger.info,
) -> CorpusBuild:
    """Build the selection ``name`` (or only ``sources`` of it) into ``out_dir`` like
    ``build_corpus`` (same output rule: a new or empty folder, or a corpus); a source whose
    package is missing is an error (``build_corpus``'s ``min_sources``), not left out.

    Raises:
        ConfigError: an unknown selection, or sources that are not in it.
    """
    if name not in SELECTIONS:
        raise ConfigError(f"unknown corpus selection '{name}' (known: {', '.join(SELECTIONS)})")
    selection = SELECTIONS[name]
    outside = sorted(set(sources or ()) - set(selection.sources))
    if outside:
        raise ConfigError(f"source(s) {', '.join(outside)} are not in the selection '{name}'")
    chosen = sources or selection.sources
    return build_corpus(
        out_dir,
        sources=chosen,
        settings=selection.settings,
        min_sources=sum(not SOURCES[name].heldout for name in chosen),  # every one, or an error
        progress=progress,
    )
