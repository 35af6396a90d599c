"""Encoders released with medfoundry: pretrained checkpoints shipped inside the package.

A released encoder is named ``medfoundry:<name>`` wherever a checkpoint folder is accepted (a
study's ``encoders``, ``embed --encoder``, ``predict``, ``export``, ``load_encoder``), offline.
Its folder ``medfoundry/weights/<name>/`` is a checkpoint (``config.json``, ``model.safetensors``
in float16) plus ``release.json`` (the weights' SHA-256, the command and config that reproduce
it, one line of what it is) and ``MODEL_CARD.md`` (its measured transfer). The weights' SHA-256
is checked the first time a process reads them: a damaged or replaced file is refused in one
line, never loaded.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from medfoundry.errors import ConfigError
from medfoundry.registry import unknown_name_message

__all__ = [
    "PREFIX",
    "RELEASE_FILE",
    "WEIGHTS_FILE",
    "WEIGHTS_ROOT",
    "file_sha256",
    "is_released",
    "release_info",
    "released_folder",
    "released_names",
]

PREFIX = "medfoundry:"
WEIGHTS_ROOT = Path(__file__).parent / "weights"
RELEASE_FILE = "release.json"
WEIGHTS_FILE = "model.safetensors"


def is_released(source: str | Path) -> bool:
    """Whether an encoder source names a released encoder (``medfoundry:<name>``)."""
    return str(source).startswith(PREFIX)


def released_names(root: Path | None = None) -> list[str]:
    """The names of the encoders released with this installation (or in ``root``), sorted."""
    root = root or WEIGHTS_ROOT
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / RELEASE_FILE).is_file())


def release_info(name: str, root: Path | None = None) -> dict[str, Any]:
    """A released encoder's ``release.json`` (``sha256``, ``summary``, ``command``, ...).

    Raises:
        ConfigError: no released encoder of that name.
    """
    root = root or WEIGHTS_ROOT
    names = released_names(root)
    if name not in names:
        if not names:
            raise ConfigError(f"encoder '{PREFIX}{name}': this installation has no released encoders")
        raise ConfigError(
            f"encoder '{PREFIX}{name}': {unknown_name_message('released encoder', name, names)}"
        )
    info: dict[str, Any] = json.loads((root / name / RELEASE_FILE).read_text(encoding="utf-8"))
    return info


def released_folder(source: str | Path, root: Path | None = None) -> Path:
    """The checkpoint folder of ``medfoundry:<name>``, its weights checked against their SHA-256.

    Raises:
        ConfigError: an unknown name, or weights whose SHA-256 is not the released one.
    """
    root = root or WEIGHTS_ROOT
    name = str(source)[len(PREFIX) :]
    expected = release_info(name, root)["sha256"]
    folder = root / name
    weights = folder / WEIGHTS_FILE
    actual = file_sha256(weights)
    if actual != expected:
        raise ConfigError(
            f"{weights}: SHA-256 {actual[:12]}... is not the released {expected[:12]}...: the file is "
            "damaged or was replaced; reinstall medfoundry"
        )
    return folder


def file_sha256(file: Path) -> str:
    """A file's SHA-256, hex."""
    stat = file.stat()
    return _sha256(file, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(file: Path, size: int, mtime_ns: int) -> str:
    """The file's SHA-256 (cached per process for a given size and modification time)."""
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
