"""The one output rule: a command writes only into a new or empty folder, or one it wrote before;
anything of the user's is refused in one line, before any work, and left as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.errors import DataError
from medfoundry.output_folders import MARKER, check_output_folder, claim_output_folder, write_marker
from medfoundry.recipes import demo, predict, pretrain
from medfoundry.recipes.predict import embed
from medfoundry.recipes.pretrain.config import load_pretrain_config
from tests.conftest import tiny_config
from tests.evaluation.conftest import tasks_of

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoint(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("output_rule")
    tasks = [t for t in tasks_of(small_db) if t["name"] == "imaging_technique"]
    # resnet18: timm rebuilds its GroupNorm widths, so every export works on it
    overrides = {"training.max_steps": 1, "model.encoder.name": "resnet18"}
    (root / "c.yaml").write_text(yaml.safe_dump(tiny_config(root / "run", tasks, **overrides)))
    return pretrain.run(load_pretrain_config(root / "c.yaml")) / "checkpoints" / "last"


def _one_line_error(result: Any, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert all(part in result.output for part in parts), result.output


def test_export_onnx_onto_an_existing_file_is_refused(checkpoint: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    result = runner.invoke(app, ["export", str(checkpoint), "--onnx", str(notes)])
    _one_line_error(result, "notes.txt", "not a folder")
    assert notes.read_text() == "mine"


def test_export_hf_keeps_a_users_readme_and_reruns_into_its_own_folder(
    checkpoint: Path, tmp_path: Path
) -> None:
    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "README.md").write_text("my readme")
    (hub / "notes.md").write_text("my notes")
    _one_line_error(runner.invoke(app, ["export", str(checkpoint), "--hf", str(hub)]), "hub", "choose a new")
    assert (hub / "README.md").read_text() == "my readme" and (hub / "notes.md").read_text() == "my notes"

    ours = tmp_path / "ours"
    for _ in range(2):  # a rerun replaces the folder it wrote
        assert runner.invoke(app, ["export", str(checkpoint), "--hf", str(ours)]).exit_code == 0
    assert json.loads((ours / MARKER).read_text())["command"] == "export --hf"
    (ours / "notes.md").write_text("added by the user")
    _one_line_error(runner.invoke(app, ["export", str(checkpoint), "--hf", str(ours)]), "notes.md")
    assert (ours / "notes.md").read_text() == "added by the user"
    # another export kind does not take over this folder either
    _one_line_error(runner.invoke(app, ["export", str(checkpoint), "--timm", str(ours)]), "export --hf")


def test_export_refuses_all_outputs_before_writing_any(checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    args = ["export", str(checkpoint), "--timm", str(tmp_path / "t"), "--onnx", str(tmp_path / "taken")]
    _one_line_error(runner.invoke(app, args), "taken")
    assert not (tmp_path / "t").exists()
    same = ["export", str(checkpoint), "--timm", str(tmp_path / "s"), "--hf", str(tmp_path / "s")]
    _one_line_error(runner.invoke(app, same), "not the same one")


def test_predict_reruns_into_its_own_folder_only(checkpoint: Path, small_db: Path, tmp_path: Path) -> None:
    images = small_db.parent / "images" / "skimage"
    out = tmp_path / "out"
    for _ in range(2):
        cfg = predict.PredictConfig(checkpoint=checkpoint, input=images, output=out, progress=False)
        predict.run(cfg)
    (out / "mine.txt").write_text("mine")
    with pytest.raises(DataError, match="mine.txt, which medfoundry predict did not write"):
        predict.run(cfg)
    assert (out / "mine.txt").read_text() == "mine" and (out / "predictions.csv").is_file()


def test_embed_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "images" / "a.png")
    output = tmp_path / "features.npz"
    np.savez(output, mine=np.arange(3))

    def run() -> Path:
        cfg = embed.EmbedConfig(
            encoder="resnet10t",
            data=tmp_path / "images",
            output=output,
            pretrained=False,
            image_size=32,
            cache_dir=tmp_path / "cache",
            device="cpu",
        )
        return embed.run(cfg)

    with pytest.raises(DataError, match="features.npz: exists and was not written by medfoundry embed"):
        run()
    assert list(np.load(output)) == ["mine"]
    output.unlink()
    run()
    run()  # its own file is replaced
    assert "weights_sha256" in np.load(output)


def test_demo_refuses_a_users_pretrain_folder_before_any_work(tmp_path: Path, monkeypatch: Any) -> None:
    def reached(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the corpus build was reached")

    monkeypatch.setattr(demo.job, "build_corpus", reached)
    monkeypatch.setattr(demo.job, "build_selection", reached)  # --quick's corpus
    monkeypatch.setattr(demo.job, "_check_ready", lambda out_dir, quick: None)
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "thesis.tex").write_text("mine")
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    _one_line_error(result, f"{tmp_path}: output folder exists", "choose a new or empty folder")
    write_marker(tmp_path, "demo")  # even inside the demo's own folder
    result = runner.invoke(app, ["demo", "--quick", "--out", str(tmp_path)])
    _one_line_error(result, f"{tmp_path / 'pretrain'}: output folder exists", "choose a new or empty folder")
    assert (tmp_path / "pretrain" / "thesis.tex").read_text() == "mine"

    # a rerun into its own folder starts its pretraining and study afresh (and keeps the corpus)
    (tmp_path / "pretrain" / "thesis.tex").unlink()
    for name, command in (("pretrain", "pretrain"), ("study", "evaluate"), ("corpus", "corpus")):
        (tmp_path / name).mkdir(exist_ok=True)
        (tmp_path / name / "old.txt").write_text("")
        write_marker(tmp_path / name, command)
    with pytest.raises(RuntimeError, match="corpus build was reached"):
        demo.run(tmp_path, quick=True)
    assert not (tmp_path / "pretrain").exists() and not (tmp_path / "study").exists()
    assert (tmp_path / "corpus" / "old.txt").exists()


def test_demo_data_keeps_a_users_tasks_yaml(tmp_path: Path) -> None:
    (tmp_path / "tasks.yaml").write_text("mine")
    _one_line_error(runner.invoke(app, ["demo-data", str(tmp_path)]), str(tmp_path), "choose a new")
    assert (tmp_path / "tasks.yaml").read_text() == "mine"


def test_demo_data_is_written_whole_or_not_at_all(tmp_path: Path, monkeypatch: Any) -> None:
    """demo-data is the corpus's small selection: a build that fails part-way (a packaged file
    unreadable after stardist's images were written) leaves no half corpus and no temporary."""
    from dataclasses import replace

    from medfoundry.corpus import sources

    def unreadable(folder: Path, settings: Any) -> Any:
        raise DataError(f"{folder}/nuclear.png: expected packaged image is missing; reinstall its package")
        yield  # a generator, like every source

    out = tmp_path / "db"
    broken = replace(sources.SOURCES["mahotas"], images=unreadable)
    monkeypatch.setitem(sources.SOURCES, "mahotas", broken)
    _one_line_error(runner.invoke(app, ["demo-data", str(out)]), "nuclear.png", "missing")
    assert list(tmp_path.iterdir()) == []  # no half corpus, no temporary


def test_the_rule_for_incremental_and_replacing_commands(tmp_path: Path) -> None:
    check_output_folder(tmp_path / "new", "evaluate")
    claim_output_folder(tmp_path / "study", "evaluate")
    (tmp_path / "study" / "cells").mkdir()  # what the study writes as it goes
    check_output_folder(tmp_path / "study", "evaluate")
    with pytest.raises(DataError, match="output folder of 'medfoundry evaluate', not of 'pretrain'"):
        check_output_folder(tmp_path / "study", "pretrain")
    # folders written before markers existed are recognised by what the command always writes
    legacy = tmp_path / "corpus"
    legacy.mkdir()
    (legacy / "corpus.json").write_text("{}")
    with pytest.raises(DataError, match="not empty, and medfoundry corpus did not write it"):
        check_output_folder(legacy, "corpus")
    (legacy / "tasks.yaml").write_text("")
    check_output_folder(legacy, "corpus")
