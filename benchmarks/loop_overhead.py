"""Images/s of the multi-task loop versus a minimal PyTorch loop on the same network.

``--mode single`` (default): one classification task. Both loops train the same network (the
same timm encoder, GroupNorm in place of BatchNorm, plus one linear layer on the pooled deepest
map) with AdamW on the same in-memory batches, so the difference is the loop's own machinery:
per-head optimizer, normalised loss, the non-finite checks, gradient norms and the shared step.

``--mode mixed``: a classification and a segmentation task (shared U-Net pixel decoder), one
batch of each per step. ``medfoundry`` runs ``memory_constant_step``; ``plain`` runs the same
multi-task model with forward, loss and backward per task batch and one AdamW step per step;
``medfoundry_up_convs2`` is ``medfoundry`` with the pixel decoder as it was before its
up-sampling blocks were lightened (two convolutions per block): the before/after of that change.

The loops alternate in blocks within one process (order rotated every block); the table reports
the median block of each.

    python benchmarks/loop_overhead.py                       # CPU, resnet18 at 64 px, batch 32
    python benchmarks/loop_overhead.py --mode mixed --image-size 128 --batch-size 16
    python benchmarks/loop_overhead.py --device cuda --image-size 224 --batch-size 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.models import (
    EncoderConfig,
    ModelConfig,
    MultiTaskModel,
    PixelDecoderConfig,
    build_multitask_model,
    create_encoder,
)
from medfoundry.tasks import TaskSpec, TaskType, build_task
from medfoundry.training import OptimizerConfig, Optimizers, TaskBatch, build_adamw, memory_constant_step

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

NUM_CLASSES = 5


class PlainClassifier(nn.Module):
    """The same encoder and linear layer as the multi-task model's classification path."""

    def __init__(self, encoder: nn.Module, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(channels, NUM_CLASSES)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images)[-1].mean(dim=(-2, -1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["single", "mixed"], default="single")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps-per-block", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = _single(args, device) if args.mode == "single" else _mixed(args, device)
    images_per_step = args.batch_size * (1 if args.mode == "single" else 2)

    def block(step: Callable[[int], None]) -> float:
        for i in range(2):  # warm caches of this loop before timing it
            step(i)
        _sync(device)
        start = time.perf_counter()
        for i in range(args.steps_per_block):
            step(i)
        _sync(device)
        return args.steps_per_block * images_per_step / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for b in range(args.blocks):
        for name in names[b % len(names) :] + names[: b % len(names)]:
            rates[name].append(block(steps[name]))
            print(f"block {b} {name:22s} {rates[name][-1]:8.1f} img/s", flush=True)
    median = {name: statistics.median(r) for name, r in rates.items()}
    row: dict[str, object] = {
        "mode": args.mode,
        "encoder": args.encoder,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        **{f"{name}_img_s": rate for name, rate in median.items()},
        "ratio": median["medfoundry"] / median["plain"],
    }
    if "medfoundry_up_convs2" in median:
        # per-block ratios share the machine's state at that time: their median is steadier
        row["speedup_vs_up_convs2"] = statistics.median(
            a / b for a, b in zip(rates["medfoundry"], rates["medfoundry_up_convs2"], strict=True)
        )
    print()
    print_table([row])
    print(f"\nwrote {write_results(f'loop_overhead-{args.mode}', [row], device, 'fp32')}")


def _single(args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[int], None]]:
    """One classification task: medfoundry's step against the plainest PyTorch loop."""
    spec = TaskSpec(
        name="cls",
        type="classification",
        classes=[str(i) for i in range(NUM_CLASSES)],
        source={"path": "none.csv"},
    )
    tasks = {"cls": build_task(spec)}
    torch.manual_seed(0)
    ours = build_multitask_model(
        ModelConfig(image_size=args.image_size, encoder=EncoderConfig(name=args.encoder)), tasks
    )
    ours.to(device).train()
    optimizers = _optimizers(ours, tasks)
    encoder = create_encoder(args.encoder, img_size=args.image_size)
    plain = PlainClassifier(encoder, encoder.out_channels).to(device).train()
    # the same optimizer as medfoundry's build_adamw: AdamW with the fused kernel
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-4, weight_decay=1e-2, fused=True)
    batches = [_batch("cls", args, device) for _ in range(4)]

    def ours_step(i: int) -> None:
        memory_constant_step(ours, tasks, [batches[i % len(batches)]], optimizers, grad_clip_norm=None)

    def plain_step(i: int) -> None:
        batch = batches[i % len(batches)]
        loss = F.cross_entropy(plain(batch.images), batch.targets)
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    return {"medfoundry": ours_step, "plain": plain_step}


def _mixed(args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[int], None]]:
    """A classification and a segmentation task, one batch of each per step."""
    specs = [
        TaskSpec(name="cls", type="classification", classes=list("abcde"), source={"path": "none.csv"}),
        TaskSpec(name="seg", type="segmentation", classes=["bg", "a", "b"], source={"path": "none.csv"}),
    ]
    tasks = {s.name: build_task(s) for s in specs}
    rounds = [[_batch(name, args, device) for name in tasks] for _ in range(2)]

    def model_with(up_convs: int) -> MultiTaskModel:
        torch.manual_seed(0)
        cfg = ModelConfig(
            image_size=args.image_size,
            encoder=EncoderConfig(name=args.encoder),
            pixel_decoder=PixelDecoderConfig(up_convs=up_convs),
        )
        return build_multitask_model(cfg, tasks).to(device).train()

    def medfoundry(up_convs: int) -> Callable[[int], None]:
        model = model_with(up_convs)
        optimizers = _optimizers(model, tasks)
        return lambda i: memory_constant_step(model, tasks, rounds[i % 2], optimizers, grad_clip_norm=None)

    plain_model = model_with(1)
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-4, weight_decay=1e-2, fused=True)

    def plain_step(i: int) -> None:
        for batch in rounds[i % 2]:
            tasks[batch.task].loss(plain_model(batch.task, batch.images), batch.targets).backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    return {"medfoundry": medfoundry(1), "plain": plain_step, "medfoundry_up_convs2": medfoundry(2)}


def _optimizers(model: MultiTaskModel, tasks: dict[str, TaskType]) -> Optimizers:
    cfg = OptimizerConfig()
    return Optimizers(
        shared=build_adamw(model.shared_parameters(), 1e-4, cfg),
        heads={n: build_adamw(model.head_parameters(n), 1e-4, cfg) for n in tasks},
    )


def _batch(task: str, args: argparse.Namespace, device: torch.device) -> TaskBatch:
    # synthetic pixels: this measures speed, not learning
    size, n = args.image_size, args.batch_size
    images = torch.rand(n, 3, size, size)
    targets = torch.randint(0, NUM_CLASSES, (n,)) if task == "cls" else torch.randint(0, 3, (n, size, size))
    return TaskBatch(task, images, targets).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
