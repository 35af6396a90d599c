"""Training memory versus number of tasks: the memory-constant strategy against ``joint``.

For T = 3, 6, 12, 24, 48, 64 tasks (classification, segmentation and detection in turn, same
batch and image size per task), each (T, strategy) runs in a fresh process:

1. build the model, the optimizers and one batch per task, and run one warm-up step (which
   allocates the optimizer states);
2. take the baseline: resident memory (CPU) or allocated memory (GPU) now;
3. reset the peak (``/proc/self/clear_refs`` / ``torch.cuda.reset_peak_memory_stats``), run
   ``--steps`` training steps, read the peak.

Training memory = peak - baseline: what training itself adds (activations, gradient buffers).
On CPU, glibc's allocator is told to return every block >= 64 KiB to the system
(``MALLOC_MMAP_THRESHOLD_``), so resident memory follows live tensors.

    python benchmarks/memory_vs_tasks.py               # CPU, resnet18 at 64 px, batch 8
    python benchmarks/memory_vs_tasks.py --device cuda --encoder swin_tiny_patch4_window7_224 \
        --image-size 224 --batch-size 32
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from medfoundry.models import (
    DetectionDecoderConfig,
    EncoderConfig,
    ModelConfig,
    PixelDecoderConfig,
    build_multitask_model,
)
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training import (
    OptimizerConfig,
    Optimizers,
    TaskBatch,
    build_adamw,
    joint_step,
    memory_constant_step,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

TYPES = ("classification", "segmentation", "detection")
CLASSES = {
    "classification": ["a", "b", "c", "d"],
    "segmentation": ["bg", "x", "y"],
    "detection": ["obj", "other"],
}


def child(args: argparse.Namespace) -> dict[str, float]:
    """One (T, strategy) measurement; runs in its own process."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    specs = [
        TaskSpec(name=f"t{i}", type=TYPES[i % 3], classes=CLASSES[TYPES[i % 3]], source={"path": "none.csv"})
        for i in range(args.tasks)
    ]
    tasks = {s.name: build_task(s) for s in specs}
    cfg = ModelConfig(
        image_size=args.image_size,
        encoder=EncoderConfig(name=args.encoder, model_kwargs=json.loads(args.model_kwargs)),
        pixel_decoder=PixelDecoderConfig(),
        detection_decoder=DetectionDecoderConfig(),
    )
    model = build_multitask_model(cfg, tasks).to(device).train()
    opt_cfg = OptimizerConfig()
    optimizers = Optimizers(
        shared=build_adamw(model.shared_parameters(), 1e-4, opt_cfg),
        heads={n: build_adamw(model.head_parameters(n), 1e-4, opt_cfg) for n in tasks},
    )
    batches = [_batch(s, args.batch_size, args.image_size, device) for s in specs]
    step = memory_constant_step if args.strategy == "memory_constant" else joint_step
    amp = torch.bfloat16 if args.precision == "bf16" else None
    step(
        model, tasks, batches, optimizers, autocast_dtype=amp
    )  # warm-up: optimizer states exist from here on
    gc.collect()
    baseline = _current(device)
    _reset_peak(device)
    for _ in range(args.steps):
        step(model, tasks, batches, optimizers, autocast_dtype=amp)
    peak = _peak(device)
    return {
        "baseline_mb": baseline / 2**20,
        "peak_mb": peak / 2**20,
        "training_mb": (peak - baseline) / 2**20,
    }


def _batch(spec: TaskSpec, batch_size: int, size: int, device: torch.device) -> TaskBatch:
    # synthetic images are fine here: this measures memory mechanics, not learning
    g = torch.Generator().manual_seed(hash(spec.name) % 2**31)
    images = torch.rand(batch_size, 3, size, size, generator=g)
    if spec.type == "classification":
        targets = torch.randint(0, spec.num_classes, (batch_size,), generator=g)
    elif spec.type == "segmentation":
        targets = torch.randint(0, spec.num_classes, (batch_size, size, size), generator=g)
    else:
        box = torch.tensor([[size * 0.2, size * 0.2, size * 0.6, size * 0.7]])
        targets = [
            {"boxes": box.clone(), "labels": torch.tensor([i % spec.num_classes])} for i in range(batch_size)
        ]
    return TaskBatch(spec.name, images, targets).to(device)


def _current(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.memory_allocated(device)
    return _proc_status("VmRSS")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _peak(device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    return _proc_status("VmHWM")


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--model-kwargs", default="{}", help="JSON, e.g. '{\"window_size\": 4}'")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--task-counts", default="3,6,12,24,48,64")
    parser.add_argument("--strategies", default="memory_constant,joint")
    parser.add_argument(
        "--joint-task-counts",
        help="task counts for joint only (default: --task-counts); joint memory "
        "grows with every task, so on a GPU its large counts may not fit",
    )
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--parallel", type=int, default=1, help="measurements run at once (GPU: fine)")
    parser.add_argument("--tasks", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--strategy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tasks is not None:
        print(json.dumps(child(args)))
        return

    env = {
        **os.environ,
        "MALLOC_MMAP_THRESHOLD_": "65536",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    runs = [
        (strategy, int(t))
        for strategy in args.strategies.split(",")
        for t in ((strategy == "joint" and args.joint_task_counts) or args.task_counts).split(",")
    ]

    def measure(run: tuple[str, int]) -> dict[str, float]:
        # each measurement in a fresh process: peak memory of this (strategy, T) alone
        cmd = [sys.executable, __file__, "--tasks", str(run[1]), "--strategy", run[0], *sys.argv[1:]]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{run[0]} T={run[1]} failed:\n{done.stderr[-2000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        results = list(pool.map(measure, runs))
    rows = []
    base: dict[str, float] = {}
    for (strategy, t), result in zip(runs, results, strict=True):
        ratio = result["training_mb"] / base.setdefault(strategy, result["training_mb"])
        rows.append({"strategy": strategy, "tasks": t, **result, "ratio_to_first": ratio})
        print(f"{strategy:16s} T={t:3d}  training {result['training_mb']:8.1f} MB", flush=True)
    print()
    print_table(rows)
    device = torch.device(args.device)
    path = write_results("memory_vs_tasks", rows, device, args.precision)
    _plot(rows, path.with_suffix(".png"), args)
    print(f"\nwrote {path} (+ .json, .png)")


def _plot(rows: list[dict[str, float]], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        xs = [r["tasks"] for r in rows if r["strategy"] == strategy]
        ys = [r["training_mb"] for r in rows if r["strategy"] == strategy]
        ax.plot(xs, ys, marker="o", label=strategy)
    ax.set_xlabel("number of tasks (cls, seg, det in turn)")
    ax.set_ylabel("training memory (MB)")
    ax.set_title(f"{args.encoder}, {args.image_size} px, batch {args.batch_size}, {args.device}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
