"""Images/s of the multi-task loop with one classification task versus a minimal PyTorch loop.

Both train the same network (the same timm encoder, GroupNorm in place of BatchNorm, plus one
linear layer on the pooled deepest map) with AdamW on the same in-memory batches, so the
difference is the loop's own machinery: per-head optimizer, normalised loss, the non-finite
checks, gradient norms and the shared step. The two loops alternate in blocks within one
process; the table reports the median block of each.

    python benchmarks/loop_overhead.py                       # CPU, resnet18 at 64 px, batch 32
    python benchmarks/loop_overhead.py --device cuda --image-size 224 --batch-size 64
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medfoundry.models import EncoderConfig, ModelConfig, build_multitask_model, create_encoder
from medfoundry.tasks import TaskSpec, build_task
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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps-per-block", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=6)
    args = parser.parse_args()
    device = torch.device(args.device)

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
    opt_cfg = OptimizerConfig()
    optimizers = Optimizers(
        shared=build_adamw(ours.shared_parameters(), 1e-4, opt_cfg),
        heads={"cls": build_adamw(ours.head_parameters("cls"), 1e-4, opt_cfg)},
    )
    encoder = create_encoder(args.encoder, img_size=args.image_size)
    plain = PlainClassifier(encoder, encoder.out_channels).to(device).train()
    # the same optimizer as medfoundry's build_adamw: AdamW with the fused kernel
    plain_opt = torch.optim.AdamW(plain.parameters(), lr=1e-4, weight_decay=1e-2, fused=True)

    g = torch.Generator().manual_seed(0)
    batches = [
        (
            torch.rand(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device),
            torch.randint(0, NUM_CLASSES, (args.batch_size,), generator=g).to(device),
        )
        for _ in range(4)
    ]

    def ours_step(i: int) -> None:
        images, labels = batches[i % len(batches)]
        memory_constant_step(ours, tasks, [TaskBatch("cls", images, labels)], optimizers, grad_clip_norm=None)

    def plain_step(i: int) -> None:
        images, labels = batches[i % len(batches)]
        loss = F.cross_entropy(plain(images), labels)
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    def block(step: object) -> float:
        for i in range(2):  # warm caches of this loop before timing it
            step(i)  # type: ignore[operator]
        _sync(device)
        start = time.perf_counter()
        for i in range(args.steps_per_block):
            step(i)  # type: ignore[operator]
        _sync(device)
        return args.steps_per_block * args.batch_size / (time.perf_counter() - start)

    rates: dict[str, list[float]] = {"medfoundry": [], "plain": []}
    for b in range(args.blocks):
        order = [("medfoundry", ours_step), ("plain", plain_step)]
        for name, step in order if b % 2 == 0 else order[::-1]:
            rates[name].append(block(step))
            print(f"block {b} {name:10s} {rates[name][-1]:8.1f} img/s", flush=True)
    ours_rate, plain_rate = statistics.median(rates["medfoundry"]), statistics.median(rates["plain"])
    rows = [
        {
            "encoder": args.encoder,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "medfoundry_img_s": ours_rate,
            "plain_img_s": plain_rate,
            "ratio": ours_rate / plain_rate,
        }
    ]
    print()
    print_table(rows)
    print(f"\nwrote {write_results('loop_overhead', rows, device, 'fp32')}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


if __name__ == "__main__":
    main()
