"""The folder of a pretraining run: checked before anything is written, then created or resumed.

A run can be killed at any moment, and continues with ``medfoundry pretrain --resume RUN``
or with the command that started it. ``check_run_folder`` decides how a run starts, reading
only:

- ``new``: the folder does not exist or is empty (its output marker, and leftover temporary files of killed
  processes do not count);
- ``resume``: the folder holds the run's ``config.yaml`` and a complete ``checkpoints/last``;
- ``restart``: the folder holds the run's ``config.yaml`` but no ``last`` checkpoint yet (the
  run was killed before its first one): it starts again from step 0 in the same folder.

A folder is the run's when its ``config.yaml`` equals the config being started, ``run_dir``
aside: the folder is identified by where it is, so a relative path, another working
directory or a moved folder all resume. Without ``--resume``, a folder holding another run
(or anything else) is refused. Symbolic links inside the folder are refused
(``safe_writes``). ``prepare_run_folder`` then writes: it clears what a restarted run left,
removes the temporary files of killed processes and writes ``config.yaml``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml

from medfoundry.errors import ConfigError
from medfoundry.output_folders import MARKER, check_output_folder, write_marker
from medfoundry.safe_writes import (
    check_creatable,
    make_folder,
    refuse_links,
    remove_orphans,
    write_file_atomically,
)
from medfoundry.training.checkpoint import check_checkpoint_files

__all__ = ["RUN_OUTPUTS", "RunStart", "check_run_folder", "last_checkpoint", "prepare_run_folder"]

log = logging.getLogger(__name__)

RunStart = Literal["new", "resume", "restart"]
COMMAND = "pretrain"
CONFIG_FILE = "config.yaml"
RUN_OUTPUTS = ("checkpoints", "tensorboard", "previews", "metrics.jsonl")
"""What a run writes besides ``config.yaml`` (cleared when a run restarts from step 0)."""


def last_checkpoint(run_dir: Path) -> Path:
    """The resumable checkpoint of a run folder."""
    return Path(run_dir) / "checkpoints" / "last"


def check_run_folder(run_dir: Path, resolved: dict[str, Any], resume: bool) -> RunStart:
    """How the run in ``run_dir`` starts (see module docstring); writes nothing.

    Args:
        run_dir: The run folder.
        resolved: The run's config as JSON-able data (``PretrainConfig.model_dump(mode="json")``).
        resume: ``--resume`` was given: the folder must be this run's, or empty.

    Raises:
        ConfigError: the folder cannot be created, holds another run or other files, contains
            symbolic links, or its checkpoint is damaged.
        DataError: the folder holds a ``config.yaml`` but was not written by ``pretrain``
            (``output_folders``).
    """
    run_dir = Path(run_dir)
    check_creatable(run_dir, "run_dir")
    refuse_links(run_dir, "run folder")
    config_file = run_dir / CONFIG_FILE
    if not config_file.is_file():
        if _is_empty(run_dir):
            return "new"
        if resume:
            raise ConfigError(f"{run_dir}: not a run folder (no {CONFIG_FILE}); cannot resume")
        raise ConfigError(
            f"run_dir {run_dir} already exists and is not empty; use --resume {run_dir} to continue it, "
            "or set run_dir to a new folder"
        )
    check_output_folder(run_dir, COMMAND)  # a config.yaml alone does not make it a run's folder
    differences = _differences(_read_config(config_file), resolved)
    if differences:
        shown = ", ".join(differences[:8])
        if resume:
            raise ConfigError(
                f"{run_dir}: the config differs from the one the run was started with at {shown}; "
                f"resume with the run's own {CONFIG_FILE}"
            )
        raise ConfigError(
            f"run_dir {run_dir} already holds a run with another config (differs at {shown}); "
            f"use --resume {run_dir} to continue that run, or set run_dir to a new folder"
        )
    last = last_checkpoint(run_dir)
    if not (last.exists() or last.with_name(".last.old").exists()):
        log.info("%s: no checkpoint yet (stopped before the first one); starting again from step 0", run_dir)
        return "restart"
    check_checkpoint_files(last, resumable=True)
    log.info("%s: continuing from its last checkpoint", run_dir)
    return "resume"


def prepare_run_folder(run_dir: Path, resolved: dict[str, Any], start: RunStart) -> Path:
    """Create the folder (or clear what a restarted run left) and write ``config.yaml``.

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    run_dir = make_folder(Path(run_dir), "run_dir")
    write_marker(run_dir, COMMAND)
    remove_orphans(run_dir)
    remove_orphans(run_dir / "checkpoints")
    if start == "restart":
        for name in RUN_OUTPUTS:
            path = run_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    if start != "resume":
        write_file_atomically(run_dir / CONFIG_FILE, yaml.safe_dump(resolved, sort_keys=False))
    return run_dir


def _is_empty(folder: Path) -> bool:
    """No entries besides temporary files that killed processes left (``safe_writes``)."""
    if not folder.is_dir():
        return True
    return all(
        entry.name == MARKER or (".tmp-" in entry.name and entry.name.startswith("."))
        for entry in folder.iterdir()
    )


def _read_config(file: Path) -> Any:
    try:
        return yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: the run's config cannot be read ({type(e).__name__})") from None


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys at which two configs differ, ``run_dir`` aside."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted((set(a) | set(b)) - ({"run_dir"} if not prefix else set()))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{prefix}{i}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]
