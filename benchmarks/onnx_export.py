"""Which encoder families export to ONNX, how long it takes, and how close onnxruntime stays to PyTorch.

For each timm family (ResNet, ConvNeXt, ViT with its simple pyramid, Swin) a checkpoint with a
classification and a segmentation head (random weights: the export does not depend on them) is
written and exported with ``medfoundry export --onnx``'s recipe, which traces with torch's
dynamo exporter at batch 2 and checks every graph in onnxruntime at batch 3.

    python benchmarks/onnx_export.py            # 64 px; --image-size 224 for the paper setting
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from medfoundry.models import ModelConfig, build_multitask_model
from medfoundry.recipes.export import to_onnx
from medfoundry.tasks import TaskSpec, build_task
from medfoundry.training.checkpoint import save_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import print_table, write_results  # noqa: E402

FAMILIES = {
    "resnet18": {},
    "convnext_atto": {},
    "vit_tiny_patch16_224": {},
    "swin_tiny_patch4_window7_224": {"window_size": 4},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    specs = [
        TaskSpec(name="organ", type="classification", classes=["a", "b", "c"], source={"path": "x.csv"}),
        TaskSpec(name="tissue", type="segmentation", classes=["bg", "fg"], source={"path": "y.csv"}),
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, kwargs in FAMILIES.items():
            cfg = ModelConfig.model_validate(
                {"image_size": args.image_size, "encoder": {"name": name, "model_kwargs": kwargs or None}}
            )
            model = build_multitask_model(cfg, {s.name: build_task(s) for s in specs})
            tasks = [s.model_dump(mode="json") for s in specs]
            config = {"model": cfg.model_dump(mode="json"), "tasks": tasks}
            checkpoint = save_checkpoint(Path(tmp) / name / "checkpoint", model, config)
            started = time.perf_counter()
            out = to_onnx.run(checkpoint, Path(tmp) / name / "onnx")
            seconds = time.perf_counter() - started
            described = json.loads((out / "onnx_config.json").read_text())
            graphs = [described["encoder"], *described["heads"].values()]
            rows.append(
                {
                    "encoder": name,
                    "image_size": args.image_size,
                    "export_s": round(seconds, 1),
                    "encoder_mb": round((out / "encoder.onnx").stat().st_size / 2**20, 1),
                    "max_abs_diff": max(g["max_abs_difference_to_pytorch"] for g in graphs),
                    "opset": described["opset"],
                }
            )
    print_table(rows)
    print(f"wrote {write_results('onnx_export', rows, torch.device('cpu'), 'fp32')}")


if __name__ == "__main__":
    main()
