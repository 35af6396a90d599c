"""Recipes: a Hugging Face Hub folder of a checkpoint's encoder (``medfoundry export --hf DIR``) and
its upload (``medfoundry push DIR ORG/NAME``).

The folder is what timm publishes (``timm.models.push_to_hf_hub`` writes the same files):
``model.safetensors``, timm's ``config.json`` (architecture, the arguments that rebuild it,
input size, mean/std; medfoundry's tasks, preprocessing, sample counts and metrics under
``medfoundry``) and a model card ``README.md`` (``model_card``). Once uploaded (or placed in the
Hugging Face cache), both ``timm.create_model("hf-hub:ORG/NAME", pretrained=True)`` and
``medfoundry.load_encoder("hf-hub:ORG/NAME")`` load it. Local paths of the training data are
reduced to file names, so a pushed folder names no folder of the machine it was made on.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from medfoundry.errors import ConfigError
from medfoundry.output_folders import check_output_folder, write_marker
from medfoundry.recipes.export.model_card import model_card
from medfoundry.recipes.export.to_timm import write_timm_folder
from medfoundry.safe_writes import write_folder_atomically
from medfoundry.training.model_loading import load_multitask_model

__all__ = ["FOLDER_FILES", "push", "run", "without_local_paths"]

FOLDER_FILES = ("README.md", "config.json", "model.safetensors")
PATH_KEYS = ("path", "images", "labels", "root")
COMMAND = "export --hf"


def run(checkpoint: Path, out_dir: Path) -> Path:
    """Write the Hub folder of ``checkpoint``'s encoder to ``out_dir``; returns ``out_dir``.

    Raises:
        ConfigError: not a checkpoint, or timm cannot rebuild the encoder (nothing written).
        DataError: ``out_dir`` is not new, empty or an earlier ``export --hf`` folder, e.g. it
            holds a README.md of the user's (``output_folders``; before any work).
    """
    check_output_folder(Path(out_dir), COMMAND)
    model, config = load_multitask_model(checkpoint)
    public = without_local_paths(config)
    checkpoint = Path(checkpoint)
    name = "/".join(p.name for p in (checkpoint.parent.parent, checkpoint.parent, checkpoint) if p.name)

    def write(tmp: Path) -> None:
        write_timm_folder(tmp, Path(name), model.encoder, config=public)
        timm_config = json.loads((tmp / "config.json").read_text())
        (tmp / "README.md").write_text(model_card(public, model.encoder, timm_config), encoding="utf-8")
        write_marker(tmp, COMMAND, list_files=True)

    return write_folder_atomically(Path(out_dir), write)


def without_local_paths(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a checkpoint config whose task sources name files, not the folders they were in."""
    public = copy.deepcopy(config)
    for task in public["tasks"]:
        source = task["source"]
        for key in PATH_KEYS:
            if source.get(key):
                source[key] = Path(source[key]).name
    return public


def push(folder: Path, repo_id: str, *, private: bool = False, revision: str | None = None) -> str:
    """Upload an exported folder to the Hub repository ``repo_id`` (created if needed).

    Returns:
        The URL of the upload's commit.

    Raises:
        ConfigError: not an exported folder, a malformed repository id, the Hub offline or
            unreachable, no token, or the Hub refusing the upload (one line; nothing uploaded
            unless the Hub accepted the commit).
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    folder = Path(folder)
    missing = [f for f in FOLDER_FILES if not (folder / f).is_file()]
    if missing:
        raise ConfigError(
            f"{folder}: not a folder written by 'medfoundry export --hf' (missing {', '.join(missing)})"
        )
    try:
        validate_repo_id(repo_id)
        if "/" not in repo_id:
            raise HFValidationError("give it as ORG/NAME")
    except HFValidationError as e:
        reason = str(e).splitlines()[0]
        raise ConfigError(f"push: '{repo_id}' is not a Hub repository id ({reason})") from None
    if constants.HF_HUB_OFFLINE:
        raise ConfigError(
            "push: the Hugging Face Hub is offline here (HF_HUB_OFFLINE is set); nothing uploaded"
        )
    if get_token() is None:
        raise ConfigError("push: no Hugging Face token; log in with `hf auth login` or set HF_TOKEN")
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        commit: Any = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            allow_patterns=list(FOLDER_FILES),
            revision=revision,
            commit_message="Add a medfoundry encoder",
        )
    except Exception as e:  # noqa: BLE001 - network and Hub errors come in many types
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ConfigError(
            f"push: could not upload to {constants.ENDPOINT}/{repo_id} ({type(e).__name__}: {first}); "
            "check the network, your token's write access and the repository id"
        ) from None
    return str(getattr(commit, "commit_url", commit))
