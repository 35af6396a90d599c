"""The one table of ``gpu_suite.sh``: every part's status and its numbers against the targets.

    python benchmarks/gpu_suite_summary.py RESULTS_DIR < status.tsv   # status: "part<TAB>text" lines

Writes ``RESULTS_DIR/summary.json``; exits 1 when a part failed.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any


def main() -> int:
    results = Path(sys.argv[1])
    status = dict(line.split("\t", 1) for line in sys.stdin.read().splitlines() if "\t" in line)
    rows: list[dict[str, Any]] = []
    for path in sorted(results.glob("gpu_throughput-*.csv")):
        rows += _throughput(_read_csv(path))
    for path in sorted(results.glob("memory_vs_tasks-*.csv")):
        rows += _memory(_read_csv(path))
    for path in sorted(results.glob("mae_throughput-*.json")):
        rows += _mae(json.loads(path.read_text()), compiled="-compiled-" in path.stem)
    print("\npart                 status")
    for part, text in status.items():
        print(f"{part:20s} {text}")
    print(f"\n{'measure':58s} {'value':>10s} {'target':>10s}  met")
    for row in rows:
        met = "" if row["met"] is None else ("yes" if row["met"] else "NO")
        print(f"{row['measure']:58s} {_fmt(row['value']):>10s} {row['target']:>10s}  {met}")
    (results / "summary.json").write_text(json.dumps({"status": status, "measures": rows}, indent=2))
    return 1 if any(text.startswith("FAILED") for text in status.values()) else 0


def _throughput(table: list[dict[str, str]]) -> list[dict[str, Any]]:
    by = {(r["compiled"], r["phase"]): r for r in table}
    out = []
    for compiled in dict.fromkeys(r["compiled"] for r in table):
        mode = "compiled" if compiled == "True" else "eager"
        rate = {phase: float(r["img_s"]) for (c, phase), r in by.items() if c == compiled}
        busy = float(by[(compiled, "loaded")]["gpu_busy"])
        peak = max(float(r["peak_gib"]) for (c, _), r in by.items() if c == compiled)
        out += [
            _row(f"multi-task {mode}: img/s, real loading", rate["loaded"]),
            _row(f"multi-task {mode}: img/s, batches on the device", rate["compute_only"]),
            _row(f"multi-task {mode}: GPU busy, real loading", busy, ">= 0.90", busy >= 0.9),
            _row(f"multi-task {mode}: real loading / on-device", rate["loaded"] / rate["compute_only"]),
            _row(
                f"multi-task {mode}: on-device / single-task loop",
                rate["compute_only"] / rate["single_task"],
                ">= 0.90",
                rate["compute_only"] / rate["single_task"] >= 0.9,
            ),
            _row(f"multi-task {mode}: peak memory (GiB)", peak),
        ]
    return out


def _memory(table: list[dict[str, str]]) -> list[dict[str, Any]]:
    out = []
    for strategy in dict.fromkeys(r["strategy"] for r in table):
        mine = [r for r in table if r["strategy"] == strategy]
        first, last = mine[0], mine[-1]
        ratio = float(last["training_mb"]) / float(first["training_mb"])
        name = f"memory {strategy}: T={last['tasks']} / T={first['tasks']}"
        if strategy == "memory_constant":
            out.append(_row(name, ratio, "<= 1.05", ratio <= 1.05))
        else:
            out.append(_row(name, ratio))
        out.append(_row(f"memory {strategy}: training MB at T={last['tasks']}", float(last["training_mb"])))
    return out


def _mae(sidecar: dict[str, Any], *, compiled: bool) -> list[dict[str, Any]]:
    summary = sidecar["summary"]
    mode = "compiled" if compiled else "eager"
    out = [_row(f"MAE {mode}: img/s", summary["median_images_per_s"]["drop_tokens"])]
    if "mfu" in summary and sidecar["settings"].get("peak_tflops"):
        mfu = summary["mfu"]["drop_tokens"]
        out.append(_row(f"MAE {mode}: model FLOPs utilisation", mfu, ">= 0.40", mfu >= 0.4))
    return out


def _row(measure: str, value: float, target: str = "", met: bool | None = None) -> dict[str, Any]:
    if math.isnan(value):  # not measured on this device (NVML busy, GPU memory on a CPU)
        met = None
    return {"measure": measure, "value": value, "target": target, "met": met}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _fmt(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
