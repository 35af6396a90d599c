"""The Hugging Face folder loads through the Hub cache offline (timm and medfoundry), carries an
honest model card, and ``push`` fails offline in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.recipes import pretrain
from medfoundry.recipes.export import to_hf
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.checkpoint import load_checkpoint_config
from medfoundry.training.model_loading import load_multitask_model
from tests.conftest import tiny_config
from tests.evaluation.conftest import tasks_of

pytestmark = pytest.mark.integration

REPO = "medfoundry-test/demo-encoder"
REVISION = "0123456789abcdef0123456789abcdef01234567"

LOAD_OFFLINE = """
import sys
import safetensors.torch, timm, torch
import medfoundry
repo, inputs, out = sys.argv[1:4]
x = safetensors.torch.load_file(inputs)["x"]
model = timm.create_model("hf-hub:" + repo, pretrained=True).eval()
cfg = timm.data.resolve_data_config({}, model=model)
normalised = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
encoder = medfoundry.load_encoder("hf-hub:" + repo)
with torch.no_grad():
    timm_features = model.forward_intermediates(
        normalised, indices=[1, 2, 3, 4], norm=True, intermediates_only=True
    )
    ours = encoder(x)
result = {f"timm{i}": f.contiguous() for i, f in enumerate(timm_features)}
result.update({f"medfoundry{i}": f.contiguous() for i, f in enumerate(ours)})
result["embedding"] = encoder.embed(x)
result["size"] = torch.tensor([encoder.image_size, cfg["input_size"][-1]])
safetensors.torch.save_file(result, out)
"""


@pytest.fixture(scope="module")
def best_checkpoint(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    tasks = tasks_of(small_db)
    # resnet18: every BatchNorm width is a multiple of 32, so timm's norm_layer="groupnorm" rebuilds it
    cfg = tiny_config(root / "run", tasks, **{"training.max_steps": 2, "model.encoder.name": "resnet18"})
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return pretrain.run(load_pretrain_config(root / "c.yaml")) / "checkpoints" / "best"


@pytest.fixture(scope="module")
def folder(best_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return to_hf.run(best_checkpoint, tmp_path_factory.mktemp("export") / "hf")


def test_timm_and_medfoundry_load_the_folder_through_the_hub_cache_offline(
    folder: Path, best_checkpoint: Path, tmp_path: Path
) -> None:
    assert sorted(p.name for p in folder.iterdir()) == [
        ".medfoundry-output.json",
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    # the Hub cache's layout: models--ORG--NAME/snapshots/REVISION/<files> and refs/main -> REVISION
    repo_dir = tmp_path / "cache" / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / REVISION)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(REVISION)
    x = torch.rand(2, 3, 32, 32)
    safetensors.torch.save_file({"x": x}, str(tmp_path / "x.safetensors"))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf_home"),
    }
    args = [sys.executable, "-c", LOAD_OFFLINE, REPO, str(tmp_path / "x.safetensors"), str(tmp_path / "o")]
    subprocess.run(args, check=True, env=env)
    got = safetensors.torch.load_file(str(tmp_path / "o"))
    model, _ = load_multitask_model(best_checkpoint)
    with torch.no_grad():
        expected = model.encoder(x)
        embedding = model.embed(x)
    for i, feature in enumerate(expected):
        assert torch.allclose(got[f"timm{i}"], feature, atol=1e-5), f"timm level {i}"
        assert torch.allclose(got[f"medfoundry{i}"], feature, atol=1e-5), f"medfoundry level {i}"
    assert torch.allclose(got["embedding"], embedding, atol=1e-5)
    assert got["size"].tolist() == [32, 32]  # the checkpoint's input size, not timm's default 224


def test_model_card_states_input_tasks_metrics_use_licence_and_patent(
    folder: Path, best_checkpoint: Path, small_db: Path
) -> None:
    card = (folder / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "apache-2.0" and header["library_name"] == "timm"
    checkpoint = load_checkpoint_config(best_checkpoint)
    for task, counts in checkpoint["sample_counts"].items():
        spec = next(t for t in checkpoint["tasks"] if t["name"] == task)
        row = f"| {task} | {spec['type']} | {', '.join(spec['classes'])} |"
        assert row in card
        assert f"| {counts['train']} | {counts['val']} |" in card.split(row)[1].splitlines()[0]
    assert checkpoint["sample_counts"]["imaging_technique"]["train"] > 0
    for task, values in checkpoint["metrics"]["val"].items():
        assert f"| {task} | loss | {values['loss']:.4f} |" in card
    assert "| nuclei_seg | mean_dice |" in card and "| nuclei_det | map_50 |" in card
    assert "3 channels, float32 in [0, 1], 32 x 32 pixels" in card
    assert "bit depth (8-bit / 255, 16-bit / 65535)" in card  # the demo tasks' intensity: auto
    assert "**Not a medical device.**" in card
    assert "EP 23209015.9" in card and "Fraunhofer" in card and "Apache-2.0" in card
    # no folder of the exporting machine leaks into a pushed folder
    assert (
        str(small_db.parent) not in card and str(small_db.parent) not in (folder / "config.json").read_text()
    )
    config = json.loads((folder / "config.json").read_text())
    assert config["medfoundry"]["source_checkpoint"] == "run/checkpoints/best"


def test_push_offline_or_unreachable_is_one_line(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    result = CliRunner().invoke(app, ["push", str(folder), REPO])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: push: the Hugging Face Hub is offline here (HF_HUB_OFFLINE is set); nothing uploaded"
    ]
    # online mode but no Hub to reach: a closed port on this machine
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    result = CliRunner().invoke(app, ["push", str(folder), REPO])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith(f"error: push: could not upload to http://127.0.0.1:9/{REPO} (")


def test_push_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    result = CliRunner().invoke(app, ["push", str(tmp_path), REPO])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {tmp_path}: not a folder written by 'medfoundry export --hf' (missing README.md, "
        "model.safetensors)"
    )


def test_an_encoder_missing_from_the_offline_cache_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    import medfoundry
    from medfoundry.errors import ConfigError

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ConfigError) as error:
        medfoundry.load_encoder(f"hf-hub:{REPO}")
    assert len(error.value.problems) == 1
    assert f"cannot load 'hf-hub:{REPO}' (LocalEntryNotFoundError" in error.value.problems[0]
    assert "read from the Hugging Face cache when offline" in error.value.problems[0]
