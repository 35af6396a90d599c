"""A small real corpus, built once per session from a selection of its sources."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medfoundry.corpus import CorpusBuild, build_corpus

SMALL_SOURCES = (
    "mni152",  # brain tissue, region, plane, position
    "neuropycon",  # tissue from binary masks
    "pydicom",  # CT slices (HU classes), MR, US headers
    "deid_data",  # a DX radiograph's tiles, ultrasound
    "stardist",  # nuclei instance masks and boxes
    "pydeface_head",  # held out: brain region of another head, face mask
    "napari_nuclei",  # held out: nuclei counts and boxes
    "napari_tomogram",  # held out: out-of-domain membranes
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests of the small corpus are slow: building it takes about 15 s (once per session)."""
    for item in items:
        if "small_corpus" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> CorpusBuild:
    return build_corpus(tmp_path_factory.mktemp("corpus") / "corpus", sources=SMALL_SOURCES, min_sources=1)


def read_rows(corpus: CorpusBuild, task: str) -> list[dict[str, str]]:
    with (corpus.root / f"{task}.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def package_path(module: str) -> Path:
    from medfoundry.corpus.sources import SOURCES

    for source in SOURCES.values():
        if source.package.module == module:
            folder = source.package.folder()
            assert folder is not None
            return folder
    raise KeyError(module)
