"""Chaos resume: SIGKILL a small multi-task run at random moments; one command must finish it, bit-equal.

The run: the small corpus's three microscopy tasks (nuclei segmentation, nuclei detection,
imaging-technique classification, real packaged images), resnet10t at 32 px, 16 shared steps
(two epochs of 8), validation every 5 steps, a checkpoint every 3 (``last`` is written at steps
3, 6, 8, 9, 12, 15 and 16). First one uninterrupted run, in its own process, timed (when its
training starts, when it ends). Then each trial starts the same run in a fresh folder with a
fresh cache, kills it with SIGKILL, and runs ONE command to finish it. The kill targets cycle:

- ``any time``: a moment drawn uniformly over the uninterrupted run's wall time (start-up and
  imports included);
- ``caching``: as soon as the cache's temporary folder appears;
- ``training``: a delay drawn uniformly from the first 80 % of the uninterrupted run's training
  phase, counted from the moment this run's training starts (its ``metrics.jsonl`` appears);
- ``checkpoint write``: while the k-th ``last`` checkpoint is being written, k drawn from 1-7.

A trial whose run ends before its kill (a write too quick to catch, a busy machine changing
the timing) is listed but not counted; trials continue until ``--kills`` runs were killed.
The finishing command alternates, by blocks of four trials (one per target), between
``medfoundry pretrain --resume RUN`` and the command that started the run (``medfoundry
pretrain CONFIG``); ``--resume`` needs the run's
``config.yaml``, so a run killed before writing it gets the starting command. Bit-equal: every
tensor of the final ``checkpoints/last`` (weights, optimizer states, RNG states) and the
trainer state's JSON equal the uninterrupted run's, and so do the logged metrics (timings aside).

    python benchmarks/chaos_resume.py                 # 24 kills (about 40 min on 2 busy CPU cores)
    python benchmarks/chaos_resume.py --kills 4       # a quick look

Prints one row per trial and ``resumed N/N, bit-equal N/N`` over the killed runs; exits 1
unless both are N/N.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import yaml

from medfoundry.corpus.selections import MICROSCOPY, build_selection
from medfoundry.training.metrics_log import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

CHECKPOINT = ("checkpoints", "last")


def run_config(run_dir: Path, cache_dir: Path, tasks: Path) -> dict[str, Any]:
    return {
        "run_dir": str(run_dir),
        "seed": 0,
        "enable_progress": False,
        "tasks": str(tasks),
        "model": {
            "image_size": 32,
            "encoder": {"name": "resnet10t"},
            "pixel_decoder": {"channels": 16, "embed_dim": 8},
            "detection_decoder": {"channels": 16, "num_convs": 1, "num_levels": 3},
        },
        "data": {"batch_size": 8, "cache_dir": str(cache_dir)},
        "training": {
            "max_steps": 16,
            "optimizer": {"lr": 1e-3},
            "checkpoint_every_steps": 3,
            "val_every_steps": 5,
            "log_every_steps": 1,
        },
    }


def medfoundry(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "medfoundry.cli.main", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[bytes]) -> tuple[int, str]:
    output, _ = process.communicate(timeout=900)
    return process.returncode, output.decode(errors="replace")


def has_temporary(folder: Path) -> bool:
    return folder.is_dir() and any(".tmp-" in p.name for p in folder.iterdir())


def state_of(run_dir: Path, cache_dir: Path) -> str:
    """What the run was doing when it was killed, and the step of its last complete checkpoint."""
    if has_temporary(cache_dir):
        return "caching"
    if not (run_dir / "config.yaml").is_file():
        return "starting"
    try:
        config = json.loads((run_dir.joinpath(*CHECKPOINT) / "config.json").read_text())
        last = f"last at step {config['training']['step']}"
    except (OSError, ValueError, KeyError):
        last = "no last yet"
    checkpoints = run_dir / "checkpoints"
    writing = (
        [p.name.split(".")[1] for p in checkpoints.iterdir() if ".tmp-" in p.name]
        if checkpoints.is_dir()
        else []
    )
    if writing:
        return f"writing {writing[0]} ({last})"
    return f"training ({last})"


def kill_when(process: subprocess.Popen[bytes], ready: Callable[[], bool], deadline_s: float) -> bool:
    """SIGKILL ``process`` as soon as ``ready()``; False if it ended (or time ran out) first."""
    deadline = time.monotonic() + deadline_s
    while process.poll() is None and time.monotonic() < deadline:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.002)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return True
    return False


def final_state(run_dir: Path) -> tuple[dict[str, torch.Tensor], Any, list[dict[str, Any]]]:
    folder = run_dir.joinpath(*CHECKPOINT)
    tensors = safetensors.torch.load_file(str(folder / "model.safetensors"))
    tensors.update(
        {
            f"state/{k}": v
            for k, v in safetensors.torch.load_file(str(folder / "trainer_state.safetensors")).items()
        }
    )
    state = json.loads((folder / "trainer_state.json").read_text())
    metrics = [
        {k: v for k, v in r.items() if k != "images_per_s"} for r in read_metrics(run_dir / "metrics.jsonl")
    ]
    return tensors, state, metrics


def bit_equal(a: Any, b: Any) -> bool:
    tensors_a, state_a, metrics_a = a
    tensors_b, state_b, metrics_b = b
    same_tensors = tensors_a.keys() == tensors_b.keys() and all(
        torch.equal(tensors_a[k], tensors_b[k]) for k in tensors_a
    )
    return same_tensors and state_a == state_b and metrics_a == metrics_b


class Appearance:
    """True while the ``wanted``-th appearance of an entry starting with ``prefix`` is in ``folder``."""

    def __init__(self, folder: Path, prefix: str, wanted: int) -> None:
        self.folder, self.prefix, self.wanted = folder, prefix, wanted
        self.seen, self.present = 0, False

    def __call__(self) -> bool:
        now = self.folder.is_dir() and any(p.name.startswith(self.prefix) for p in self.folder.iterdir())
        if now and not self.present:
            self.seen += 1
        self.present = now
        return now and self.seen >= self.wanted


class TrainingMoment:
    """True ``delay_s`` after this run's training started (its ``metrics.jsonl`` appeared)."""

    def __init__(self, run_dir: Path, delay_s: float) -> None:
        self.metrics, self.delay_s = run_dir / "metrics.jsonl", delay_s
        self.at: float | None = None

    def __call__(self) -> bool:
        if self.at is None and self.metrics.is_file():
            self.at = time.monotonic() + self.delay_s
        return self.at is not None and time.monotonic() >= self.at


def timed_run(config: Path, run_dir: Path) -> tuple[float, float]:
    """Run to the end; seconds until training started (``metrics.jsonl`` exists) and in all."""
    started = time.monotonic()
    process = medfoundry("pretrain", str(config))
    training_at = None
    while process.poll() is None:
        if training_at is None and (run_dir / "metrics.jsonl").is_file():
            training_at = time.monotonic() - started
        time.sleep(0.01)
    code, output = finish(process)
    if code != 0 or training_at is None:
        raise SystemExit(f"the uninterrupted run failed:\n{output}")
    return training_at, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=24, help="Killed runs to finish and compare.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the kill times.")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="Keep the runs here (default: a temp folder)."
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="chaos_resume-"))
    tasks = build_selection(root / "data", "small", sources=MICROSCOPY).labelled_tasks

    def write_config(name: str) -> tuple[Path, Path, Path]:
        run_dir, cache_dir = root / name, root / f"{name}-cache"
        path = root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(run_config(run_dir, cache_dir, tasks)))
        return path, run_dir, cache_dir

    config, run_dir, _ = write_config("uninterrupted")
    training_at, wall_s = timed_run(config, run_dir)
    reference = final_state(run_dir)
    print(f"uninterrupted run: {wall_s:.1f} s, training from {training_at:.1f} s", flush=True)

    rows: list[dict[str, Any]] = []
    trial = 0
    while sum(r["killed"] for r in rows) < args.kills and trial < 2 * args.kills:
        config, run_dir, cache_dir = write_config(f"trial{trial:02d}")
        target = ("any time", "caching", "training", "checkpoint write")[trial % 4]
        process = medfoundry("pretrain", str(config))
        started = time.monotonic()
        ready: Callable[[], bool]
        if target == "caching":
            ready = Appearance(cache_dir, ".", 1)
        elif target == "checkpoint write":
            ready = Appearance(run_dir / "checkpoints", ".last.tmp-", rng.randint(1, 7))
        elif target == "training":
            ready = TrainingMoment(run_dir, rng.uniform(0.0, 0.8 * (wall_s - training_at)))
        else:
            at = started + rng.uniform(0.0, wall_s)
            ready = lambda at=at: time.monotonic() >= at  # noqa: E731
        killed = kill_when(process, ready, 3 * wall_s)
        killed_at = time.monotonic()
        phase = state_of(run_dir, cache_dir) if killed else "finished before the kill"
        # blocks of four trials (one per target) alternate the finishing command
        use_resume = (trial // 4) % 2 == 0 and (run_dir / "config.yaml").is_file()
        command = ["pretrain", "--resume", str(run_dir)] if use_resume else ["pretrain", str(config)]
        code, output = finish(medfoundry(*command))
        resumed = code == 0
        rows.append(
            {
                "trial": trial,
                "target": target,
                "killed": killed,
                "killed_at_s": round(killed_at - started, 1),
                "killed_during": phase,
                "resume_command": "--resume RUN" if use_resume else "CONFIG",
                "resumed": resumed,
                "bit_equal": resumed and bit_equal(final_state(run_dir), reference),
                "resume_s": round(time.monotonic() - killed_at, 1),
            }
        )
        print_table(rows[-1:])
        if not resumed:
            print(output[-2000:], flush=True)
        trial += 1

    print_table(rows)
    killed = [r for r in rows if r["killed"]]
    resumed = sum(r["resumed"] for r in killed)
    equal = sum(r["bit_equal"] for r in killed)
    print(f"resumed {resumed}/{len(killed)}, bit-equal {equal}/{len(killed)}")
    write_results("chaos_resume", rows, torch.device("cpu"), "fp32")
    if resumed != len(killed) or equal != len(killed) or len(killed) < args.kills:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
