"""The preprocessing cache: reuse, staleness, atomic writes, skipped samples."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

from medfoundry.data import Box, CacheSettings, Preprocessing, Record, TaskDataset, prepare_arrays
from medfoundry.errors import DataError
from tests.data.conftest import gray, write_png


def _records(folder: Path, n: int = 3) -> list[Record]:
    return [
        Record(write_png(folder / f"{i}.png", gray(16, 40 * i)), "train", i + 2, label=0) for i in range(n)
    ]


def _prepare(records: list[Record], cache: Path | None, **kwargs: object):  # type: ignore[no-untyped-def]
    settings = CacheSettings(cache, kwargs.pop("validation", "stat"))  # type: ignore[arg-type]
    return prepare_arrays(
        "t-train",
        records,
        "label",
        size=8,
        preprocessing=Preprocessing(),
        num_classes=2,
        ignore_index=255,
        cache=settings,
        **kwargs,
    )  # type: ignore[arg-type]


def test_second_run_reads_the_cache(tmp_path: Path) -> None:
    records = _records(tmp_path / "images")
    first = _prepare(records, tmp_path / "cache")
    second = _prepare(records, tmp_path / "cache")
    assert not first.from_cache and second.from_cache
    assert second.arrays.folder == first.arrays.folder and second.arrays.folder is not None
    assert sorted(p.name for p in second.arrays.folder.iterdir()) == [
        "geometry.npy",
        "images.npy",
        "meta.json",
        "sizes.npy",
    ]
    assert second.arrays.arrays["images"].shape == (3, 8, 8, 1)  # gray content: one channel
    np.testing.assert_array_equal(second.arrays.image(2), np.full((8, 8, 1), 80, np.uint8))


def test_a_changed_file_or_setting_never_reads_the_stale_cache(tmp_path: Path) -> None:
    records = _records(tmp_path / "images")
    first = _prepare(records, tmp_path / "cache")
    write_png(records[1].image, gray(16, 200))
    second = _prepare(records, tmp_path / "cache")
    assert not second.from_cache and second.arrays.folder != first.arrays.folder
    assert second.arrays.image(1)[0, 0, 0] == 200
    bigger = prepare_arrays(
        "t-train",
        records,
        "label",
        size=12,
        preprocessing=Preprocessing(),
        num_classes=2,
        ignore_index=255,
        cache=CacheSettings(tmp_path / "cache"),
    )
    assert not bigger.from_cache


def test_content_validation_catches_a_rewrite_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "a.tif"  # uncompressed: the rewrite has the same size
    tifffile.imwrite(path, gray(16, 10))
    records = [Record(path, "train", 2, label=0)]
    for validation in ("stat", "content"):
        _prepare(records, tmp_path / "cache", validation=validation)
    stat = path.stat()
    tifffile.imwrite(path, gray(16, 250))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert _prepare(records, tmp_path / "cache", validation="stat").from_cache  # the documented blind spot
    again = _prepare(records, tmp_path / "cache", validation="content")
    assert not again.from_cache and again.arrays.image(0)[0, 0, 0] == 250


def test_a_failing_source_writes_nothing_and_lists_every_bad_sample(tmp_path: Path) -> None:
    records = _records(tmp_path / "images", 4)
    records[1].image.write_bytes(b"")
    records[3].image.write_bytes(b"not a png")
    with pytest.raises(DataError) as info:
        _prepare(records, tmp_path / "cache")
    first, second = info.value.problems
    assert first == f"{records[1].image}: file is empty (0 bytes)"
    assert second.startswith(f"{records[3].image}: cannot decode image")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_skip_leaves_bad_samples_out_and_remembers_them(tmp_path: Path) -> None:
    records = _records(tmp_path / "images", 4)
    records[2].image.write_bytes(b"")
    prepared = _prepare(records, tmp_path / "cache", on_error="skip")
    assert [r.image.name for r in prepared.records] == ["0.png", "1.png", "3.png"]
    assert prepared.problems == [f"{records[2].image}: file is empty (0 bytes)"]
    assert prepared.arrays.image(2)[0, 0, 0] == 120  # row 2 of the dataset is 3.png
    again = _prepare(records, tmp_path / "cache", on_error="skip")
    assert again.from_cache and again.problems == prepared.problems
    with pytest.raises(DataError, match="file is empty"):  # the cache does not hide problems
        _prepare(records, tmp_path / "cache", on_error="raise")


def test_colour_after_gray_widens_the_cache_and_replicates_earlier_rows(tmp_path: Path) -> None:
    records = _records(tmp_path / "images", 2)
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 255
    records.append(Record(write_png(tmp_path / "images" / "rgb.png", rgb), "train", 9, label=0))
    for cache in (tmp_path / "cache", None):
        arrays = _prepare(records, cache).arrays
        assert arrays.arrays["images"].shape == (3, 8, 8, 3)
        np.testing.assert_array_equal(arrays.image(1)[0, 0], [40, 40, 40])
        np.testing.assert_array_equal(arrays.image(2)[0, 0], [255, 0, 0])


def test_letterbox_keeps_boxes_on_their_objects(tmp_path: Path) -> None:
    image = np.zeros((20, 40), np.uint8)
    image[4:10, 30:36] = 255
    record = Record(write_png(tmp_path / "wide.png", image), "train", 2, boxes=(Box(30, 4, 36, 10, 0),))
    prep = Preprocessing(fit="letterbox")
    prepared = prepare_arrays(
        "d-train",
        [record],
        "boxes",
        size=40,
        preprocessing=prep,
        num_classes=1,
        ignore_index=255,
        cache=CacheSettings(tmp_path / "c"),
    )
    assert prepared.arrays.geometry(0) == (1.0, 1.0, 0.0, 10.0)
    image_out, target = TaskDataset(prepared.records, "boxes", 40, augment=False, arrays=prepared.arrays)[0]
    bright = (image_out[0] > 0.5).nonzero()
    assert target["boxes"].tolist() == [[30.0, 14.0, 36.0, 20.0]]
    assert (bright[:, 1].min(), bright[:, 0].min(), bright[:, 1].max() + 1, bright[:, 0].max() + 1) == (
        30,
        14,
        36,
        20,
    )


def test_arrays_are_not_pickled_into_worker_processes(tmp_path: Path) -> None:
    records = _records(tmp_path / "images")
    prepared = _prepare(records, tmp_path / "cache")
    _ = prepared.arrays.image(0)  # opens the memory maps
    restored = pickle.loads(pickle.dumps(prepared.arrays))
    assert len(pickle.dumps(prepared.arrays)) < 1000
    np.testing.assert_array_equal(restored.image(1), prepared.arrays.image(1))


def test_worker_processes_decode_volumes_like_the_main_process(nibabel_data: Path, tmp_path: Path) -> None:
    from medfoundry.data import VolumeSource

    records = (
        VolumeSource(type="volume", images=nibabel_data / "anatomical.nii")
        .scan("image", classes=[], preprocessing=Preprocessing(), ignore_index=255)
        .records
    )
    here = prepare_arrays(
        "v-train",
        records,
        "image",
        size=32,
        preprocessing=Preprocessing(),
        num_classes=0,
        ignore_index=255,
        cache=CacheSettings(None),
    )
    workers = prepare_arrays(
        "v-train",
        records,
        "image",
        size=32,
        preprocessing=Preprocessing(),
        num_classes=0,
        ignore_index=255,
        cache=CacheSettings(None, num_workers=2),
    )
    np.testing.assert_array_equal(here.arrays.arrays["images"], workers.arrays.arrays["images"])


SLOW_CACHING = """
import sys, time
from pathlib import Path
import numpy as np
from medfoundry.data import CacheSettings, Pixels, Preprocessing, Record, prepare_arrays

class SlowReader:  # a sample a second: the parent kills the process while it caches
    def read(self, record):
        time.sleep(1)
        return Pixels(np.zeros((8, 8, 1), np.float32))

    def cache_key(self, signature):
        return "slow"

records = [Record(Path(p), "train", i, label=0, reader=SlowReader()) for i, p in enumerate(sys.argv[2:])]
prepare_arrays(
    "t-train", records, "label", size=8, preprocessing=Preprocessing(), num_classes=2, ignore_index=255,
    cache=CacheSettings(Path(sys.argv[1])),
)
"""


@pytest.mark.slow  # waits for a subprocess to start caching, then kills it
def test_a_kill_while_caching_leaves_a_temporary_folder_that_the_next_run_removes(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    records = _records(tmp_path / "images")
    cache = tmp_path / "cache"
    paths = [str(r.image) for r in records] * 10
    process = subprocess.Popen([sys.executable, "-c", SLOW_CACHING, str(cache), *paths])
    deadline = time.monotonic() + 300  # the child imports torch first: slow on a busy machine
    while not (cache.is_dir() and any(".tmp-" in p.name for p in cache.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, "the caching process never started"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    orphans = [p for p in cache.iterdir() if ".tmp-" in p.name]
    assert len(orphans) == 1 and orphans[0].is_dir()
    prepared = _prepare(records, cache)  # any later caching into the folder cleans up after the dead
    assert [p for p in cache.iterdir()] == [prepared.arrays.folder]
