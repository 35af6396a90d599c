"""Benchmark: the offline corpus, from packages to a pretraining-ready database.

Questions:

- ``corpus``: how long does ``medfoundry corpus`` take from scratch on this machine, how large
  is the result, and how long does a rerun on the up-to-date folder take (it should do nothing)?
- ``format``: which file format should corpus images use? The same sample of corpus images
  (every k-th image of ``all_images``) is written as PNG at zlib level 1 (the corpus format),
  at Pillow's default level 6, and as uncompressed TIFF, and read back through medfoundry's
  image reader (which is what fills the preprocessing cache): bytes on disk and images/s.
- ``pretrain``: how fast is the demo's pretraining on this machine (``--steps``, ``--threads``)?

Stages are functions ``stage(args, workdir) -> rows`` in ``STAGES``; each row is one measured
quantity (``stage``, ``metric``, ``value``, ``unit``). Adding a stage (e.g. the images/s of the
full demo pretraining, ``pretrain``) is one function and one ``STAGES`` entry; ``--stages`` picks them.

Run: ``python benchmarks/pretrain_throughput.py`` (``--stages corpus format --keep DIR``).
Writes one ``benchmarks/results/pretrain_throughput_<stage>-cpu<threads>t-uint8-torch<ver>.csv``
per stage, each with a JSON sidecar (command, git SHA, versions).
Non-goals: GPU throughput (``gpu_throughput.py``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from medfoundry.corpus import build_corpus
from medfoundry.data import read_image
from medfoundry.recipes import pretrain
from medfoundry.recipes.demo import demo_config, labelled_tasks
from medfoundry.recipes.pretrain.config import load_pretrain_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

Row = dict[str, Any]


def corpus_stage(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Full build from scratch, its size, and a rerun on the up-to-date folder."""
    out = args.keep or workdir / "corpus"
    start = time.perf_counter()
    built = build_corpus(out, progress=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - start
    if not built.built:
        raise SystemExit(f"{out} was already up to date: give --keep an empty folder to time a build")
    start = time.perf_counter()
    rerun = build_corpus(out, progress=lambda line: None)
    rerun_seconds = time.perf_counter() - start
    assert not rerun.built
    files = [p for p in out.rglob("*") if p.is_file()]
    manifest = built.manifest
    return [
        {"stage": "corpus", "metric": "build", "value": round(seconds, 1), "unit": "s"},
        {"stage": "corpus", "metric": "rerun (up to date)", "value": round(rerun_seconds, 2), "unit": "s"},
        {
            "stage": "corpus",
            "metric": "size",
            "value": round(sum(p.stat().st_size for p in files) / 2**20, 1),
            "unit": "MiB",
        },
        {"stage": "corpus", "metric": "files", "value": len(files), "unit": "files"},
        {"stage": "corpus", "metric": "images", "value": manifest["total_images"], "unit": "images"},
        {
            "stage": "corpus",
            "metric": "pretraining images",
            "value": manifest["pretraining_images"],
            "unit": "images",
        },
        {"stage": "corpus", "metric": "sources", "value": len(manifest["sources"]), "unit": "sources"},
        {"stage": "corpus", "metric": "tasks", "value": len(manifest["tasks"]), "unit": "tasks"},
    ]


def format_stage(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Bytes and read speed of one sample of corpus images in three formats."""
    corpus = args.keep or workdir / "corpus"
    if not (corpus / "all_images.csv").is_file():
        build_corpus(corpus, progress=lambda line: None)
    with (corpus / "all_images.csv").open(newline="") as f:
        paths = [corpus / row["image"] for row in csv.DictReader(f)][:: args.every]
    pixels = [np.asarray(Image.open(p)) for p in paths]
    rows: list[Row] = []
    for name, suffix, options in (
        ("png zlib 6 (Pillow default)", ".png", {}),
        ("png zlib 1 (corpus)", ".png", {"compress_level": 1}),
        ("tiff uncompressed", ".tif", {}),
    ):
        folder = workdir / "".join(c if c.isalnum() else "_" for c in name)
        folder.mkdir()
        written = [folder / f"{i:05d}{suffix}" for i in range(len(pixels))]
        start = time.perf_counter()
        for array, path in zip(pixels, written, strict=True):
            Image.fromarray(array).save(path, **options)
        write_seconds = time.perf_counter() - start
        start = time.perf_counter()
        for path in written:
            read_image(path)
        read_seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in written) / 2**20
        rows += [
            {
                "stage": "format",
                "metric": f"{name}: size of {len(written)} images",
                "value": round(size, 2),
                "unit": "MiB",
            },
            {
                "stage": "format",
                "metric": f"{name}: write",
                "value": round(len(written) / write_seconds),
                "unit": "img/s",
            },
            {
                "stage": "format",
                "metric": f"{name}: read",
                "value": round(len(written) / read_seconds),
                "unit": "img/s",
            },
        ]
    return rows


def pretrain_stage(args: argparse.Namespace, workdir: Path) -> list[Row]:
    """The demo's pretraining (``demo_pretrain.yaml`` on the corpus's labelled tasks), as
    ``medfoundry demo`` runs it: wall time of ``--steps`` steps including the cache fill and the
    validations, and the images/s of the training windows it logs."""
    torch.set_num_threads(args.threads)
    corpus = args.keep or workdir / "corpus"
    build_corpus(corpus, progress=lambda line: None)
    overrides = [
        f"run_dir={workdir / 'pretrain'}",
        f"tasks={labelled_tasks(corpus.resolve(), workdir / 'tasks.yaml')}",
        f"training.max_steps={args.steps}",
        f"training.preview_every_steps={args.steps}",
    ]
    cfg = load_pretrain_config(demo_config("demo_pretrain.yaml"), overrides)
    start = time.perf_counter()
    run_dir = pretrain.run(cfg)
    seconds = time.perf_counter() - start
    logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    windows = [r["images_per_s"] for r in logged if "images_per_s" in r]
    images = args.steps * cfg.data.batch_size * len(cfg.tasks)
    return [
        {"stage": "pretrain", "metric": "tasks", "value": len(cfg.tasks), "unit": "tasks"},
        {"stage": "pretrain", "metric": "steps", "value": args.steps, "unit": "steps"},
        {
            "stage": "pretrain",
            "metric": "wall (cache fill, validation included)",
            "value": round(seconds),
            "unit": "s",
        },
        {
            "stage": "pretrain",
            "metric": "images trained / wall",
            "value": round(images / seconds, 1),
            "unit": "img/s",
        },
        {
            "stage": "pretrain",
            "metric": "training windows (median of logged)",
            "value": round(float(np.median(windows)), 1) if windows else math.nan,
            "unit": "img/s",
        },
    ]


STAGES: dict[str, Callable[[argparse.Namespace, Path], list[Row]]] = {
    "corpus": corpus_stage,
    "format": format_stage,
    "pretrain": pretrain_stage,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES))
    parser.add_argument("--keep", type=Path, default=None, help="build the corpus here and keep it")
    parser.add_argument("--every", type=int, default=10, help="format stage: every k-th corpus image")
    parser.add_argument("--steps", type=int, default=100, help="pretrain stage: steps (the demo runs 100)")
    parser.add_argument("--threads", type=int, default=2, help="pretrain stage: torch threads")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        for stage in args.stages:
            stage_rows = STAGES[stage](args, Path(scratch))
            precision = "fp32" if stage == "pretrain" else "uint8"
            path = write_results(f"pretrain_throughput_{stage}", stage_rows, torch.device("cpu"), precision)
            print(f"wrote {path}")
            rows += stage_rows
    print_table(rows)


if __name__ == "__main__":
    main()
