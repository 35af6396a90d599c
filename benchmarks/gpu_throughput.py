"""Throughput of the paper configuration: images/s, peak memory, and whether data loading keeps up.

The UMedPT setting: Swin-T at 224 px, ``--tasks`` tasks of mixed types (segmentation, detection
and classification in turn, on the demo database's real images), ``--batch-size`` images per task
batch, bf16 autocast, ``--num-workers`` DataLoader workers per task. Two timed phases:

- *loaded*: batches come from the task loaders (decode, resize, augment in workers, pinned
  copies to the GPU), as in training;
- *compute only*: the same number of steps on batches already on the device.

``loaded / compute only`` close to 1 means data loading is not the bottleneck; on CUDA the GPU
busy fraction (NVML utilisation, sampled every 100 ms during the loaded phase) is reported too.

    python benchmarks/gpu_throughput.py --device cuda                 # the paper setting
    python benchmarks/gpu_throughput.py --device cpu --encoder resnet10t --image-size 64 \\
        --batch-size 8 --tasks 3 --steps 4 --warmup 1 --num-workers 0  # a smoke run on a CPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from medfoundry.data import TaskDataset, load_task_records
from medfoundry.demo import build_demo_database
from medfoundry.models import EncoderConfig, ModelConfig, build_multitask_model
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training import (
    CyclicTaskLoader,
    OptimizerConfig,
    Optimizers,
    RoundRobinSampler,
    TaskCollate,
    build_adamw,
    memory_constant_step,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--encoder", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--model-kwargs", default="{}", help="JSON timm arguments")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--data", type=Path, help="demo database folder (built in a temp folder if absent)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    amp = torch.bfloat16 if args.precision == "bf16" else None

    data = args.data or Path(tempfile.mkdtemp()) / "demo"
    demo_specs = {t["type"]: t for t in _demo_tasks(data)}
    order = ["segmentation", "detection", "classification"]
    specs = [
        TaskSpec.model_validate({**demo_specs[order[i % 3]], "name": f"t{i}_{order[i % 3]}"})
        for i in range(args.tasks)
    ]
    tasks = {s.name: build_task(s) for s in specs}
    cfg = ModelConfig(
        image_size=args.image_size,
        encoder=EncoderConfig(name=args.encoder, model_kwargs=json.loads(args.model_kwargs)),
    )
    torch.manual_seed(0)
    model = build_multitask_model(cfg, tasks).to(device).train()
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if args.compile:
        model.encoder.compile()
    opt = OptimizerConfig()
    optimizers = Optimizers(
        shared=build_adamw(model.shared_parameters(), 1e-4, opt),
        heads={n: build_adamw(model.head_parameters(n), 1e-4, opt) for n in tasks},
    )
    pin = device.type == "cuda"
    loaders = {}
    for spec in specs:
        records = load_task_records(spec.name, spec.source, tasks[spec.name].target, spec.classes, 0, 0.2)[
            "train"
        ]
        dataset = TaskDataset(records, tasks[spec.name].target, args.image_size, augment=True)
        collate = TaskCollate(spec.name, tasks[spec.name])
        loaders[spec.name] = CyclicTaskLoader(
            spec.name, dataset, collate, args.batch_size, 0, args.num_workers, pin_memory=pin
        )
    sampler = RoundRobinSampler(loaders)

    def loaded_step() -> None:
        batches = (b.to(device, pin, args.channels_last) for b in sampler.next_step())
        memory_constant_step(model, tasks, batches, optimizers, amp, 1.0)

    for _ in range(args.warmup):
        loaded_step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    utilisation = _UtilisationSampler(device)
    with utilisation:
        loaded_rate = _timed(loaded_step, args.steps, args.tasks * args.batch_size, device)

    resident = [b.to(device, pin, args.channels_last) for b in sampler.next_step()]
    compute_rate = _timed(
        lambda: memory_constant_step(model, tasks, resident, optimizers, amp, 1.0),
        args.steps,
        args.tasks * args.batch_size,
        device,
    )
    sampler.close()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    rows = [
        {
            "encoder": args.encoder,
            "image_size": args.image_size,
            "tasks": args.tasks,
            "batch_per_task": args.batch_size,
            "precision": args.precision,
            "num_workers": args.num_workers,
            "loaded_img_s": loaded_rate,
            "compute_only_img_s": compute_rate,
            "loaded_over_compute": loaded_rate / compute_rate,
            "gpu_busy": utilisation.mean(),
            "peak_gib": peak,
        }
    ]
    print_table(rows)
    print(f"\nwrote {write_results('gpu_throughput', rows, device, args.precision)}")


def _demo_tasks(folder: Path) -> list[dict[str, object]]:
    import yaml

    tasks_file = folder / "tasks.yaml"
    if not tasks_file.exists():
        build_demo_database(folder)
    tasks: list[dict[str, object]] = yaml.safe_load(tasks_file.read_text())["tasks"]
    for task in tasks:
        task["source"] = {"path": str(folder / task["source"]["path"])}  # type: ignore[index]
    return tasks


def _timed(step: object, steps: int, images_per_step: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()  # type: ignore[operator]
    _sync(device)
    return steps * images_per_step / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _UtilisationSampler:
    """Samples NVML's "GPU busy" percentage every 100 ms in a thread (CUDA only)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _UtilisationSampler:
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self.samples.append(torch.cuda.utilization(self.device) / 100)
            except Exception:  # noqa: BLE001 - NVML missing: report NaN rather than fail the benchmark
                return

    def mean(self) -> float:
        return statistics.fmean(self.samples) if self.samples else float("nan")


if __name__ == "__main__":
    main()
