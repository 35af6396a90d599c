"""Study configs: the shipped ones validate; bad input stops with one line per problem, exit 2,
before anything is written."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from medfoundry.cli.main import app
from medfoundry.corpus.tasks import TASKS as CORPUS_TASKS
from medfoundry.recipes.evaluate.config import StudyConfig, load_study_config
from medfoundry.recipes.evaluate.plan import plan_study
from tests.evaluation.conftest import study_config, tasks_of

ROOT = Path(__file__).resolve().parents[2]
STUDIES = sorted([*ROOT.glob("configs/study_*.yaml"), *ROOT.glob("src/medfoundry/**/*study*.yaml")])
runner = CliRunner()


HELDOUT = [task for task in CORPUS_TASKS.values() if task.heldout]
"""The corpus's held-out tasks (what the shipped studies select), from its task registry."""


@pytest.fixture(scope="module")
def heldout_like_db(small_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small-corpus task of the same type under each of the corpus's held-out names: the
    shipped studies name those tasks, and the corpus itself takes minutes to build."""
    by_type = {task["type"]: task for task in reversed(tasks_of(small_db))}  # the first of each type
    missing = sorted({t.type for t in HELDOUT} - set(by_type))
    assert not missing, f"the small corpus has no task of type {missing} to stand in for held-out tasks"
    renamed = [{**by_type[heldout.type], "name": heldout.name} for heldout in HELDOUT]
    out = tmp_path_factory.mktemp("heldout_like") / "tasks.yaml"
    out.write_text(yaml.safe_dump({"tasks": renamed}))
    return out


@pytest.mark.parametrize("path", STUDIES, ids=[p.name for p in STUDIES])
def test_shipped_study_configs_validate(path: Path, heldout_like_db: Path) -> None:
    assert path.read_text().startswith("#"), "a shipped YAML opens with the command that runs it"
    cfg = load_study_config(path, [f"tasks={heldout_like_db}"])
    # random init: named, or a built-in baseline (all by default, or listed)
    assert "random" in {e.name for e in cfg.encoders} or cfg.baselines is None or "random" in cfg.baselines
    assert len(cfg.seed_list) >= 3
    # written in the file: relative to it (configs/../runs/...), like the checkpoints
    assert cfg.study_dir.is_absolute() and "runs" in cfg.study_dir.relative_to(path.parent.parent).parts
    checkpoints = [Path(e.source) for e in cfg.encoders if "/" in e.source]
    assert all(p.is_absolute() and p.parent.name == "checkpoints" for p in checkpoints)
    released = [e.source for e in cfg.encoders if e.source.startswith("medfoundry:")]
    assert checkpoints or released, "a shipped study evaluates a pretrained encoder"


def test_defaults_follow_the_papers(small_db: Path, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {"study_dir": "out", "tasks": str(small_db), "encoders": [{"name": "a", "source": "resnet18"}]}
        )
    )
    cfg = load_study_config(path)
    assert cfg.fractions == [0.01, 0.05, 0.1, 0.25, 0.5, 1.0] and len(cfg.seed_list) >= 3
    assert (
        cfg.modes == ["linear", "knn", "finetune", "frozen-decoder", "linear-decoder"] and cfg.probe.k == 20
    )
    assert [t.name for t in cfg.selected_tasks] == ["nuclei_seg", "nuclei_det", "imaging_technique"]


def _evaluate(tmp_path: Path, cfg: dict[str, Any]) -> tuple[int, str]:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["evaluate", str(path)])
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"task_names": ["imaging_tecnique"]},
            r"task_names: unknown task 'imaging_tecnique'; did you mean 'imaging_technique'",
        ),
        (
            {"encoders": [{"name": "x", "source": "resnet181"}]},
            r"encoders.x: unknown timm model 'resnet181'",
        ),
        ({"fractions": [0.1, 1.5]}, r"fractions.1: Input should be less than or equal to 1 \(got 1.5\)"),
        ({"fractions": [0.0]}, r"fractions.0: Input should be greater than 0"),
        ({"reference": {"encoder": "imagenet"}}, r"reference.encoder: 'imagenet' is not in the study"),
        ({"reference": {"encoder": "scratch"}}, r"reference.encoder: unknown encoder 'scratch'"),
        (
            {"task_modes": {"imaging_technique": ["frozen-decoder"]}},
            r"task_modes.imaging_technique: 'frozen-decoder' does not apply",
        ),
        (
            {"primary_metrics": {"imaging_technique": "dice"}},
            r"'dice' is not a metric of this task \(accuracy, ",
        ),
        ({"mode": "linear"}, r"study.yaml: mode: unknown key \(valid: study_dir, tasks, task_names"),
        # fractions the data cannot honour: 1% of imaging_technique's 292 training tiles cannot show 5 classes
        (
            {"task_names": ["imaging_technique"], "fractions": [0.01, 1.0]},
            r"fractions: 0.01 of task 'imaging_technique' is 3 of its 292 training samples, fewer than the "
            r"5 it takes to show each class once; use fractions of at least 0\.0\d+",
        ),
        (
            {"task_names": ["imaging_technique"], "few_shot": {"shots": [1, 16]}},
            r"few_shot.shots: 16 is more than task 'imaging_technique' has of class 'h_and_e' "
            r"\(7 training samples\); use at most 7",
        ),
        (
            {"encoders": [{"name": "px", "source": "pixels"}]},
            r"encoders.px: the pixels encoder has no weights to train, but task\(s\) 'nuclei_seg' "
            r"\(finetune, frozen-decoder, linear-decoder\), 'nuclei_det' \(finetune, frozen-decoder\), "
            r"'imaging_technique' "
            r"\(finetune\) run training modes",
        ),
        (
            {"encoders": [{"name": "px", "source": "pixels", "pretrained": False}]},
            r"encoders.0: Value error, the pixels encoder has no weights",
        ),
        (
            {"primary_metrics": {"imaging_technique": "ece"}},
            r"primary_metrics.imaging_technique: 'ece' is lower-is-better",
        ),
        (
            {"task_image_size": {"nuclei_sg": 64}},
            r"task_image_size: unknown task 'nuclei_sg'; did you mean 'nuclei_seg'",
        ),
        (
            {"task_fractions": {"nuclei_sg": [0.5]}},
            r"task_fractions: unknown task 'nuclei_sg'; did you mean 'nuclei_seg'",
        ),
        (  # a task's own fractions are checked as the study's are
            {"task_names": ["imaging_technique"], "task_fractions": {"imaging_technique": [0.01, 1.0]}},
            r"task_fractions: 0.01 of task 'imaging_technique' is 3 of its 292 training samples",
        ),
        ({"probe": {"feature_levels": [-5, -1]}}, r"probe.feature_levels: -5 is not a level of encoder"),
        (
            {"probe": {"feature_level_choices": [[0], [-6, -1]]}},
            r"probe.feature_level_choices: -6 is not a level of encoder",
        ),
        (
            {"bootstrap": {"resamples": 100}},
            r"bootstrap.resamples: Input should be greater than or equal to 1000",
        ),
    ],
)
def test_bad_study_exits_2_with_one_line_and_writes_nothing(
    small_db: Path, checkpoint: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    cfg = study_config(tmp_path / "study", tasks_of(small_db), checkpoint, **change)
    code, output = _evaluate(tmp_path, cfg)
    assert code == 2, output
    assert output.startswith("error: ") and len(output.strip().splitlines()) == 1, output
    assert re.search(message, output), output
    assert not (tmp_path / "study").exists()


@pytest.mark.integration
def test_a_task_can_have_its_own_input_size(small_db: Path, checkpoint: Path, tmp_path: Path) -> None:
    cfg = study_config(
        tmp_path / "study",
        tasks_of(small_db),
        checkpoint,
        task_names=["nuclei_seg", "imaging_technique"],
        task_modes={"nuclei_seg": ["frozen-decoder"], "imaging_technique": ["linear"]},
        task_image_size={"nuclei_seg": 48},
        fractions=[1.0],
        seeds=1,
        baselines=[],
        keep_checkpoints=True,
    )
    cfg["encoders"] = cfg["encoders"][:1]
    code, output = _evaluate(tmp_path, cfg)
    assert code == 0, output
    study = tmp_path / "study"
    (trained,) = (study / "checkpoints").iterdir()
    config = json.loads((trained / "config.json").read_text())
    assert config["model"]["image_size"] == 48  # the task's size, not the study's 32
    cached = sorted(p.name.rsplit("-", 1)[0] for p in (study / "pixels").iterdir() if p.is_dir())
    assert cached == ["imaging_technique-32px", "nuclei_seg-48px"]


def test_a_task_can_have_its_own_fractions_and_seeds(
    small_db: Path, checkpoint: Path, tmp_path: Path
) -> None:
    """A dense task's cells train a decoder: a study can give it fewer fractions and seeds than
    the probes of its classification tasks."""
    cfg = study_config(
        tmp_path / "study",
        tasks_of(small_db),
        checkpoint,
        task_names=["nuclei_seg", "imaging_technique"],
        task_modes={"nuclei_seg": ["frozen-decoder"], "imaging_technique": ["linear"]},
        fractions=[0.5, 1.0],
        seeds=3,
        task_fractions={"nuclei_seg": [1.0]},
        task_seeds={"nuclei_seg": [7]},
        baselines=[],
    )
    cfg["encoders"] = cfg["encoders"][:1]
    cells = plan_study(StudyConfig.model_validate(cfg)).cells
    by_task = {
        task: sorted((c.fraction, c.seed) for c in cells if c.task == task)
        for task in ("nuclei_seg", "imaging_technique")
    }
    assert by_task["nuclei_seg"] == [(1.0, 7)]
    assert by_task["imaging_technique"] == [(f, s) for f in (0.5, 1.0) for s in range(3)]


def test_folder_that_is_not_a_checkpoint_exits_2(small_db: Path, checkpoint: Path, tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    cfg = study_config(tmp_path / "study", tasks_of(small_db), checkpoint)
    cfg["encoders"][0]["source"] = str(tmp_path / "weights")
    code, output = _evaluate(tmp_path, cfg)
    assert code == 2 and output.strip() == (
        f"error: encoders.pretrained: {tmp_path / 'weights'}: not a medfoundry checkpoint "
        "(expected a folder with config.json and model.safetensors)"
    )
    assert not (tmp_path / "study").exists()


def test_timm_pretrained_offline_exits_2_before_any_work(
    small_db: Path, checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cfg = study_config(tmp_path / "study", tasks_of(small_db), checkpoint)
    cfg["encoders"].append({"name": "imagenet", "source": "resnet10t"})
    code, output = _evaluate(tmp_path, cfg)
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert (
        "encoders.imagenet: encoder 'resnet10t' (pretrained=True): " in output and "internet access" in output
    )
    assert not (tmp_path / "study").exists()


def test_embed_writes_features_with_sample_ids(small_db: Path, checkpoint: Path, tmp_path: Path) -> None:
    args = [
        "embed",
        str(checkpoint),
        str(small_db.parent / "imaging_technique.csv"),
        "-o",
        str(tmp_path / "f.npz"),
    ]
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "f.npz") as data:
        assert data["features"].shape == (325, 512)
        assert data["ids"][0] == "images/stardist/nuclei_y000_x000.png" and str(data["image_size"]) == "32"
    folder = runner.invoke(
        app,
        [
            "embed",
            "resnet10t",
            str(small_db.parent / "images" / "stardist"),
            "--random",
            "-o",
            str(tmp_path / "n.npz"),
            "--image-size",
            "32",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
    )
    assert folder.exit_code == 0, folder.output
    with np.load(tmp_path / "n.npz") as data:
        assert len(data["ids"]) == 71 and data["ids"][0] == "histo.png"


def test_embed_bad_input_exits_2(checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["embed", str(checkpoint), str(tmp_path), "-o", str(tmp_path / "f.txt")])
    assert result.exit_code == 2 and "f.txt: output must end in .npz or .parquet" in result.output
    result = runner.invoke(app, ["embed", str(checkpoint), str(tmp_path), "-o", str(tmp_path / "f.npz")])
    assert result.exit_code == 2 and "no images" in result.output


def test_embed_reads_any_source_of_a_task_database(small_db: Path, checkpoint: Path, tmp_path: Path) -> None:
    from nibabel.testing import data_path

    volume = Path(data_path) / "anatomical.nii"  # nibabel's real MR test volume, 25 axial slices
    task = {
        "name": "brain",
        "type": "masked_image",
        "source": {"type": "volume", "images": str(volume)},
        "preprocessing": {"intensity": {"type": "percentile", "low": 1, "high": 99}},
    }
    (tmp_path / "tasks.yaml").write_text(yaml.safe_dump({"tasks": [task]}))
    out = tmp_path / "brain.npz"
    args = ["embed", str(checkpoint), str(tmp_path / "tasks.yaml"), "-o", str(out)]
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        ids, features = data["ids"].tolist(), data["features"]
    assert sorted(ids) == sorted(f"{os.path.relpath(volume, tmp_path)}#{k}" for k in range(25))
    assert len({row.tobytes() for row in features}) == 25  # every slice its own features

    several = runner.invoke(app, ["embed", str(checkpoint), str(small_db), "-o", str(out)])
    assert several.exit_code == 2 and "choose one with --task" in several.output
    unknown = runner.invoke(app, ["embed", str(checkpoint), str(small_db), "--task", "x", "-o", str(out)])
    assert unknown.exit_code == 2 and "no task 'x'" in unknown.output
