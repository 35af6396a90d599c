"""Writing benchmark results: one tidy CSV per run plus a JSON sidecar (command, git SHA, versions).

Files are named ``<bench>-<device>-<precision>-torch<version>.csv`` under ``benchmarks/results/``,
or under ``$MEDFOUNDRY_BENCH_RESULTS`` when it is set (``gpu_suite.sh`` collects a run's files there).
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(os.environ.get("MEDFOUNDRY_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def device_name(device: torch.device) -> str:
    """``cpu-<model>`` or ``cuda-<gpu name>`` in file-name-safe form."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu{torch.get_num_threads()}t"
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")


def write_results(bench: str, rows: list[dict[str, Any]], device: torch.device, precision: str) -> Path:
    """Write ``rows`` as CSV and the sidecar JSON; returns the CSV path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{bench}-{device_name(device)}-{precision}-torch{torch.__version__.split('+')[0]}"
    path = RESULTS / f"{stem}.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    sidecar = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_sha": _git_sha(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": _cpu_count()},
        "versions": {p: _version(p) for p in ("medfoundry", "torch", "torchvision", "timm")},
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    """A plain aligned table on stdout."""
    columns = list(rows[0])
    cells = [[_fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _git_sha() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0))


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
