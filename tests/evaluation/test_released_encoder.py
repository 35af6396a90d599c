"""Released encoders: ``medfoundry:<name>`` wherever a checkpoint is accepted, SHA-256 checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medfoundry import released
from medfoundry.cli.main import app
from medfoundry.errors import ConfigError
from medfoundry.evaluation.pretrained_encoder import load_encoder
from medfoundry.recipes.evaluate.config import load_study_config
from medfoundry.recipes.export import release_encoder

runner = CliRunner()


@pytest.fixture()
def weights_root(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A release ``tiny`` of the tiny checkpoint in a weights folder of its own."""
    root = tmp_path / "weights"
    (tmp_path / "card.md").write_text("# tiny\n\nThree steps on the small corpus.\n")
    (tmp_path / "recipe.yaml").write_text("seed: 0\n")
    monkeypatch.setattr(released, "WEIGHTS_ROOT", root)
    release_encoder.run(
        checkpoint, "tiny", summary="resnet10t, 3 steps (tests)", command="medfoundry pretrain c.yaml",
        card=tmp_path / "card.md", recipe=tmp_path / "recipe.yaml",
    )  # fmt: skip
    return root


def test_a_release_is_float16_with_its_checksum_and_no_local_paths(weights_root: Path) -> None:
    folder = weights_root / "tiny"
    info = json.loads((folder / "release.json").read_text())
    assert info["sha256"] == released.file_sha256(folder / "model.safetensors")
    assert info["dtype"] == "float16" and info["recipe"] == "seed: 0\n"
    config_step = json.loads((folder / "config.json").read_text())["training"]["step"]
    assert info["trained_steps"] == config_step > 0  # the step the checkpoint was saved at
    config = json.loads((folder / "config.json").read_text())
    assert all("/" not in t["source"]["path"] for t in config["tasks"])
    assert (folder / "MODEL_CARD.md").read_text().startswith("# tiny")


def test_released_encoder_embeds_like_its_checkpoint(checkpoint: Path, weights_root: Path) -> None:
    images = torch.rand(4, 3, 32, 32)
    original = load_encoder(checkpoint).embed(images)
    shipped = load_encoder("medfoundry:tiny").embed(images)
    assert shipped.dtype == torch.float32
    assert torch.allclose(shipped, original, rtol=1e-2, atol=1e-2)  # float16 weights
    random = load_encoder("medfoundry:tiny", pretrained=False).embed(images)
    assert not torch.allclose(random, original, atol=1e-2)


def test_damaged_weights_and_unknown_names_are_refused_in_one_line(weights_root: Path) -> None:
    weights = weights_root / "tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"model.safetensors: SHA-256 .* is not the released .*reinstall"):
        load_encoder("medfoundry:tiny")
    with pytest.raises(ConfigError, match=r"unknown released encoder 'tinny'; did you mean 'tiny'\?"):
        load_encoder("medfoundry:tinny")


def test_a_name_is_never_released_twice(checkpoint: Path, weights_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="a released encoder of that name exists"):
        release_encoder.run(
            checkpoint,
            "tiny",
            summary="x",
            command="x",
            card=tmp_path / "card.md",
            recipe=tmp_path / "recipe.yaml",
        )


def test_a_study_names_it_as_is(small_db: Path, weights_root: Path, tmp_path: Path) -> None:
    """Not a path: neither the file's folder nor the current one is put in front of it."""
    study = {
        "study_dir": "s",
        "tasks": str(small_db),
        "encoders": [{"name": "r", "source": "medfoundry:tiny"}],
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    cfg = load_study_config(tmp_path / "study.yaml", ["encoders.0.source=medfoundry:tiny"])
    assert cfg.encoders[0].source == "medfoundry:tiny"


@pytest.mark.integration
def test_commands_take_it(small_db: Path, weights_root: Path, tmp_path: Path) -> None:
    listed = runner.invoke(app, ["ls"])
    assert "medfoundry:tiny: resnet10t, 3 steps (tests)" in listed.output

    features = tmp_path / "f.npz"
    result = runner.invoke(
        app, ["embed", "medfoundry:tiny", str(small_db), "--task", "imaging_technique", "-o", str(features),
              "--cache-dir", str(tmp_path / "cache")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with np.load(features) as data:
        assert data["features"].shape[1] == 512

    image = next(small_db.parent.rglob("*.png"))
    result = runner.invoke(app, ["predict", "medfoundry:tiny", str(image), "-o", str(tmp_path / "p"),
                                 "--task", "imaging_technique", "--no-progress"])  # fmt: skip
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "medfoundry:tiny", "--onnx", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    assert "imaging_technique" in json.loads((tmp_path / "onnx" / "onnx_config.json").read_text())["heads"]
