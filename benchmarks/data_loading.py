"""Benchmark: cached loading versus decoding every epoch, on the same real images.

Question: how much faster does the preprocessing cache make an epoch, and how many 224-px
training samples (with random flips) does one CPU core serve from it?

Data: square crops of real images that ship inside installed packages (scikit-image's fundus,
IHC and phase-contrast images, stardist's H&E tile and 16-bit fluorescence nuclei), written as
PNG files with a CSV manifest, the way a user's dataset arrives. Both modes use the public API:

- ``decode``: ``TaskDataset(records, ...)`` without arrays, which decodes, scales and resizes
  every image at every access;
- ``cached``: ``prepare_arrays`` once (timed separately, as ``build``), then
  ``TaskDataset(records, ..., arrays)`` reading the memory-mapped cache.

Both run in one process with one torch thread ("per core"), over the same samples with the
same augmentation seeds, and also through a ``DataLoader`` (batch 32, no workers) to include
collation. Writes ``benchmarks/results/data_loading-cpu-uint8-torch<ver>.csv`` and a JSON
sidecar (command, git SHA, versions).

Run: ``python benchmarks/data_loading.py`` (``--images 256 --side 512 --epochs 3``).
Non-goals: GPU transfer, multi-worker scaling, decoders other than PNG.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import PIL
import tifffile
import torch
from PIL import Image
from torch.utils.data import DataLoader

import medfoundry
from medfoundry.corpus.packages import module_folder
from medfoundry.corpus.sources.microscopy import read_rgb_or_gray
from medfoundry.data import (
    AugmentConfig,
    CacheSettings,
    ManifestSource,
    Preprocessing,
    TaskDataset,
    prepare_arrays,
)


def _packaged(module: str, path: str) -> np.ndarray:
    folder = module_folder(module)
    if folder is None:
        raise SystemExit(f"this benchmark reads images of the package '{module}': make setup")
    if path.endswith(".tif"):
        return np.asarray(tifffile.imread(folder / path))
    return read_rgb_or_gray(folder / path)


SOURCES = {
    "fundus": partial(_packaged, "skimage", "data/retina.jpg"),
    "immunohistochemistry": partial(_packaged, "skimage", "data/ihc.png"),
    "phase_contrast": partial(_packaged, "skimage", "data/cell.png"),
    "h_and_e": partial(_packaged, "stardist", "data/images/histo.jpg"),
    "fluorescence": partial(_packaged, "stardist", "data/images/img2d.tif"),  # uint16
}


def write_dataset(folder: Path, images: int, side: int, seed: int) -> Path:
    """``images`` PNG crops of ``side`` pixels (sources smaller than that are upscaled first)."""
    rng = np.random.default_rng(seed)
    rows = []
    loaded = {name: load() for name, load in SOURCES.items()}
    for i in range(images):
        label = list(SOURCES)[i % len(SOURCES)]
        source = loaded[label]
        if min(source.shape[:2]) < side:
            scale = side / min(source.shape[:2])
            size = (round(source.shape[1] * scale) + 1, round(source.shape[0] * scale) + 1)
            source = np.asarray(Image.fromarray(source).resize(size, Image.Resampling.BILINEAR))
        y = int(rng.integers(0, source.shape[0] - side + 1))
        x = int(rng.integers(0, source.shape[1] - side + 1))
        name = f"{label}_{i:04d}.png"
        Image.fromarray(np.ascontiguousarray(source[y : y + side, x : x + side])).save(folder / name)
        rows.append({"image": name, "label": label})
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def time_epochs(dataset: TaskDataset, epochs: int, batch_size: int | None) -> float:
    """Seconds per epoch (the mean over ``epochs``), sample by sample or through a DataLoader."""
    keys = [(i, 1000 * e + i) for e in range(epochs) for i in range(len(dataset))]
    started = time.perf_counter()
    if batch_size is None:
        for key in keys:
            dataset[key]
    else:
        for _ in DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=0):  # type: ignore[arg-type]
            pass
    return (time.perf_counter() - started) / epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--side", type=int, default=512, help="side of the PNG files")
    parser.add_argument("--size", type=int, default=224, help="training image size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    flips = AugmentConfig(enable_flips=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = ManifestSource(path=write_dataset(folder, args.images, args.side, seed=0))
        records = source.scan(
            "label", classes=list(SOURCES), preprocessing=Preprocessing(), ignore_index=255
        ).records
        started = time.perf_counter()
        prepared = prepare_arrays(
            "bench-train",
            records,
            "label",
            size=args.size,
            preprocessing=Preprocessing(),
            num_classes=len(SOURCES),
            ignore_index=255,
            cache=CacheSettings(folder / "cache"),
        )
        build_s = time.perf_counter() - started
        decode = TaskDataset(records, "label", args.size, augment=flips)
        cached = TaskDataset(prepared.records, "label", args.size, augment=flips, arrays=prepared.arrays)
        for dataset, mode in ((decode, "decode"), (cached, "cached")):
            time_epochs(dataset, 1, None)  # warm the page cache and lazy imports
            for loader, batch in (("dataset", None), ("dataloader_b32", 32)):
                seconds = time_epochs(dataset, args.epochs, batch)
                rows.append(
                    {
                        "mode": mode,
                        "loader": loader,
                        "images": len(dataset),
                        "image_size": args.size,
                        "file_side": args.side,
                        "epoch_s": round(seconds, 4),
                        "images_per_s": round(len(dataset) / seconds, 1),
                    }
                )
        rows.append(
            {
                "mode": "cached",
                "loader": "build",
                "images": len(records),
                "image_size": args.size,
                "file_side": args.side,
                "epoch_s": round(build_s, 4),
                "images_per_s": round(len(records) / build_s, 1),
            }
        )
    speed = {(r["mode"], r["loader"]): r["images_per_s"] for r in rows}
    for loader in ("dataset", "dataloader_b32"):
        ratio = speed[("cached", loader)] / speed[("decode", loader)]
        print(
            f"{loader}: cached {speed[('cached', loader)]:.0f} img/s, decode {speed[('decode', loader)]:.0f} "
            f"img/s, {ratio:.1f}x"
        )
    print(f"cache build: {speed[('cached', 'build')]:.0f} img/s (once)")
    write_results(args, rows)


def write_results(args: argparse.Namespace, rows: list[dict[str, object]]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"data_loading-cpu-uint8-torch{torch.__version__.split('+')[0]}"
    with (args.out / f"{stem}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    sha = git("rev-parse", "HEAD")
    sha += "-dirty" if sha and git("status", "--porcelain", "src", "benchmarks/data_loading.py") else ""
    sidecar = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_sha": sha or None,
        "versions": {
            "medfoundry": medfoundry.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "pillow": PIL.__version__,
            "python": platform.python_version(),
        },
        "machine": {"processor": platform.processor() or platform.machine(), "torch_threads": 1},
    }
    (args.out / f"{stem}.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    print(f"wrote {args.out / stem}.csv/.json")


if __name__ == "__main__":
    main()
