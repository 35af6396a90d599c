"""Recipe: embed a dataset's images with an encoder (``medfoundry embed ENCODER DATA -o FILE``).

DATA is a CSV/TSV manifest (its ``image`` column; other columns are ignored), a folder of
images (searched recursively), or a task database YAML (or pretraining config) with ``task``
naming one of its tasks: then every source type (DICOM, volumes, MedMNIST, COCO, ...) is read
with the task's preprocessing, all splits. Sample ids are image paths relative to the
manifest's folder (or its ``root``), to the folder, or to the YAML's folder; a sample inside a
file gets its position after ``#`` (``ct.nii.gz#42``, ``pathmnist.npz#val_images/7``).
Features are cached by encoder weights, samples and preprocessing, so embedding the same data
again with the same encoder costs a file read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from medfoundry.data import ManifestSource, Preprocessing, load_task_records, read_manifest
from medfoundry.data.images import TIFF_SUFFIXES
from medfoundry.data.record import Record
from medfoundry.errors import ConfigError, DataError
from medfoundry.evaluation.features import (
    PREPROCESSING,
    cached_features,
    check_embeddings_path,
    write_embeddings,
)
from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.output_folders import check_output_file
from medfoundry.recipes.validate_data import load_validate_config
from medfoundry.tasks import TASK_TYPES, build_task, with_classes
from medfoundry.training.device import resolve_device

__all__ = ["EmbedConfig", "run", "sample_id"]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", *TIFF_SUFFIXES}


class EmbedConfig(BaseModel):
    """What to embed with which encoder, and where to write it.

    Args:
        encoder: A medfoundry checkpoint folder or a timm model name.
        data: A CSV/TSV manifest, a folder of images, or a task database YAML.
        task: With a task database: the task to embed (may be left out when there is one).
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
    task: str | None = None
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
        ConfigError: bad output suffix, a cache folder that is a file, unknown encoder, not a
            checkpoint, unknown task (before any work).
        DataError: the output exists and is not an embeddings file ``embed`` wrote (before any
            work), the data is no manifest, image folder or task database, or an image is
            unreadable.
    """
    check_embeddings_path(cfg.output)
    check_output_file(cfg.output, "embed", written_by=_embeddings_file)
    if cfg.cache_dir is not None and cfg.cache_dir.exists() and not cfg.cache_dir.is_dir():
        raise ConfigError(
            f"{cfg.cache_dir}: --cache-dir is a file, not a folder; give a folder for the feature cache"
        )
    device = resolve_device(cfg.device, "--device")
    if cfg.data.suffix.lower() in (".yaml", ".yml"):
        records, ids, preprocessing = _task_samples(cfg.data, cfg.task)
    else:
        if cfg.task is not None:
            raise ConfigError(f"{cfg.data}: --task needs a task database YAML as DATA")
        (records, ids), preprocessing = _images(cfg.data), None
    encoder = load_encoder(cfg.encoder, pretrained=cfg.pretrained, image_size=cfg.image_size, device=device)
    cache_dir = (
        cfg.cache_dir
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "medfoundry" / "features"
    )
    features = cached_features(
        encoder,
        records,
        cache_dir=cache_dir,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        preprocessing=preprocessing,
    )
    metadata = {
        "encoder": cfg.encoder,
        "pretrained": str(cfg.pretrained).lower(),
        "weights_sha256": encoder.weights_sha256,
        "image_size": str(encoder.image_size),
        "preprocessing": PREPROCESSING,
    }
    return write_embeddings(cfg.output, ids, features, metadata=metadata)


def _embeddings_file(path: Path) -> bool:
    """Whether ``path`` is an embeddings file ``write_embeddings`` wrote (its metadata names the
    encoder's weights)."""
    try:
        if path.suffix.lower() == ".npz":
            with np.load(path, allow_pickle=False) as arrays:
                return {"ids", "features", "weights_sha256"} <= set(arrays.files)
        import pyarrow.parquet as pq

        return b"weights_sha256" in (pq.read_schema(path).metadata or {})
    except Exception:  # noqa: BLE001 - anything unreadable as such is not ours
        return False


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
    raise DataError(f"{data}: DATA must be a CSV/TSV manifest, a folder of images or a task database YAML")


def _task_samples(database: Path, name: str | None) -> tuple[list[Record], list[str], Preprocessing]:
    """Every split's records of one task of a task database, their ids, and the task's preprocessing."""
    cfg = load_validate_config(database)
    names = [spec.name for spec in cfg.tasks]
    if name is None and len(names) > 1:
        raise ConfigError(
            f"{database}: holds {len(names)} tasks; choose one with --task ({', '.join(names)})"
        )
    chosen = cfg.tasks[0] if name is None else next((s for s in cfg.tasks if s.name == name), None)
    if chosen is None:
        raise ConfigError(f"{database}: no task '{name}' (its tasks: {', '.join(names)})")
    target = TASK_TYPES.get(chosen.type).target
    spec = with_classes(chosen)
    splits = load_task_records(
        spec.name,
        spec.data_source(),
        target,
        classes=spec.classes,
        seed=cfg.seed,
        val_fraction=cfg.data.val_fraction,
        ignore_index=build_task(spec).ignore_index,
        require_val=False,
        preprocessing=spec.preprocessing,
        split=spec.split,
    )
    records = [r for split in ("train", "val", "test") for r in splits[split]]
    return records, [sample_id(r, database.parent) for r in records], spec.preprocessing


def sample_id(record: Record, root: Path) -> str:
    """A sample's id: its file relative to ``root``, and its position in the file after ``#``."""
    position = "/".join(str(p) for p in (record.member, record.frame) if p is not None)
    path = os.path.relpath(record.image, root)
    return f"{path}#{position}" if position else path
