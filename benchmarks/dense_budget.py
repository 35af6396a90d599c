"""Benchmark: how many steps does a dense decoder need? Scored on the held-out tasks' VALIDATION split.

The question: a study's ``frozen-decoder`` (and ``finetune``) cells train a segmentation or
detection decoder from scratch. How long must they train before the validation score stops
rising, so that ``FinetuneConfig``'s defaults (``dense_min_steps``, ``patience_fraction``,
``stop_after_fraction``) sit on the plateau? This chooses those defaults; it never reads a
held-out task's test split, which the studies report on.

The encoder is the demo's architecture (ResNet-18 with GroupNorm, 64 px) with random weights:
the study's ``random`` baseline, the encoder that gains most from a longer budget. On all the
training labels of the task, each mode is trained

- for each budget of ``--budgets`` steps without early stopping (``patience_fraction: 1``), the
  schedule (warm-up, cosine) spanning that budget, validated ten times: the best validation
  score against the budget is the curve the floor is read from;
- with the defaults of ``FinetuneConfig`` (only the decoder width, batch size and evaluation
  cadence as a study leaves them), early stopping on: the score, steps and ``never_improved``
  flag a study's cell would get.

Target: the defaults' score within 0.03 of the longest budget (four times the default floor),
and no run flagged ``never_improved``.

Run: ``python benchmarks/dense_budget.py --corpus runs/corpus --budgets 100 400 1600``. Writes
``benchmarks/results/dense_budget-cpu<t>t-fp32-torch<ver>.csv`` (one row per task, mode and
run) and ``dense_budget_curves-...csv`` (one row per validation), each with a JSON sidecar.
Non-goals: encoder comparisons and test-set claims (that is ``medfoundry evaluate``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medfoundry import load_task_database
from medfoundry.data import load_task_records
from medfoundry.evaluation import FinetuneConfig, PretrainedEncoder, finetune, load_encoder
from medfoundry.models import EncoderConfig, create_encoder
from medfoundry.tasks import TaskSpec, build_task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

METRICS = {"segmentation": "mean_dice", "detection": "map_50"}


def demo_random_encoder(image_size: int, seed: int) -> PretrainedEncoder:
    """The demo's encoder architecture (``demo_pretrain.yaml``: ResNet-18, GroupNorm) with random
    weights, as a study's ``random`` baseline builds it from the demo checkpoint."""
    config = EncoderConfig(name="resnet18", use_groupnorm=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = create_encoder(img_size=image_size, **config.model_dump())
    return PretrainedEncoder(
        encoder.eval(), config=config, image_size=image_size, source="resnet18-gn", pretrained=False
    )


def train_once(
    encoder: PretrainedEncoder,
    spec: TaskSpec,
    splits: dict[str, list[Any]],
    mode: str,
    cfg: FinetuneConfig,
    seed: int,
) -> tuple[dict[str, Any], list[tuple[int, float]]]:
    """One run on all training labels; its summary row and validation curve."""
    task = build_task(spec)
    started = time.process_time()
    result = finetune(
        encoder,
        spec.name,
        task,
        train=splits["train"],
        val=splits["val"],
        metric=METRICS[spec.type],
        cfg=cfg,
        freeze_encoder=mode == "frozen-decoder",
        seed=seed,
        preprocessing=spec.preprocessing,
    )
    row = {
        "budget_steps": result.budget_steps,
        "steps": result.steps,
        "best_step": result.best_step,
        "metric": METRICS[spec.type],  # one column for every task type: tasks share the table
        "val_score": round(result.best_score, 4),
        "never_improved": result.never_improved,
        "cpu_s": round(time.process_time() - started, 1),
    }
    return row, result.curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("runs/corpus"))
    parser.add_argument("--tasks", nargs="+", default=["heldout_face_seg"])
    parser.add_argument(
        "--modes", nargs="+", default=["frozen-decoder"], choices=["frozen-decoder", "finetune"]
    )
    parser.add_argument("--budgets", nargs="*", type=int, default=[100, 400, 1600])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--encoder",
        default="random",
        help="'random' (the demo architecture, random weights) or any encoder source "
        "(a checkpoint folder, medfoundry:<name>)",
    )
    parser.add_argument(
        "--fraction", type=float, default=1.0, help="share of the training labels (a seeded sample)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-defaults", action="store_true", help="run only the fixed budgets")
    parser.add_argument("--tag", default="", help="appended to the results files' names")
    parser.add_argument(
        "--finetune",
        default="{}",
        help="JSON over FinetuneConfig's defaults, e.g. '{\"batch_size\": 16}'",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    specs = {s.name: s for s in load_task_database(args.corpus / "heldout_tasks.yaml")}
    defaults = FinetuneConfig.model_validate(json.loads(args.finetune))
    rows, curves = [], []
    for name in args.tasks:
        spec = specs[name]
        splits = load_task_records(
            spec.name,
            spec.data_source(),
            build_task(spec).target,
            classes=spec.classes,
            seed=0,
            val_fraction=0.2,
            preprocessing=spec.preprocessing,
            split=spec.split,
        )
        splits["train"] = _sample(splits["train"], args.fraction, args.seed)
        runs = [(f"budget {b}", _fixed_budget(defaults, b)) for b in args.budgets]
        runs += [] if args.no_defaults else [("defaults", defaults)]
        for mode in args.modes:
            for run, cfg in runs:
                encoder = (
                    demo_random_encoder(args.image_size, args.seed)
                    if args.encoder == "random"
                    else load_encoder(args.encoder, image_size=args.image_size)
                )
                row, curve = train_once(encoder, spec, splits, mode, cfg, args.seed)
                head = {
                    "task": name,
                    "encoder": args.encoder,
                    "mode": mode,
                    "run": run,
                    "n_train": len(splits["train"]),
                }
                rows.append({**head, **row})
                curves += [{**head, "step": s, "val_score": round(v, 4)} for s, v in curve]
                print_table(rows[-1:])
    suffix = f"-{args.tag}" if args.tag else ""
    print(f"wrote {write_results('dense_budget' + suffix, rows, torch.device('cpu'), 'fp32')}")
    print(f"wrote {write_results('dense_budget_curves' + suffix, curves, torch.device('cpu'), 'fp32')}")
    print_table(rows)


def _sample(records: list[Any], fraction: float, seed: int) -> list[Any]:
    """A seeded ``fraction`` of the records (at least one), in their original order."""
    if fraction >= 1:
        return records
    keep = max(1, round(fraction * len(records)))
    chosen = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed))[:keep]
    return [records[i] for i in sorted(chosen.tolist())]


def _fixed_budget(cfg: FinetuneConfig, steps: int) -> FinetuneConfig:
    """``cfg`` trained for exactly ``steps`` steps, without early stopping."""
    return cfg.model_copy(
        update={"min_steps": steps, "dense_min_steps": steps, "max_steps": steps, "patience_fraction": 1.0}
    )


if __name__ == "__main__":
    main()
