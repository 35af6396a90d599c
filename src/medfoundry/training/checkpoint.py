"""Checkpoint folders: safetensors weights + JSON, written atomically, no pickle anywhere.

A checkpoint is a folder::

    model.safetensors          weights of the whole multi-task model
    config.json                everything needed to rebuild it (model config, task specs),
                               its input contract, versions, step and metrics
    trainer_state.safetensors  optimizer states and RNG states (resumable checkpoints only)
    trainer_state.json         the rest of the trainer state (step, sampler positions, ...)

It is written under a temporary name and renamed into place, so a crash never leaves a
half-written checkpoint: at every moment either the old or the new one is complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.training.state_io import flatten_state, unflatten_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "load_checkpoint_config",
    "load_model_weights",
    "load_trainer_state",
    "save_checkpoint",
    "write_atomically",
]

CHECKPOINT_FORMAT = "medfoundry-checkpoint"
FORMAT_VERSION = 2  # 2: the pixel decoder's blocks below stride 4 have one conv (was two)
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS_FILE = "trainer_state.safetensors"
STATE_JSON_FILE = "trainer_state.json"


def save_checkpoint(
    path: Path, model: nn.Module, config: dict[str, Any], trainer_state: dict[str, Any] | None = None
) -> Path:
    """Write a checkpoint folder atomically (replacing an existing one).

    Args:
        path: The checkpoint folder.
        model: Its ``state_dict`` is saved.
        config: JSON-serialisable description (model config, tasks, ...); format keys are added.
        trainer_state: Nested optimizer/RNG/sampler state to resume from, or ``None``.

    Returns:
        ``path``.
    """

    def write(tmp: Path) -> None:
        safetensors.torch.save_model(model, str(tmp / MODEL_FILE))
        full = {"format": CHECKPOINT_FORMAT, "format_version": FORMAT_VERSION, **config}
        (tmp / CONFIG_FILE).write_text(json.dumps(full, indent=2, default=str))
        if trainer_state is not None:
            skeleton, tensors = flatten_state(trainer_state)
            safetensors.torch.save_file(tensors, str(tmp / STATE_TENSORS_FILE))
            (tmp / STATE_JSON_FILE).write_text(json.dumps(skeleton))

    return write_atomically(path, write)


def write_atomically(path: Path, write: Any) -> Path:
    """Call ``write(tmp_folder)``, then swap ``tmp_folder`` into ``path``.

    A crash before the swap leaves the old folder untouched; a crash between the two renames
    leaves it as ``.<name>.old``, which the loaders pick up.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp"
    old = path.parent / f".{path.name}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed write leaves nothing behind
        raise
    for file in tmp.iterdir():
        _fsync(file)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync(path.parent)
    shutil.rmtree(old, ignore_errors=True)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _resolve(path: Path) -> Path:
    """The checkpoint folder, or its ``.old`` copy if a crash hit between the renames."""
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if not path.exists() and old.exists():
        return old
    return path


def load_checkpoint_config(path: Path) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json``.

    Raises:
        ConfigError: the folder is not a medfoundry checkpoint, or was written by a newer format.
    """
    folder = _resolve(path)
    config_file, model_file = folder / CONFIG_FILE, folder / MODEL_FILE
    if not (config_file.is_file() and model_file.is_file()):
        raise ConfigError(
            f"{path}: not a medfoundry checkpoint (expected a folder with {CONFIG_FILE} and {MODEL_FILE})"
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{config_file}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f'{config_file}: not a medfoundry checkpoint config (no "format": "{CHECKPOINT_FORMAT}")'
        )
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ConfigError(
            f"{config_file}: checkpoint format {config['format_version']} is newer than this medfoundry "
            f"understands ({FORMAT_VERSION}); upgrade medfoundry"
        )
    return _upgraded(config)


def _upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """An older format's config in today's terms, so that the model it describes is rebuilt exactly."""
    model = config.get("model")
    decoder = model.get("pixel_decoder") if isinstance(model, dict) else None
    if config.get("format_version", 0) < 2 and isinstance(decoder, dict):
        decoder.setdefault("up_convs", 2)  # format 1 had two convs per up-sampling block
    return config


def load_model_weights(path: Path, model: nn.Module) -> None:
    """Load ``model.safetensors`` into ``model`` (strict: every key must match)."""
    file = _resolve(path) / MODEL_FILE
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(file), strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ConfigError(
            f"{file}: weights do not fit the model ({str(e).splitlines()[-1].strip()[:200]})"
        ) from None
    if missing or unexpected:
        raise ConfigError(
            f"{file}: weights do not fit the model (missing: {', '.join(missing[:5]) or 'none'}; "
            f"unexpected: {', '.join(unexpected[:5]) or 'none'})"
        )


def load_trainer_state(path: Path) -> dict[str, Any]:
    """Read the resumable trainer state.

    Raises:
        ConfigError: the checkpoint has no trainer state (e.g. a ``best`` or exported checkpoint).
    """
    folder = _resolve(path)
    tensors_file, json_file = folder / STATE_TENSORS_FILE, folder / STATE_JSON_FILE
    if not (tensors_file.is_file() and json_file.is_file()):
        raise ConfigError(f"{path}: checkpoint has no trainer state; only 'last' checkpoints can be resumed")
    tensors = safetensors.torch.load_file(str(tensors_file))
    state: dict[str, Any] = unflatten_state(json.loads(json_file.read_text()), tensors)
    return state
