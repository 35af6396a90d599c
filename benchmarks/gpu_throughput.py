"""Throughput of the paper configuration: images/s, GPU busy, peak memory, and where the time goes.

The UMedPT setting: Swin-T at 224 px, ``--tasks`` tasks of mixed types (segmentation, detection
and classification in turn, on the small corpus's real images), ``--batch-size`` images per task
batch, bf16 autocast, ``--num-workers`` DataLoader workers per task reading the preprocessing
cache, as ``medfoundry pretrain`` does. Phases, each timed over ``--steps`` shared steps:

- ``loaded``: batches from the task loaders (workers, pinned memory), moved to the device when
  the step asks for them, as ``medfoundry pretrain`` does;
- ``compute_only``: the same number of steps on batches already on the device;
- ``single_task``: the reference a multi-task loop is held to: a plain PyTorch loop (forward,
  loss, backward, one AdamW step over all parameters, ``zero_grad``) on the same model and
  resident batches, one task batch per iteration.

``loaded / compute_only`` near 1 means loading keeps up; ``compute_only / single_task`` is the
multi-task machinery's cost (target >= 0.9). On CUDA, NVML's busy fraction is sampled every
100 ms during the loaded phases, and a short ``torch.profiler`` pass over compute-only steps
reports the share of wall time in which GPU kernels ran and the costliest operators.
``--modes eager,compiled`` repeats the phases with the encoder compiled (``torch.compile``).

Tried and left out after measuring on an H200 (docs/benchmarks.md): fetching and copying the
next task's batch in a background thread on a side stream made the loaded phase 8-15% slower
(the step is CPU-bound at batch 32, and the thread competes for the interpreter); the encoder
under CUDA graphs (``torch.compile(mode="reduce-overhead")``) fails in the memory-constant step
("accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run").

    python benchmarks/gpu_throughput.py --device cuda --modes eager,compiled     # the paper setting
    python benchmarks/gpu_throughput.py --device cpu --encoder resnet10t --image-size 64 \\
        --batch-size 8 --tasks 3 --steps 2 --warmup 1 --num-workers 0            # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medfoundry.data import CacheSettings, TaskDataset, load_task_data
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

ORDER = ("segmentation", "detection", "classification")


def main() -> None:
    args = _parse()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    amp = torch.bfloat16 if args.precision == "bf16" else None

    specs = _specs(args.data or Path(tempfile.mkdtemp()) / "demo", args.tasks)
    tasks = {s.name: build_task(s) for s in specs}
    cfg = ModelConfig(
        image_size=args.image_size,
        encoder=EncoderConfig(name=args.encoder, model_kwargs=json.loads(args.model_kwargs)),
    )
    torch.manual_seed(0)
    model = build_multitask_model(cfg, tasks).to(device).train()
    opt = OptimizerConfig()
    optimizers = Optimizers(
        shared=build_adamw(model.shared_parameters(), 1e-4, opt),
        heads={n: build_adamw(model.head_parameters(n), 1e-4, opt) for n in tasks},
    )
    single_optimizer = build_adamw(model.parameters(), 1e-4, opt)
    sampler = _sampler(specs, tasks, args, device)
    images_per_step = args.tasks * args.batch_size

    def step(batches: Any) -> None:
        memory_constant_step(model, tasks, batches, optimizers, autocast_dtype=amp, grad_clip_norm=1.0)

    def loaded() -> None:
        step(b.to(device, device.type == "cuda") for b in sampler.next_step())

    resident = [b.to(device) for b in sampler.next_step()]

    def compute_only() -> None:
        step(resident)

    def single_task() -> None:
        for batch in resident:
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = tasks[batch.task].loss(model(batch.task, batch.images), batch.targets)
            loss.backward()
            single_optimizer.step()
            single_optimizer.zero_grad(set_to_none=True)

    phases: dict[str, Callable[[], None]] = {
        "loaded": loaded,
        "compute_only": compute_only,
        "single_task": single_task,
    }
    rows = []
    for mode in args.modes.split(","):
        compiled = mode != "eager"
        if compiled:
            started = time.perf_counter()
            model.encoder.compile()  # in place, as training.enable_compile does
            for _ in range(2):
                compute_only()
            _sync(device)
            print(f"compile + 2 steps: {time.perf_counter() - started:.1f} s", flush=True)
        rates = {}
        for name, phase in ((n, phases[n]) for n in args.phases.split(",")):
            for _ in range(args.warmup):
                phase()
            _reset_peak(device)
            with _UtilisationSampler(device) as busy:
                rate = _timed(phase, args.steps, images_per_step, device)
            rates[name] = rate
            rows.append(
                {
                    "encoder": args.encoder,
                    "compiled": compiled,
                    "mode": mode,
                    "phase": name,
                    "tasks": args.tasks,
                    "batch_per_task": args.batch_size,
                    "precision": args.precision,
                    "num_workers": args.num_workers,
                    "img_s": rate,
                    "gpu_busy": busy.mean(),
                    "peak_gib": _peak_gib(device),
                }
            )
            print(f"{mode:10s} {name:16s} {rate:9.1f} img/s", flush=True)
        print(json.dumps({"mode": mode, "img_s": rates}), flush=True)
        if device.type == "cuda" and args.profile_steps:
            try:
                _profile(compute_only, args.profile_steps, device)
            except Exception as e:  # noqa: BLE001 - a profiler problem must not lose the measurements
                print(f"profile failed: {type(e).__name__}: {e}")
    sampler.close()
    print()
    print_table(rows)
    bench = "gpu_throughput-" + args.modes.replace(",", "-")
    print(f"\nwrote {write_results(bench, rows, device, args.precision)}")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--encoder", default="swin_tiny_patch4_window7_224")
    parser.add_argument("--model-kwargs", default="{}", help="JSON timm arguments")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--num-workers", type=int, default=2, help="per task")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--modes",
        default="eager",
        help="eager and/or compiled (the encoder through torch.compile), in this order",
    )
    parser.add_argument("--phases", default="loaded,compute_only,single_task")
    parser.add_argument("--profile-steps", type=int, default=3, help="CUDA: profiled compute-only steps")
    parser.add_argument(
        "--data",
        type=Path,
        help="small corpus folder (medfoundry demo-data; built in a temp folder if absent)",
    )
    return parser.parse_args()


def _specs(folder: Path, count: int) -> list[TaskSpec]:
    """``count`` tasks, segmentation / detection / classification in turn, on the small corpus's
    real images."""
    import yaml

    tasks_file = folder / "labelled_tasks.yaml"
    if not tasks_file.exists():
        from medfoundry.corpus.selections import build_selection

        build_selection(folder, "small")
    demo = {t["type"]: t for t in yaml.safe_load(tasks_file.read_text())["tasks"]}
    specs = []
    for i in range(count):
        task = dict(demo[ORDER[i % 3]])
        task["source"] = {**task["source"], "path": str(folder / task["source"]["path"])}
        specs.append(TaskSpec.model_validate({**task, "name": f"t{i}_{ORDER[i % 3]}"}))
    return specs


def _sampler(
    specs: list[TaskSpec], tasks: dict[str, Any], args: argparse.Namespace, device: torch.device
) -> RoundRobinSampler:
    """Loaders over the preprocessing cache, as ``medfoundry pretrain`` builds them."""
    cache = CacheSettings(Path(tempfile.mkdtemp()) / "cache", "stat", max(1, args.num_workers))
    loaders = {}
    for spec in specs:
        task = tasks[spec.name]
        data = load_task_data(
            spec, task.target, seed=0, val_fraction=0.2, size=args.image_size, cache=cache, prepare=("train",)
        )
        prepared = data.prepared["train"]
        dataset = TaskDataset(
            prepared.records, task.target, args.image_size, augment=True, arrays=prepared.arrays
        )
        loaders[spec.name] = CyclicTaskLoader(
            spec.name,
            dataset,
            TaskCollate(spec.name, task),
            batch_size=args.batch_size,
            seed=0,
            num_workers=args.num_workers,
            pin_memory=device.type == "cuda",
        )
    return RoundRobinSampler(loaders)


def _profile(step: Callable[[], None], steps: int, device: torch.device) -> None:
    """Share of wall time with a GPU kernel running, and the costliest operators."""
    from torch.profiler import ProfilerActivity, profile

    _sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
        wall = time.perf_counter() - started
    events = prof.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type.name == "CUDA")
    sync_us = sum(e.cpu_time_total for e in events if e.key in ("aten::_local_scalar_dense", "aten::item"))
    print(
        f"\nprofile of {steps} compute-only steps: wall {wall * 1e3:.1f} ms, GPU kernels "
        f"{kernel_us / 1e3:.1f} ms ({kernel_us / 1e6 / wall:.0%} of wall), CPU time in .item() "
        f"{sync_us / 1e3:.1f} ms"
    )
    print(events.table(sort_by="self_device_time_total", row_limit=15, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


def _timed(step: Callable[[], None], steps: int, images_per_step: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * images_per_step / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


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
