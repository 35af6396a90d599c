"""One rule for every folder a command writes: medfoundry never deletes or overwrites what it
did not write.

An output folder (``predict -o``, ``export --timm/--onnx/--hf``, ``demo --out``, a study's
``study_dir``, a run's ``run_dir``, a corpus folder) must be

- new, or empty (leftover temporary files of killed processes do not count), or
- a folder this same command wrote before: it holds the marker file ``.medfoundry-output.json``
  naming the command. Commands that replace their whole folder on a rerun (export, predict,
  corpus) also list in the marker the entries they wrote, and a folder holding anything else
  is refused, so that a file a user put there is never deleted. Folders written before markers
  existed are recognised by the files the command always writes (``SIGNS``).

Anything else is refused with one ``DataError`` line naming the folder, before any work.
``embed`` writes one file, not a folder: an existing file must be one ``embed`` wrote
(``check_output_file``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from medfoundry.errors import DataError
from medfoundry.safe_writes import make_folder, write_file_atomically

__all__ = [
    "MARKER",
    "SIGNS",
    "check_output_file",
    "check_output_folder",
    "claim_output_folder",
    "write_marker",
]

MARKER = ".medfoundry-output.json"
SIGNS = {
    "pretrain": ("config.yaml", "checkpoints"),
    "evaluate": ("study.yaml", "plan.json"),
    "corpus": ("corpus.json", "tasks.yaml"),
    "demo": ("pretrain_tasks.yaml", "corpus"),
}
"""What a folder written before markers existed holds, per command (it is accepted as that
command's own)."""


def check_output_folder(folder: Path, command: str) -> None:
    """Raise unless ``command`` may write into ``folder`` (see the module docstring); writes nothing.

    Raises:
        DataError: ``folder`` is a file, or holds files ``command`` did not write.
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise DataError(
            f"{folder}: exists and is not a folder; medfoundry {command} writes a folder: choose a new folder"
        )
    entries = sorted(e.name for e in folder.iterdir() if e.name != MARKER and not _temporary(e.name))
    marker = _read_marker(folder)
    if marker is None:
        signs = SIGNS.get(command, ())
        if entries and not (signs and all((folder / sign).exists() for sign in signs)):
            raise DataError(
                f"{folder}: output folder exists and is not empty, and medfoundry {command} did not write it "
                "(it deletes nothing it did not write); choose a new or empty folder"
            )
        return
    if marker.get("command") != command:
        raise DataError(
            f"{folder}: output folder of 'medfoundry {marker.get('command')}', not of '{command}'; "
            "choose a new or empty folder"
        )
    files = marker.get("files")
    extra = [name for name in entries if isinstance(files, list) and name not in files]
    if extra:
        raise DataError(
            f"{folder}: holds {extra[0]}, which medfoundry {command} did not write and a rerun would "
            "delete; move it out, or choose a new or empty folder"
        )


def claim_output_folder(folder: Path, command: str, *, replaces: Mapping[str, str] | None = None) -> Path:
    """Check ``folder`` (and the subfolders ``replaces`` names), then create it, remove those
    subfolders and mark it as ``command``'s.

    Args:
        folder: The output folder.
        command: The command writing it (``demo``, ``evaluate``).
        replaces: Subfolders this command starts afresh, each with the command that wrote it
            (``{"pretrain": "pretrain"}``): each must be absent, empty or marked by that command.

    Raises:
        DataError: see ``check_output_folder`` (all checked before anything is written).
    """
    folder = Path(folder)
    check_output_folder(folder, command)
    for name, writer in (replaces or {}).items():
        check_output_folder(folder / name, writer)
    make_folder(folder, "output folder")
    for name in replaces or {}:
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            shutil.rmtree(folder / name)
    if _read_marker(folder) is None:
        write_marker(folder, command)
    return folder


def write_marker(folder: Path, command: str, *, list_files: bool = False) -> None:
    """Mark ``folder`` as ``command``'s output; ``list_files``: record the entries it holds now
    (for commands that replace the whole folder on a rerun)."""
    content: dict[str, Any] = {"command": command, "medfoundry": _version()}
    if list_files:
        content["files"] = sorted(e.name for e in Path(folder).iterdir() if e.name != MARKER)
    write_file_atomically(Path(folder) / MARKER, json.dumps(content, indent=1) + "\n")


def check_output_file(path: Path, command: str, *, written_by: Callable[[Path], bool]) -> None:
    """Raise unless ``path`` is new or a file ``command`` wrote (``written_by(path)`` says so).

    Raises:
        DataError: ``path`` is a folder or another file.
    """
    path = Path(path)
    if path.exists() and (not path.is_file() or not written_by(path)):
        raise DataError(
            f"{path}: exists and was not written by medfoundry {command} (it overwrites nothing it did "
            "not write); choose a new file name"
        )


def _version() -> str:
    try:
        return version("medfoundry")
    except PackageNotFoundError:  # run from a source tree without installing
        return "unknown"


def _temporary(name: str) -> bool:
    """A temporary file of ``safe_writes`` (``.name.tmp-host-pid``)."""
    return name.startswith(".") and ".tmp-" in name


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        content = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None
