"""The corpus fingerprint covers the code its pixels come from, beyond ``corpus/``: a change to
the DICOM/volume readers or the intensity rules, to ``corpus/pixels.to_uint8``, or another numpy,
rebuilds the corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from medfoundry.corpus import SOURCES, CorpusSettings, corpus_fingerprint
from medfoundry.corpus import code_digest as digest_module
from medfoundry.corpus.code_digest import PACKAGE_ROOT, corpus_modules

PIXEL_CODE = ("corpus/pixels.py", "data/dicom.py", "data/intensity.py", "data/volumes.py")


def _fingerprint() -> str:
    return corpus_fingerprint([SOURCES["stardist"], SOURCES["pydicom"]], CorpusSettings())


def test_the_modules_pixels_come_from_are_fingerprinted() -> None:
    modules = {p.relative_to(PACKAGE_ROOT).as_posix() for p in corpus_modules()}
    assert set(PIXEL_CODE) <= modules and "corpus/build.py" in modules
    assert not any(m.startswith(("training/", "evaluation/", "recipes/", "demo/")) for m in modules)


@pytest.mark.parametrize("changed", PIXEL_CODE)
def test_a_change_to_pixel_code_outside_corpus_changes_the_fingerprint(
    changed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _fingerprint()
    target, read = PACKAGE_ROOT / changed, Path.read_bytes

    def edited(path: Path) -> bytes:
        return read(path) + (b"\n# an edited rule\n" if path == target else b"")

    monkeypatch.setattr(Path, "read_bytes", edited)
    assert _fingerprint() != before


def test_another_version_of_a_library_changes_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _fingerprint()
    real = digest_module._version
    monkeypatch.setattr(digest_module, "_version", lambda d: "0.0" if d == "numpy" else real(d))
    assert _fingerprint() != before
