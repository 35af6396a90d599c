"""The exported encoder loads in plain timm (medfoundry not importable) and gives the same features."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml

from medfoundry.errors import ConfigError
from medfoundry.recipes import pretrain
from medfoundry.recipes.export import to_timm
from medfoundry.recipes.pretrain.config import load_pretrain_config
from medfoundry.training.model_loading import load_multitask_model
from tests.conftest import tiny_config

pytestmark = pytest.mark.integration

TIMM_ONLY = """
import sys
sys.modules["medfoundry"] = None  # any import of medfoundry fails
import safetensors.torch, timm, torch
folder, inputs, out = sys.argv[1:4]
model = timm.create_model("local-dir:" + folder, pretrained=True).eval()
x = safetensors.torch.load_file(inputs)["x"]
cfg = model.pretrained_cfg
x = (x - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / torch.tensor(cfg["std"]).view(1, 3, 1, 1)
with torch.no_grad():
    feats = model.forward_intermediates(x, indices=[1, 2, 3, 4], norm=True, intermediates_only=True)
safetensors.torch.save_file({str(i): f.contiguous() for i, f in enumerate(feats)}, out)
"""


@pytest.fixture(scope="module")
def checkpoint(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    # resnet18: every BatchNorm width is a multiple of 32, so timm's norm_layer="groupnorm" rebuilds it
    cfg = tiny_config(
        root / "run", str(small_db), **{"training.max_steps": 2, "model.encoder.name": "resnet18"}
    )
    (root / "c.yaml").write_text(yaml.safe_dump(cfg))
    return pretrain.run(load_pretrain_config(root / "c.yaml")) / "checkpoints" / "last"


def test_plain_timm_loads_the_export_and_gives_the_same_features(checkpoint: Path, tmp_path: Path) -> None:
    out = to_timm.run(checkpoint, tmp_path / "timm")
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "resnet18" and config["model_args"]["norm_layer"] == "groupnorm"
    assert sorted(p.name for p in out.iterdir()) == [
        ".medfoundry-output.json",
        "config.json",
        "model.safetensors",
    ]

    x = torch.rand(2, 3, 32, 32)
    safetensors.torch.save_file({"x": x}, str(tmp_path / "x.safetensors"))
    subprocess.run(
        [
            sys.executable,
            "-c",
            TIMM_ONLY,
            str(out),
            str(tmp_path / "x.safetensors"),
            str(tmp_path / "f.safetensors"),
        ],
        check=True,
    )
    theirs = safetensors.torch.load_file(str(tmp_path / "f.safetensors"))
    model, _ = load_multitask_model(checkpoint)
    with torch.no_grad():
        ours = model.encoder(x)
    for i, feature in enumerate(ours):
        assert torch.allclose(feature, theirs[str(i)], atol=1e-5), f"level {i}"


def test_export_refuses_a_folder_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a medfoundry checkpoint"):
        to_timm.run(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_refuses_an_encoder_timm_cannot_rebuild(small_db: Path, tmp_path: Path) -> None:
    # resnet10t's 24-channel stem cannot take timm's 32-group GroupNorm: say so, write nothing
    cfg = tiny_config(tmp_path / "run", str(small_db), **{"training.max_steps": 1})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = pretrain.run(load_pretrain_config(tmp_path / "c.yaml"))
    with pytest.raises(ConfigError, match=r"timm cannot rebuild 'resnet10t'.*num_channels \(24\)"):
        to_timm.run(run_dir / "checkpoints" / "last", tmp_path / "out")
    assert not (tmp_path / "out").exists()
