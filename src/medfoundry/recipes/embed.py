"""Recipe: embed a dataset's images with an encoder (``medfoundry embed ENCODER DATA -o FILE``).

DATA is a CSV/TSV manifest (its ``image`` column; other columns are ignored) or a folder of
images (searched recursively). Sample ids are image paths relative to the manifest's folder
(or its ``root``) or to the folder. Features are cached by encoder weights, images and
preprocessing, so embedding the same data again with the same encoder costs a file read.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medfoundry.data import ManifestSource, read_manifest
from medfoundry.data.images import TIFF_SUFFIXES
from medfoundry.data.record import Record
from medfoundry.errors import DataError
from medfoundry.evaluation.features import (
    PREPROCESSING,
    cached_features,
    check_embeddings_path,
    write_embeddings,
)
from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.training.device import resolve_device

__all__ = ["EmbedConfig", "run"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", *TIFF_SUFFIXES}


class EmbedConfig(BaseModel):
    """What to embed with which encoder, and where to write it.

    Args:
        encoder: A medfoundry checkpoint folder or a timm model name.
        data: A CSV/TSV manifest or a folder of images.
        output: ``.npz`` or ``.parquet`` file to write.
        pretrained: Load the encoder's weights; ``False``: random weights (a baseline).
        image_size: Input side; default: the checkpoint's, or 224 for timm names.
        batch_size: Images per forward pass.
        num_workers: DataLoader workers decoding images.
        cache_dir: Feature cache; default ``$XDG_CACHE_HOME/medfoundry/features`` (``~/.cache``).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: str
    data: Path
    output: Path
    pretrained: bool = True
    image_size: int | None = Field(default=None, ge=16)
    batch_size: int = Field(default=64, ge=1)
    num_workers: int = Field(default=0, ge=0)
    cache_dir: Path | None = None
    device: str = "auto"


def run(cfg: EmbedConfig) -> Path:
    """Write the embeddings of ``cfg.data`` to ``cfg.output``; returns the output path.

    Raises:
        ConfigError: bad output suffix, unknown encoder, not a checkpoint (before any work).
        DataError: the data is neither a manifest nor a folder of images, or an image is unreadable.
    """
    check_embeddings_path(cfg.output)
    records, ids = _images(cfg.data)
    encoder = load_encoder(cfg.encoder, cfg.pretrained, cfg.image_size, device=resolve_device(cfg.device))
    cache_dir = (
        cfg.cache_dir
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medfoundry" / "features"
    )
    features = cached_features(encoder, records, cache_dir, cfg.batch_size, cfg.num_workers)
    metadata = {
        "encoder": cfg.encoder,
        "pretrained": str(cfg.pretrained).lower(),
        "weights_sha256": encoder.weights_sha256,
        "image_size": str(encoder.image_size),
        "preprocessing": PREPROCESSING,
    }
    return write_embeddings(cfg.output, ids, features, metadata)


def _images(data: Path) -> tuple[list[Record], list[str]]:
    """Records and sample ids of a manifest or an image folder."""
    if data.is_dir():
        paths = sorted(p for p in data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise DataError(f"{data}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        return [Record(p, None, i) for i, p in enumerate(paths)], [
            p.relative_to(data).as_posix() for p in paths
        ]
    if data.suffix.lower() in (".csv", ".tsv"):
        source = ManifestSource(path=data)
        records = read_manifest(source, "image", [])
        root = source.root or data.parent
        return records, [os.path.relpath(r.image, root) for r in records]
    raise DataError(f"{data}: DATA must be a CSV/TSV manifest or a folder of images")
