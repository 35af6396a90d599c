"""Recipe: export a checkpoint's encoder as a plain timm model folder.

The folder holds ``model.safetensors`` and timm's ``config.json`` (architecture, the arguments
that rebuild it such as ``norm_layer`` or ``img_size``, and the input preprocessing), so that
timm alone loads it::

    timm.create_model("local-dir:DIR", pretrained=True)
    # or, with the architecture named explicitly:
    timm.create_model(NAME, pretrained=True, num_classes=0, **model_args,
                      pretrained_cfg_overlay=dict(file="DIR/model.safetensors"))

The export checks itself: it reloads the folder with timm and compares the feature maps with
medfoundry's encoder before it is moved into place. For plain ViTs the exported model gives the
ViT's own (stride-16) features; the simple feature pyramid stays in the medfoundry checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import timm
import torch

from medfoundry.errors import ConfigError
from medfoundry.models.encoder import Encoder
from medfoundry.output_folders import check_output_folder, write_marker
from medfoundry.safe_writes import write_folder_atomically
from medfoundry.training.model_loading import load_multitask_model

__all__ = ["COMMAND", "run", "write_timm_folder"]

COMMAND = "export --timm"


def run(checkpoint: Path, out_dir: Path) -> Path:
    """Write the encoder of ``checkpoint`` to ``out_dir`` as a timm model; returns ``out_dir``.

    Raises:
        ConfigError: not a checkpoint, or timm cannot rebuild this encoder from its config.
        DataError: ``out_dir`` is not new, empty or an earlier ``export --timm`` folder
            (``output_folders``; before any work).
    """
    check_output_folder(Path(out_dir), COMMAND)
    model, config = load_multitask_model(checkpoint)
    encoder = model.encoder

    def write(tmp: Path) -> None:
        write_timm_folder(tmp, checkpoint, encoder, config=config)
        write_marker(tmp, COMMAND, list_files=True)

    return write_folder_atomically(Path(out_dir), write)


def write_timm_folder(folder: Path, checkpoint: Path, encoder: Encoder, *, config: dict[str, Any]) -> None:
    """``model.safetensors`` and timm's ``config.json`` of ``encoder`` in ``folder``, checked by
    reloading them with timm.

    ``config.json`` records the checkpoint's input size as timm's ``input_size`` and, under
    ``medfoundry``, the checkpoint's tasks (with their preprocessing), input contract, sample
    counts, validation metrics and versions.

    Raises:
        ConfigError: timm cannot rebuild the encoder from the written folder.
    """
    size = int(config["model"]["image_size"])
    timm.models.save_for_hf(
        encoder.backbone,
        str(folder),
        safe_serialization=True,
        data_config={"input_size": (3, size, size)},
        model_config={
            "medfoundry": {
                "source_checkpoint": str(checkpoint),
                "image_size": size,
                "input": config.get("input", {}),
                "tasks": config["tasks"],
                "sample_counts": config.get("sample_counts", {}),
                "metrics": config.get("metrics", {}),
                "training": config.get("training", {}),
                "versions": config.get("versions", {}),
            }
        },
    )
    _check_reload(folder, encoder)


@torch.no_grad()
def _check_reload(folder: Path, encoder: Encoder) -> None:
    """timm must rebuild the same network from the folder alone."""
    cfg = json.loads((folder / "config.json").read_text())
    try:
        reloaded: Any = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    except Exception as e:  # noqa: BLE001 - any failure here means the export is unusable
        raise ConfigError(
            f"export: timm cannot rebuild '{cfg.get('architecture')}' with arguments {cfg.get('model_args')} "
            f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    size = cfg["pretrained_cfg"]["input_size"][-1]
    x = (torch.rand(1, 3, size, size) - encoder.mean) / encoder.std
    ours = encoder.backbone.forward_intermediates(
        x, indices=encoder.indices, norm=True, intermediates_only=True
    )
    theirs = reloaded.forward_intermediates(x, indices=encoder.indices, norm=True, intermediates_only=True)
    for a, b in zip(ours, theirs, strict=True):
        if not torch.allclose(a, b, atol=1e-5, rtol=1e-4):
            raise ConfigError(
                "export: features of the timm-reloaded encoder differ from medfoundry's; not exported"
            )
