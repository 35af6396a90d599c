"""Image embeddings: extracted once per (encoder weights, images, preprocessing), then read from a cache.

The cache key hashes the encoder's weights, the input size, the task's preprocessing, each
sample's file (path, size, modification time) and position in it (slice, frame, array item), and
the settings of the readers that decode them (CT windows, intensity scaling), so new weights, a
changed file, another window or a different input size all miss the cache, while repeated
probes of the same encoder on the same data hit it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from medfoundry.data.cache import SampleArrays, samples_digest
from medfoundry.data.preprocessing import Preprocessing
from medfoundry.data.record import Record
from medfoundry.data.task_dataset import Sample, TaskDataset
from medfoundry.errors import ConfigError
from medfoundry.safe_writes import write_file_with

__all__ = [
    "PREPROCESSING",
    "Embedder",
    "cached_features",
    "check_embeddings_path",
    "extract_features",
    "features_key",
    "features_path",
    "write_embeddings",
]


class Embedder(Protocol):
    """What feature extraction needs of an encoder (``PretrainedEncoder``, ``PixelEncoder``)."""

    image_size: int
    weights_sha256: str

    @property
    def out_channels(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    def embed(self, images: torch.Tensor, levels: Sequence[int] = ...) -> torch.Tensor: ...


PREPROCESSING = "rgb-unit-range/resize-square-antialias/v1"
"""What happens to an image before the encoder (``TaskDataset`` without augmentation); part of
the cache key, so changing it invalidates cached features."""


def extract_features(
    encoder: Embedder,
    records: Sequence[Record],
    *,
    batch_size: int = 64,
    num_workers: int = 0,
    preprocessing: Preprocessing | None = None,
    arrays: SampleArrays | None = None,
    feature_levels: Sequence[int] = (-1,),
) -> np.ndarray:
    """Embed every record's image.

    Args:
        encoder: The encoder (its device is used).
        records: Images to embed (their targets are not read).
        batch_size: Images per forward pass.
        num_workers: DataLoader worker processes decoding images.
        preprocessing: The task's channels and fit (default: keep colour, stretch).
        arrays: The records' cached pixels (fitted with the same preprocessing); ``None``:
            decode every record.
        feature_levels: Pyramid levels pooled and concatenated (``encoder.embed``).

    Returns:
        ``(N, D)`` float32 (``D = encoder.out_channels`` for the deepest level), in the order of
        ``records``.

    Raises:
        DataError: an image cannot be decoded.
    """
    dataset = TaskDataset(
        records, "image", encoder.image_size, augment=False, arrays=arrays, preprocessing=preprocessing
    )
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_stack_images)
    parts = [encoder.embed(images.to(encoder.device), feature_levels).cpu().numpy() for images in loader]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.out_channels), np.float32)


def features_key(
    encoder: Embedder,
    records: Sequence[Record],
    *,
    preprocessing: Preprocessing | None = None,
    cached: bool = False,
    feature_levels: Sequence[int] = (-1,),
) -> str:
    """Hash of the encoder's weights, input size, preprocessing, pooled levels and the samples
    (see module doc); ``cached``: the pixels come from the preprocessing cache (stored as
    ``preprocessing.store``)."""
    description = {
        "weights_sha256": encoder.weights_sha256,
        "image_size": encoder.image_size,
        "preprocessing": PREPROCESSING,
        "task_preprocessing": (preprocessing or Preprocessing()).model_dump(mode="json"),
        "pixels": "cache" if cached else "decoded",
        **(
            {"levels": list(feature_levels)} if list(feature_levels) != [-1] else {}
        ),  # the deepest: keys as before
    }
    return samples_digest(records, json.dumps(description))


def cached_features(
    encoder: Embedder,
    records: Sequence[Record],
    *,
    cache_dir: Path,
    batch_size: int = 64,
    num_workers: int = 0,
    preprocessing: Preprocessing | None = None,
    arrays: Callable[[], SampleArrays] | None = None,
    feature_levels: Sequence[int] = (-1,),
) -> np.ndarray:
    """``extract_features``, read from ``cache_dir`` when this exact extraction was done before.

    ``arrays`` gives the records' cached pixels; it is called only when the features are not
    cached. Several processes may share ``cache_dir``: each writes under its own temporary name.

    Returns:
        ``(N, D)`` float32, in the order of ``records``.
    """
    path = features_path(
        encoder,
        records,
        cache_dir=cache_dir,
        preprocessing=preprocessing,
        cached=arrays is not None,
        feature_levels=feature_levels,
    )
    if path.is_file():
        with np.load(path) as cached:
            return np.asarray(cached["features"])
    features = extract_features(
        encoder,
        records,
        batch_size=batch_size,
        num_workers=num_workers,
        preprocessing=preprocessing,
        arrays=arrays() if arrays is not None else None,
        feature_levels=feature_levels,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    images = np.array([str(r.image) for r in records])
    # a killed run never leaves a half-written cache entry
    write_file_with(path, lambda f: np.savez(f, features=features, images=images))
    return features


def features_path(
    encoder: Embedder,
    records: Sequence[Record],
    *,
    cache_dir: Path,
    preprocessing: Preprocessing | None = None,
    cached: bool = False,
    feature_levels: Sequence[int] = (-1,),
) -> Path:
    """Where ``cached_features`` keeps these features (``features_key`` names the file)."""
    key = features_key(
        encoder, records, preprocessing=preprocessing, cached=cached, feature_levels=feature_levels
    )
    return Path(cache_dir) / f"{key}.npz"


def check_embeddings_path(path: Path) -> None:
    """The output must be ``.npz``, or ``.parquet`` with pyarrow installed.

    Raises:
        ConfigError: another suffix, or parquet without pyarrow.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in (".npz", ".parquet"):
        raise ConfigError(f"{path}: output must end in .npz or .parquet")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(
            f"{path}: writing parquet needs pyarrow: pip install 'medfoundry[parquet]' (or write .npz)"
        )


def write_embeddings(
    path: Path, ids: Sequence[str], features: np.ndarray, *, metadata: dict[str, str]
) -> Path:
    """Write features with their sample ids: ``.npz`` (NumPy) or ``.parquet`` (needs pyarrow).

    npz arrays: ``ids`` (N,) str, ``features`` (N, D) float32, and one 0-d string per metadata
    key. Parquet: columns ``id`` (string) and ``embedding`` (fixed-size list of D float32), with
    the metadata in the schema.

    Raises:
        ConfigError: see ``check_embeddings_path``.
    """
    path = Path(path)
    check_embeddings_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".npz":
        arrays = {"ids": np.array(list(ids), dtype=str), "features": features, **metadata}
        return write_file_with(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1))
    embedding = pa.FixedSizeListArray.from_arrays(flat, features.shape[1])
    table = pa.table({"id": pa.array(list(ids), pa.string()), "embedding": embedding})
    return write_file_with(path, lambda f: pq.write_table(table.replace_schema_metadata(metadata), f))


def _stack_images(samples: Sequence[Sample]) -> torch.Tensor:
    """Batch the images of ``(image, None)`` samples (module-level: picklable for workers)."""
    return torch.stack([image for image, _ in samples])
