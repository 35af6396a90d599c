"""Benchmark: which pretraining recipe transfers? Scored on the held-out tasks' VALIDATION split.

The question: does a pretraining run's encoder give better frozen features for the corpus's
held-out tasks than the same network with random weights and than the raw pixels, at few labels?
This is the selection tool for the demo recipe (docs/demo.md, "How the recipe was chosen"): it
never reads a held-out task's test split, which the demo's study reports on.

For each encoder (a checkpoint folder, ``pixels``: the image pooled to 16x16 per channel, or
``random:SOURCE``: a checkpoint's architecture or timm's SOURCE with random weights) and each
held-out classification task, the globally pooled maps of the last ``--levels`` pyramid levels
are concatenated; a class-balanced logistic regression (C = 0.1, standardised features) is
trained on a stratified share of the training split (1, 5, 10, 100 %; 5 draws below 100 %) and
scored by balanced accuracy on the validation split.

Run: ``python benchmarks/recipe_validation.py --corpus runs/corpus --encoders RUN/checkpoints/last
pixels random:resnet18 --levels 3``. Writes ``benchmarks/results/recipe_validation-cpu<t>t-fp32-
torch<ver>.csv`` (``--tag`` goes after ``recipe_validation``; one row per encoder, task and
fraction) with a JSON sidecar.
Non-goals: intervals and test-set claims (that is ``medfoundry evaluate``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from medfoundry.evaluation.pixel_encoder import PixelEncoder
from medfoundry.evaluation.pretrained_encoder import PretrainedEncoder, load_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

TASKS = ("heldout_brain_region", "heldout_nuclei_count", "heldout_vesicle_membrane")
FRACTIONS = (0.01, 0.05, 0.1, 1.0)
DRAWS = 5


def load_split(corpus: Path, task: str, size: int) -> tuple[list[dict[str, str]], torch.Tensor]:
    """The task's train and val rows and their images as a float batch in [0, 1]."""
    with (corpus / f"{task}.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] in ("train", "val")]
    arrays = [
        np.asarray(Image.open(corpus / r["image"]).convert("RGB").resize((size, size), Image.BILINEAR))
        for r in rows
    ]
    return rows, torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255


def features(spec: str, images: torch.Tensor, levels: int) -> np.ndarray:
    """The probes' inputs: the pixels (``PixelEncoder``, 16 x 16), or the encoder's globally
    pooled last ``levels`` pyramid maps, concatenated (``PretrainedEncoder.embed``)."""
    if spec == "pixels":
        encoder: PixelEncoder | PretrainedEncoder = PixelEncoder(image_size=images.shape[-1])
    elif spec.startswith("random:"):  # a checkpoint's architecture or a timm name, random weights
        source = spec.split(":", 1)[1]
        size = None if Path(source).is_dir() else images.shape[-1]
        encoder = load_encoder(source, pretrained=False, image_size=size)
    else:
        encoder = load_encoder(spec)
    with torch.inference_mode():
        batches = [
            encoder.embed(images[start : start + 128], levels=range(-levels, 0))
            for start in range(0, len(images), 128)
        ]
    return torch.cat(batches).numpy()


def probe_scores(feats: np.ndarray, rows: list[dict[str, str]]) -> dict[float, float]:
    """Fraction -> mean validation balanced accuracy over the draws."""
    labels = np.array([r["label"] for r in rows])
    split = np.array([r["split"] for r in rows])
    train, val = np.where(split == "train")[0], np.where(split == "val")[0]
    scores = {}
    for fraction in FRACTIONS:
        draws = []
        for seed in range(DRAWS if fraction < 1 else 1):
            rng = np.random.default_rng(seed)
            picked = np.concatenate(
                [
                    rng.choice(members, max(1, round(fraction * len(members))), replace=False)
                    for members in (train[labels[train] == c] for c in np.unique(labels[train]))
                ]
            )
            scaler = StandardScaler().fit(feats[picked])
            probe = LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")
            probe.fit(scaler.transform(feats[picked]), labels[picked])
            draws.append(balanced_accuracy_score(labels[val], probe.predict(scaler.transform(feats[val]))))
        scores[fraction] = float(np.mean(draws))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    parser.add_argument("--encoders", nargs="+", required=True)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="appended to the results file's name")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for task in TASKS:
        records, images = load_split(args.corpus, task, args.image_size)
        for spec in args.encoders:
            for fraction, score in probe_scores(features(spec, images, args.levels), records).items():
                rows.append(
                    {
                        "encoder": spec,
                        "levels": args.levels,
                        "task": task,
                        "fraction": fraction,
                        "val_balanced_accuracy": round(score, 3),
                    }
                )
    name = f"recipe_validation-{args.tag}" if args.tag else "recipe_validation"
    print(f"wrote {write_results(name, rows, torch.device('cpu'), 'fp32')}")
    print_table(rows)


if __name__ == "__main__":
    main()
