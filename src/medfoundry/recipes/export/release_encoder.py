"""Recipe (for maintainers): a released encoder ``medfoundry:<name>`` made from a checkpoint.

Writes ``<root>/<name>/`` (``root`` defaults to the package's ``medfoundry/weights``): the
checkpoint's ``config.json`` with task sources reduced to file names, its weights in float16 (half
the size: a ResNet-18 checkpoint with its decoders and heads is 57 MB in float32, 29 MB in
float16; a model card's numbers are measured on the float16 file, loaded back as float32),
``release.json`` (the weights' SHA-256, one line of what it is, the command and config that
reproduce it) and ``MODEL_CARD.md``. Nothing is written unless the folder is new and the written
checkpoint loads.

    python -m medfoundry.recipes.export.release_encoder RUN/checkpoints/best NAME \\
        --summary "..." --card CARD.md --command "medfoundry pretrain ..." --recipe CONFIG.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import safetensors.torch

from medfoundry import released
from medfoundry.errors import ConfigError
from medfoundry.recipes.export.to_hf import without_local_paths
from medfoundry.released import RELEASE_FILE, WEIGHTS_FILE, file_sha256
from medfoundry.safe_writes import write_folder_atomically
from medfoundry.training.checkpoint import CONFIG_FILE, load_checkpoint_config
from medfoundry.training.model_loading import load_multitask_model

__all__ = ["run"]

CARD_FILE = "MODEL_CARD.md"


def run(
    checkpoint: Path,
    name: str,
    *,
    summary: str,
    command: str,
    card: Path,
    recipe: Path,
    root: Path | None = None,
) -> Path:
    """Write the released encoder ``name`` from ``checkpoint``; returns its folder.

    Raises:
        ConfigError: not a checkpoint, a name that is taken, or a missing card or recipe file.
    """
    folder = (root or released.WEIGHTS_ROOT) / name
    if folder.exists():
        raise ConfigError(f"{folder}: a released encoder of that name exists; choose a new name")
    for file in (card, recipe):
        if not Path(file).is_file():
            raise ConfigError(f"{file}: no such file")
    config = without_local_paths(load_checkpoint_config(checkpoint))
    tensors = safetensors.torch.load_file(str(Path(checkpoint) / WEIGHTS_FILE))
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}

    def write(tmp: Path) -> None:
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        safetensors.torch.save_file(half, str(tmp / WEIGHTS_FILE))
        load_multitask_model(tmp)  # the released files rebuild the model
        release = {
            "name": name,
            "summary": summary,
            "sha256": file_sha256(tmp / WEIGHTS_FILE),
            "dtype": "float16",
            "command": command,
            "recipe": Path(recipe).read_text(encoding="utf-8"),
            "trained_steps": (config.get("training") or {}).get("step"),
        }
        (tmp / RELEASE_FILE).write_text(json.dumps(release, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_FILE).write_text(Path(card).read_text(encoding="utf-8"), encoding="utf-8")

    folder.parent.mkdir(parents=True, exist_ok=True)
    return write_folder_atomically(folder, write)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("name")
    parser.add_argument("--summary", required=True)
    parser.add_argument("--command", required=True, help="the command that trained the checkpoint")
    parser.add_argument("--card", type=Path, required=True, help="the model card (Markdown)")
    parser.add_argument("--recipe", type=Path, required=True, help="the pretraining config it used")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    folder = run(
        args.checkpoint,
        args.name,
        summary=args.summary,
        command=args.command,
        card=args.card,
        recipe=args.recipe,
        root=args.root,
    )
    print(folder)


if __name__ == "__main__":  # pragma: no cover
    main()
