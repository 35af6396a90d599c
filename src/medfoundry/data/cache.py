"""The preprocessing cache: every sample decoded, checked and fitted once, stored as ``.npy`` arrays.

A split's arrays live in ``<cache_dir>/<name>-<key>/`` (``images.npy`` ``(N, S, S, C)`` uint8 or
float16, ``masks.npy`` ``(N, S, S)`` int16, ``sizes.npy`` ``(N, 2)``, ``geometry.npy`` ``(N, 4)``,
``meta.json``) and are memory-mapped when read, so worker processes share the page cache and
later epochs and runs decode nothing.

The key is a SHA-256 of everything that changes the arrays: the preprocessing settings, each
reader's settings, the target, classes count and ignore index, each record's files (and frame,
and boxes, which the checks read), and each file's fingerprint. The fingerprint is by default
the file's size and modification time in nanoseconds (``stat``): rewriting a file changes it,
and computing it does not read the data, which is what the cache saves. ``content`` hashes
every file's bytes instead, for file systems or tools that keep modification times (copies
with ``cp -p`` or ``rsync -t`` onto files of the same size). A changed file or setting gives a
new key, so a stale cache is never read; old folders are left for the user to delete.

A cache is written to a temporary folder and renamed into place only when every sample
decoded (or, with ``on_error: skip``, was counted as skipped), so a crash or a failing
source never leaves a folder that looks usable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch.utils.data import DataLoader, Dataset

from medfoundry.data.checks import merge_frames
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Record, TargetKind
from medfoundry.data.sample_fit import SampleFit
from medfoundry.errors import ConfigError, DataError
from medfoundry.safe_writes import (
    make_folder,
    missing_folders,
    remove_empty_folders,
    remove_orphans,
    temporary_name,
    write_file_atomically,
)

__all__ = [
    "CacheSettings",
    "PreparedSplit",
    "SampleArrays",
    "prepare_arrays",
    "samples_digest",
]

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
ARRAYS = ("images", "masks", "sizes", "geometry")


@dataclass(frozen=True)
class CacheSettings:
    """Where and how samples are cached.

    Args:
        folder: Cache folder; ``None`` keeps the arrays in memory for this run only.
        validation: File fingerprint: ``stat`` (size + mtime) or ``content`` (SHA-256 of bytes).
        num_workers: Processes that decode while the cache is built (0: this process).
    """

    folder: Path | None
    validation: Literal["stat", "content"] = "stat"
    num_workers: int = 0


class SampleArrays:
    """A split's fitted samples: ``images[i]`` ``(S, S, C)``, ``masks[i]`` ``(S, S)``, ...

    Rows are opened lazily (memory-mapped) and never pickled, so sending a dataset to worker
    processes copies paths, not pixels.

    Args:
        folder: Cache folder of the split, or ``None`` with ``arrays`` given.
        arrays: In-memory arrays by name (``images``, ``masks``, ``sizes``, ``geometry``).
        rows: Array row of each kept sample (samples skipped by ``on_error: skip`` leave rows).
    """

    def __init__(self, folder: Path | None, arrays: dict[str, np.ndarray] | None, rows: np.ndarray) -> None:
        self.folder = folder
        self.rows = rows
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_arrays": None if self.folder else self._arrays}

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        if self._arrays is None:
            assert self.folder is not None
            self._arrays = {
                name: np.load(self.folder / f"{name}.npy", mmap_mode="r")
                for name in ARRAYS
                if (self.folder / f"{name}.npy").is_file()
            }
        return self._arrays

    @property
    def size(self) -> int:
        return int(self.arrays["images"].shape[1])

    def image(self, index: int) -> np.ndarray:
        """``(S, S, C)`` uint8 or float16 of sample ``index`` (a writable copy)."""
        return np.array(self.arrays["images"][self.rows[index]])

    def mask(self, index: int) -> np.ndarray:
        """``(S, S)`` int16 (a writable copy)."""
        return np.array(self.arrays["masks"][self.rows[index]])

    def geometry(self, index: int) -> tuple[float, float, float, float]:
        """``(scale_x, scale_y, offset_x, offset_y)`` from original pixels to cached pixels."""
        sx, sy, ox, oy = self.arrays["geometry"][self.rows[index]].tolist()
        return sx, sy, ox, oy

    def original_sizes(self) -> np.ndarray:
        """``(N, 2)`` int32 ``(height, width)`` of the decoded samples before fitting."""
        return np.asarray(self.arrays["sizes"][self.rows])


@dataclass
class PreparedSplit:
    """A split ready for a ``TaskDataset``.

    Attributes:
        records: The usable records (all of them unless ``on_error: skip`` left some out).
        arrays: Their pixels, row ``i`` for ``records[i]``.
        problems: One line per problem of the samples left out (a problem shared by the slices
            of one volume or the frames of one file is one line).
        from_cache: The arrays were read from an earlier run's cache.
        notes: What decoding changed or left out, one line per file (for ``validate-data``).
        new_folders: Cache folders created for these arrays (deepest first), besides their own.
    """

    records: list[Record]
    arrays: SampleArrays
    problems: list[str] = field(default_factory=list)
    from_cache: bool = False
    notes: list[str] = field(default_factory=list)
    new_folders: list[Path] = field(default_factory=list)


def prepare_arrays(
    name: str,
    records: Sequence[Record],
    target: TargetKind,
    *,
    size: int,
    preprocessing: Preprocessing,
    num_classes: int,
    ignore_index: int,
    cache: CacheSettings,
    on_error: Literal["raise", "skip"] = "raise",
) -> PreparedSplit:
    """Decode, check and fit every record once, or read the arrays a previous run cached.

    Args:
        name: Task and split, e.g. ``nuclei-train`` (names the cache folder and messages).
        records: The split's records.
        target: What the task needs (masks are cached for ``mask``).
        size: Side of the cached images.
        preprocessing: The task's preprocessing.
        num_classes: Number of classes (mask values are checked against it).
        ignore_index: Mask value of unlabelled and padded pixels.
        cache: Where to cache.
        on_error: ``raise``: any bad sample is an error (listing every one);
            ``skip``: bad samples are left out and listed in ``problems``.

    Raises:
        DataError: with ``on_error: raise``, every sample that failed (nothing is cached).
    """
    fit = SampleFit(target, size, preprocessing, num_classes=num_classes, ignore_index=ignore_index)
    key = _cache_key(records, fit, cache.validation)
    folder = cache.folder / f"{name}-{key[:24]}" if cache.folder is not None else None
    if folder is not None and folder.is_symlink():
        raise ConfigError(f"{folder}: cache entry is a symbolic link; medfoundry never writes through links")
    if folder is not None and folder.exists():
        meta = _read_meta(folder)
        log.debug("%s: %d samples read from cache %s", name, len(meta["kept"]), folder)
        cached = SampleArrays(folder, None, np.asarray(meta["kept"], dtype=np.int64))
        return _finish(records, cached, meta["problems"], meta["notes"], on_error, True)
    started = time.perf_counter()
    tmp, created = None, []
    if folder is not None:
        created = missing_folders(folder.parent)
        make_folder(folder.parent, "data.cache_dir")
        remove_orphans(folder.parent)  # what killed runs left while caching
        tmp = temporary_name(folder)
    try:
        arrays, kept, problems, notes = _build(records, fit, tmp, cache.num_workers)
        if problems and on_error == "raise":
            raise DataError(problems)
        if tmp is None or folder is None:
            arrays_in_memory = SampleArrays(None, arrays, np.asarray(kept, dtype=np.int64))
            return _finish(records, arrays_in_memory, problems, notes, on_error, False)
        meta = {
            "format": CACHE_FORMAT,
            "key": key,
            "name": name,
            "kept": kept,
            "problems": problems,
            "notes": notes,
        }
        for array in arrays.values():
            if isinstance(array, np.memmap):
                array.flush()
        write_file_atomically(tmp / "meta.json", json.dumps(meta))
        del arrays  # close the memory maps before the rename
        try:
            tmp.rename(folder)
        except OSError:  # another process (e.g. another rank) cached the same key first
            _read_meta(folder)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        remove_empty_folders(created)  # a failed first cache leaves no empty cache folder either
        if isinstance(e, OSError):  # disk full, permissions: the cache, not the data, is at fault
            raise ConfigError(f"{folder}: the cache cannot be written ({e.strerror or e})") from None
        raise
    if tmp.exists():  # another process renamed its copy into place first
        shutil.rmtree(tmp, ignore_errors=True)
    log.debug("%s: cached %d samples in %.1f s: %s", name, len(kept), time.perf_counter() - started, folder)
    arrays_on_disk = SampleArrays(folder, None, np.asarray(kept, dtype=np.int64))
    prepared = _finish(records, arrays_on_disk, problems, notes, on_error, False)
    prepared.new_folders = created
    return prepared


def _read_meta(folder: Path) -> dict[str, Any]:
    """A cache entry's ``meta.json`` (entries are renamed into place complete, so a missing or
    damaged one was not written by medfoundry)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        meta.setdefault("notes", [])
        if not (isinstance(meta["kept"], list) and isinstance(meta["problems"], list)):
            raise TypeError("kept and problems must be lists")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConfigError(
            f"{folder}: not a complete cache entry ({type(e).__name__}); delete this folder"
        ) from None
    result: dict[str, Any] = meta
    return result


def _finish(
    records: Sequence[Record],
    arrays: SampleArrays,
    problems: list[str],
    notes: list[str],
    on_error: str,
    from_cache: bool,
) -> PreparedSplit:
    if problems and on_error == "raise":  # a cache built with on_error: skip, read with raise
        raise DataError(problems)
    kept = [records[int(i)] for i in arrays.rows]
    return PreparedSplit(kept, arrays, list(problems), from_cache, list(notes))


def _build(
    records: Sequence[Record], fit: SampleFit, folder: Path | None, num_workers: int
) -> tuple[dict[str, np.ndarray], list[int], list[str], list[str]]:
    n, size = len(records), fit.size
    if folder is not None:
        folder.mkdir()
    store = np.uint8 if fit.preprocessing.store == "uint8" else np.float16

    def alloc(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        if folder is None or n == 0:  # an empty file cannot be memory-mapped
            return np.zeros(shape, dtype)
        return np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

    # gray until the first colour sample: gray datasets then take a third of the space
    arrays = {
        "images": alloc("images", (n, size, size, 1), store),
        "sizes": alloc("sizes", (n, 2), np.int32),
        "geometry": alloc("geometry", (n, 4), np.float32),
    }
    if fit.target == "mask":
        arrays["masks"] = alloc("masks", (n, size, size), np.int16)
    kept: list[int] = []
    failures: list[tuple[Record, list[str]]] = []
    notes: list[str] = []
    for i, result in _decoded(records, fit, num_workers):
        if isinstance(result, list):
            failures.append((records[i], result))
            continue
        image, mask, original, geometry, sample_notes = result
        notes += sample_notes
        if image.shape[-1] == 3 and arrays["images"].shape[-1] == 1:
            gray = arrays["images"]
            arrays["images"] = alloc("images3", (n, size, size, 3), store)
            arrays["images"][:] = gray  # broadcasts the channel
            del gray
            if folder is not None:
                (folder / "images3.npy").replace(folder / "images.npy")
        arrays["images"][i] = image
        arrays["sizes"][i] = original
        arrays["geometry"][i] = geometry
        if mask is not None:
            arrays["masks"][i] = mask
        kept.append(i)
    return arrays, kept, merge_frames(failures), list(dict.fromkeys(notes))


class _Records(Dataset[Any]):
    def __init__(self, records: Sequence[Record], fn: Callable[[Record], Any]) -> None:
        self.records, self.fn = records, fn

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        return self.fn(self.records[index])


def _as_is(item: Any) -> Any:
    return item


def _decoded(
    records: Sequence[Record], fn: Callable[[Record], Any], num_workers: int
) -> Iterator[tuple[int, Any]]:
    if num_workers == 0 or len(records) < 2:
        yield from ((i, fn(r)) for i, r in enumerate(records))
        return
    loader = DataLoader(_Records(records, fn), batch_size=None, num_workers=num_workers, collate_fn=_as_is)
    yield from enumerate(loader)


def _cache_key(records: Sequence[Record], fit: SampleFit, validation: Literal["stat", "content"]) -> str:
    settings = (
        CACHE_FORMAT,
        fit.target,
        fit.size,
        fit.preprocessing.model_dump_json(),
        fit.num_classes,
        fit.ignore_index,
        validation,
    )
    return samples_digest(records, repr(settings), validation)


def samples_digest(
    records: Sequence[Record], settings: str, validation: Literal["stat", "content"] = "stat"
) -> str:
    """SHA-256 of ``settings`` and of everything that makes ``records``' pixels: their files
    (by size and modification time, or by content), positions in the files, boxes, and the
    settings of their readers (e.g. CT windows). Keys the pixel cache and the feature cache."""
    fingerprints: dict[Path, str] = {}

    def signature(path: Path) -> str:
        if path not in fingerprints:
            if validation == "content":
                with path.open("rb") as f:
                    fingerprints[path] = hashlib.file_digest(f, "sha256").hexdigest()
            else:
                stat = path.stat()
                fingerprints[path] = f"{stat.st_size}:{stat.st_mtime_ns}"
        return fingerprints[path]

    digest = hashlib.sha256(settings.encode())
    readers: dict[int, int] = {}  # reader id -> order of first use (records share readers)
    for record in records:
        if record.reader is not None and id(record.reader) not in readers:
            readers[id(record.reader)] = len(readers)
            digest.update(record.reader.cache_key(signature).encode())
        files = [record.image] + ([record.mask] if record.mask is not None else [])
        item = (
            [str(p) for p in files],
            [signature(p) if p.is_file() else "missing" for p in files],
            record.member,
            record.frame,
            record.boxes,
            readers.get(id(record.reader)) if record.reader is not None else None,
        )
        digest.update(repr(item).encode())
    return digest.hexdigest()
