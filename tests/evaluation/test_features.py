"""Feature extraction on real images, its cache, and the embeddings files."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from medfoundry.data import ManifestSource, read_manifest
from medfoundry.errors import ConfigError
from medfoundry.evaluation import features as features_module
from medfoundry.evaluation.features import cached_features, extract_features, features_key, write_embeddings
from medfoundry.evaluation.pretrained_encoder import load_encoder


@pytest.fixture(scope="module")
def records(small_db: Path) -> list:
    return read_manifest(ManifestSource(path=small_db.parent / "imaging_technique.csv"), "image", [])[:12]


def test_features_are_the_embeddings_in_record_order(records: list, checkpoint: Path) -> None:
    encoder = load_encoder(checkpoint)
    features = extract_features(encoder, records, batch_size=5)
    assert features.shape == (12, 512) and features.dtype == np.float32
    assert np.allclose(extract_features(encoder, records[3:4]), features[3:4], atol=1e-5)


def test_cache_hits_until_weights_size_or_files_change(
    records: list, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "copy.png"
    shutil.copy(records[0].image, copy)
    records = [replace(records[0], image=copy), *records[1:]]  # a file this test may touch
    encoder = load_encoder(checkpoint)
    first = cached_features(encoder, records, cache_dir=tmp_path / "cache")
    extractions: list[int] = []
    real = features_module.extract_features
    monkeypatch.setattr(
        features_module, "extract_features", lambda e, r, **k: extractions.append(1) or real(e, r, **k)
    )
    assert (
        np.array_equal(cached_features(encoder, records, cache_dir=tmp_path / "cache"), first)
        and not extractions
    )

    key = features_key(encoder, records)
    assert features_key(load_encoder(checkpoint, pretrained=False), records) != key
    assert features_key(load_encoder(checkpoint, image_size=48), records) != key
    stat = records[0].image.stat()
    os.utime(records[0].image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert features_key(encoder, records) != key
    cached_features(encoder, records, cache_dir=tmp_path / "cache")
    assert extractions == [1]


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_embeddings_files_keep_ids_and_metadata(tmp_path: Path, suffix: str) -> None:
    features = np.arange(12, dtype=np.float32).reshape(3, 4)
    path = write_embeddings(
        tmp_path / f"out{suffix}", ["a.png", "b/c.png", "d.png"], features, metadata={"encoder": "x"}
    )
    if suffix == ".npz":
        with np.load(path) as data:
            assert data["ids"].tolist() == ["a.png", "b/c.png", "d.png"]
            assert np.array_equal(data["features"], features) and str(data["encoder"]) == "x"
    else:
        pq = pytest.importorskip("pyarrow.parquet")
        table = pq.read_table(path)
        assert table.column("id").to_pylist() == ["a.png", "b/c.png", "d.png"]
        assert np.array_equal(np.array(table.column("embedding").to_pylist()), features)
        assert table.schema.metadata[b"encoder"] == b"x"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_embeddings_need_a_known_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"must end in \.npz or \.parquet"):
        write_embeddings(tmp_path / "out.csv", ["a"], np.zeros((1, 2), np.float32), metadata={})


def test_several_pyramid_levels_are_pooled_side_by_side_and_cached_apart(
    records: list, checkpoint: Path, tmp_path: Path
) -> None:
    encoder = load_encoder(checkpoint)
    deepest = extract_features(encoder, records[:4])
    both = extract_features(encoder, records[:4], feature_levels=[-2, -1])
    widths = [level.channels for level in encoder.encoder.feature_info]
    assert both.shape == (4, widths[-2] + widths[-1])
    assert np.allclose(both[:, widths[-2] :], deepest, atol=1e-5)  # the deepest map's pooled part
    key = features_key(encoder, records, feature_levels=[-2, -1])
    assert key != features_key(encoder, records) == features_key(encoder, records, feature_levels=[-1])


def test_pixel_baseline_features_are_the_area_downsampled_pixels(records: list, tmp_path: Path) -> None:
    import torch

    from medfoundry.evaluation.pixel_encoder import PixelEncoder

    encoder = PixelEncoder(image_size=32, size=8)
    features = cached_features(encoder, records, cache_dir=tmp_path / "cache")
    assert features.shape == (12, 3 * 8 * 8)
    # each 4x4 block's mean, channel by channel: the intensities themselves, brightness included
    image = torch.rand(1, 3, 32, 32)
    blocks = image.reshape(1, 3, 8, 4, 8, 4).mean(dim=(3, 5)).flatten(1)
    assert torch.allclose(encoder.embed(image), blocks, atol=1e-6)
    assert not torch.allclose(encoder.embed(image), encoder.embed(image * 0.5), atol=1e-3)
    assert PixelEncoder(32, 16).weights_sha256 != encoder.weights_sha256  # cached per size
