"""``build_corpus``: the offline pretraining corpus, built once into a folder and cached.

The build is atomic and cached:

- a fingerprint (SHA-256) covers the settings, the selected sources, every source package's
  version, and the code: every medfoundry module the corpus imports (``data/intensity``,
  ``data/dicom``, ``data/volumes``, ...) and the versions of the libraries they import; a
  folder whose ``corpus.json`` holds the same fingerprint is up to date and left alone;
- the corpus is written into a hidden sibling folder (``.DIR.partial.tmp-HOST-PID``) and
  renamed into place when complete (``corpus.json``, written last, included), so a build killed
  at any moment leaves nothing that a rerun trusts; a rerun removes what killed builds left,
  and only that: the folders of a build still running (its process alive) are kept
  (``safe_writes.remove_orphans``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from medfoundry.corpus.code_digest import code_digest
from medfoundry.corpus.database import CorpusWriter
from medfoundry.corpus.packages import installed_version
from medfoundry.corpus.settings import CorpusSettings
from medfoundry.corpus.sources import SOURCES, Source
from medfoundry.errors import ConfigError
from medfoundry.output_folders import check_output_folder, write_marker
from medfoundry.safe_writes import remove_orphans, temporary_name

__all__ = ["CORPUS_FORMAT", "MIN_SOURCES", "CorpusBuild", "build_corpus", "corpus_fingerprint"]

logger = logging.getLogger(__name__)

CORPUS_FORMAT = 1
MIN_SOURCES = 8
"""Fewest pretraining sources a corpus may be built from (unless ``min_sources`` says otherwise)."""
COMMAND = "corpus"
"""The command name its output folders are marked with (``output_folders``)."""


@dataclass(frozen=True)
class CorpusBuild:
    """What ``build_corpus`` did.

    Attributes:
        root: The corpus folder.
        tasks: ``tasks.yaml`` (pretraining tasks; what ``medfoundry pretrain`` reads).
        heldout_tasks: ``heldout_tasks.yaml`` (held-out evaluation tasks).
        manifest: The parsed ``corpus.json``.
        built: False when the folder was already up to date (nothing was done).
        missing: One line per source skipped because its package is not installed.
    """

    root: Path
    tasks: Path
    heldout_tasks: Path
    manifest: dict[str, Any]
    built: bool
    missing: tuple[str, ...]

    @property
    def labelled_tasks(self) -> Path:
        """``labelled_tasks.yaml``: the pretraining tasks that have labels (no ``all_images``)."""
        return self.root / "labelled_tasks.yaml"


def build_corpus(
    out_dir: Path,
    *,
    sources: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    settings: CorpusSettings | None = None,
    min_sources: int = MIN_SOURCES,
    progress: Callable[[str], None] = logger.info,
) -> CorpusBuild:
    """Build the corpus into ``out_dir`` (or find it up to date there).

    Args:
        out_dir: The corpus folder; it must be new, empty, or hold a corpus and nothing else.
        sources: Source names to use (default: every source in ``SOURCES``).
        exclude: Source names to leave out (e.g. a held-out subject's source).
        settings: Tile sizes, split shares, seed (``CorpusSettings``).
        min_sources: Fewest usable pretraining sources; fewer is an error before any work.
        progress: Receives one line per source as it is read (and one per missing package).

    Returns:
        A ``CorpusBuild``.

    Raises:
        ConfigError: unknown source names, or too few sources.
        DataError: ``out_dir`` holds something that is not a corpus (``output_folders``), or
            a source package's files cannot be read.
    """
    settings = settings or CorpusSettings()
    out_dir = Path(out_dir)
    chosen, missing = _select(sources, exclude, min_sources)
    used = [source for source, _ in chosen]
    for line in missing:
        progress(line)
    check_output_folder(out_dir, COMMAND)
    fingerprint = corpus_fingerprint(used, settings)
    manifest_path = out_dir / "corpus.json"
    if manifest_path.is_file():
        manifest = _read_manifest(manifest_path)
        if manifest.get("fingerprint") == fingerprint:
            progress(f"corpus in {out_dir} is up to date (fingerprint {fingerprint[:12]}): nothing to do")
            return _result(out_dir, manifest, built=False, missing=missing)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(out_dir.parent)  # what killed builds left; a live build's folders are kept
    partial = temporary_name(out_dir.with_name(f"{out_dir.name}.partial"))
    partial.mkdir()
    try:  # a failed build leaves nothing behind; a killed one, what the next build removes
        manifest = _write(partial, chosen, missing, settings, fingerprint, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _swap_into_place(partial, out_dir)
    return _result(out_dir, manifest, built=True, missing=missing)


def _write(
    partial: Path,
    chosen: Sequence[tuple[Source, Path]],
    missing: tuple[str, ...],
    settings: CorpusSettings,
    fingerprint: str,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Every image of the chosen sources, manifests, task lists and the marker into ``partial``."""
    start = time.perf_counter()
    used = [source for source, _ in chosen]
    writer = CorpusWriter(
        partial,
        {s.name for s in used if s.heldout},
        settings.val_percent,
        test_percent=settings.test_percent,
        seed=settings.seed,
    )
    for source, folder in chosen:
        before = len(writer.images)
        for image in source.images(folder, settings):
            writer.add(image)
        progress(f"{source.name}: {len(writer.images) - before} images ({source.description})")
    manifest = writer.finish(_manifest(used, missing, settings, fingerprint, time.perf_counter() - start))
    write_marker(partial, COMMAND, list_files=True)
    return manifest


def corpus_fingerprint(chosen: Sequence[Source], settings: CorpusSettings) -> str:
    """SHA-256 of the settings, sources, their package versions, and the code that makes the
    corpus: every medfoundry module it imports and the versions of their libraries
    (``code_digest``)."""
    digest = hashlib.sha256()
    described = {
        "format": CORPUS_FORMAT,
        "settings": settings.as_dict(),
        "sources": {s.name: [[p.distribution, installed_version(p)] for p in s.packages] for s in chosen},
    }
    digest.update(json.dumps(described, sort_keys=True).encode())
    digest.update(code_digest().encode())  # a changed rule, or pixel code it calls, rebuilds
    return digest.hexdigest()


def _select(
    names: Sequence[str] | None, exclude: Sequence[str], min_sources: int
) -> tuple[list[tuple[Source, Path]], tuple[str, ...]]:
    """The requested sources whose packages are installed, with their folders, and one line per
    missing package (all checked before any work)."""
    unknown = sorted(set(names or ()) - set(SOURCES)) + sorted(set(exclude) - set(SOURCES))
    if unknown:
        raise ConfigError(f"unknown corpus source(s) {', '.join(unknown)} (valid: {', '.join(SOURCES)})")
    requested = [SOURCES[n] for n in (names or SOURCES) if n not in exclude]
    installed, missing = [], []
    for source in requested:
        absent = [p for p in source.packages if p.folder() is None]
        missing += [
            f"corpus: source '{source.name}' skipped: package '{p.distribution}' is not installed; "
            f"install it with: {p.install_command}"
            for p in absent
        ]
        folder = source.package.folder()
        if not absent and folder is not None:
            installed.append((source, folder))
    pretraining = [s.name for s, _ in installed if not s.heldout]
    if len(pretraining) < min_sources:
        raise ConfigError(
            f"the corpus needs at least {min_sources} pretraining sources; only {len(pretraining)} of the "
            f"{sum(not s.heldout for s in requested)} requested are installed "
            f"({', '.join(pretraining) or 'none'}); install the others with 'make setup' "
            "(one line per missing package above), or lower min_sources (--min-sources)"
        )
    return installed, tuple(missing)


def _manifest(
    chosen: Sequence[Source],
    missing: tuple[str, ...],
    settings: CorpusSettings,
    fingerprint: str,
    seconds: float,
) -> dict[str, Any]:
    return {
        "format": CORPUS_FORMAT,
        "fingerprint": fingerprint,
        "medfoundry": dist_version("medfoundry"),
        "settings": settings.as_dict(),
        "build_seconds": round(seconds, 1),
        "sources": {
            s.name: {
                "package": s.package.distribution,
                "version": installed_version(s.package),
                "requires": {p.distribution: installed_version(p) for p in s.requires},
                "description": s.description,
                "heldout": s.heldout,
            }
            for s in chosen
        },
        "missing": list(missing),
    }


def _read_manifest(path: Path) -> dict[str, Any]:
    """A corpus's manifest; an unreadable one (edited by hand) means the corpus is rebuilt."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _swap_into_place(partial: Path, out_dir: Path) -> None:
    old = temporary_name(out_dir.with_name(f"{out_dir.name}.old"))
    if out_dir.exists():
        out_dir.rename(old)
    partial.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _result(root: Path, manifest: dict[str, Any], *, built: bool, missing: tuple[str, ...]) -> CorpusBuild:
    return CorpusBuild(root, root / "tasks.yaml", root / "heldout_tasks.yaml", manifest, built, missing)
