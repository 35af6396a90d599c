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
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from safetensors import SafetensorError
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.released import is_released, released_folder
from medfoundry.safe_writes import write_folder_atomically
from medfoundry.training.checkpoint_config import check_checkpoint_config
from medfoundry.training.state_io import flatten_state, unflatten_state

__all__ = [
    "CHECKPOINT_FORMAT",
    "check_checkpoint_files",
    "load_checkpoint_config",
    "load_model_weights",
    "load_trainer_state",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "medfoundry-checkpoint"
FORMAT_VERSION = 2  # 2: the pixel decoder's blocks below stride 4 have one conv (was two)
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_TENSORS_FILE = "trainer_state.safetensors"
STATE_JSON_FILE = "trainer_state.json"


def save_checkpoint(
    path: Path, model: nn.Module, config: dict[str, Any], *, trainer_state: dict[str, Any] | None = None
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

    return write_folder_atomically(path, write)


def _resolve(path: Path) -> Path:
    """The checkpoint folder, or its ``.old`` copy if a crash hit between the renames; a released
    encoder's folder for ``medfoundry:<name>`` (its weights' SHA-256 checked)."""
    if is_released(path):
        return released_folder(path)
    path = Path(path)
    old = path.parent / f".{path.name}.old"
    if not path.exists() and old.exists():
        return old
    return path


def load_checkpoint_config(path: Path) -> dict[str, Any]:
    """Read and check a checkpoint's ``config.json``: its format, and that its ``model`` and
    ``tasks`` rebuild a model (keys, types, and only allowed timm arguments).

    Raises:
        ConfigError: the folder is not a medfoundry checkpoint, was written by a newer format,
            or its config is damaged; one line naming the file and key.
    """
    folder = _resolve(path)
    config_file, model_file = folder / CONFIG_FILE, folder / MODEL_FILE
    if not (config_file.is_file() and model_file.is_file()):
        raise ConfigError(
            f"{path}: not a medfoundry checkpoint (expected a folder with {CONFIG_FILE} and {MODEL_FILE})"
        )
    config = _read_json(config_file)
    if not isinstance(config, dict) or config.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(
            f'{config_file}: not a medfoundry checkpoint config (no "format": "{CHECKPOINT_FORMAT}")'
        )
    version = config.get("format_version", 0)
    if not isinstance(version, int):
        raise ConfigError(f"{config_file}: format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ConfigError(
            f"{config_file}: checkpoint format {version} is newer than this medfoundry "
            f"understands ({FORMAT_VERSION}); upgrade medfoundry"
        )
    check_checkpoint_config(config, str(config_file))
    return _upgraded(config)


def _upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """An older format's config in today's terms, so that the model it describes is rebuilt exactly."""
    model = config.get("model")
    decoder = model.get("pixel_decoder") if isinstance(model, dict) else None
    if config.get("format_version", 0) < 2 and isinstance(decoder, dict):
        decoder.setdefault("up_convs", 2)  # format 1 had two convs per up-sampling block
    return config


def check_checkpoint_files(path: Path, resumable: bool = False) -> None:
    """Check, without loading any tensor, that a checkpoint's files are complete: its config,
    the safetensors headers (which must cover each file exactly) and, for ``resumable``, the
    trainer state. Resuming runs this before anything is cached or written.

    Raises:
        ConfigError: naming the damaged file.
    """
    load_checkpoint_config(path)
    folder = _resolve(path)
    files = [folder / MODEL_FILE]
    if resumable:
        _require_trainer_state(path)
        files.append(folder / STATE_TENSORS_FILE)
        _read_json(folder / STATE_JSON_FILE)
    for file in files:
        try:
            with safetensors.safe_open(str(file), "pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise ConfigError(f"{file}: damaged or truncated safetensors file ({e})") from None


def load_model_weights(path: Path, model: nn.Module) -> None:
    """Load ``model.safetensors`` into ``model`` (strict: every key must match).

    Raises:
        ConfigError: the file is damaged, or its weights are not those of the model that the
            checkpoint's config describes (another architecture, other sizes).
    """
    file = _resolve(path) / MODEL_FILE
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(file), strict=False)
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{file}: damaged or truncated safetensors file ({e})") from None
    except RuntimeError as e:  # shape mismatches
        raise ConfigError(
            f"{file}: weights do not fit the model described by its {CONFIG_FILE} "
            f"({str(e).splitlines()[-1].strip()[:200]})"
        ) from None
    if missing or unexpected:
        raise ConfigError(
            f"{file}: weights do not fit the model described by its {CONFIG_FILE} "
            f"(missing: {', '.join(sorted(missing)[:5]) or 'none'}; "
            f"unexpected: {', '.join(sorted(unexpected)[:5]) or 'none'})"
        )


def load_trainer_state(path: Path) -> dict[str, Any]:
    """Read the resumable trainer state.

    Raises:
        ConfigError: the checkpoint has no trainer state (e.g. a ``best`` or exported
            checkpoint), or it is damaged.
    """
    _require_trainer_state(path)
    folder = _resolve(path)
    tensors_file, json_file = folder / STATE_TENSORS_FILE, folder / STATE_JSON_FILE
    try:
        tensors = safetensors.torch.load_file(str(tensors_file))
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{tensors_file}: damaged or truncated safetensors file ({e})") from None
    try:
        state: dict[str, Any] = unflatten_state(_read_json(json_file), tensors)
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{json_file}: does not match {tensors_file} ({type(e).__name__}: {e})") from None
    return state


def _require_trainer_state(path: Path) -> None:
    folder = _resolve(path)
    if not ((folder / STATE_TENSORS_FILE).is_file() and (folder / STATE_JSON_FILE).is_file()):
        raise ConfigError(f"{path}: checkpoint has no trainer state; only 'last' checkpoints can be resumed")


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{file}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{file}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{file}: cannot be read ({e.strerror or e})") from None
