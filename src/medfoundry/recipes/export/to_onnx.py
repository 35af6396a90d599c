"""Recipe: export a checkpoint's encoder and task heads as ONNX graphs (``medfoundry export --onnx DIR``).

The folder holds::

    encoder.onnx         images (B, 3, S, S) float32 in [0, 1] -> embedding (B, C) and the
                         feature pyramid features_0 .. features_{L-1} (B, C_i, S/s_i, S/s_i)
    heads/<task>.onnx    one per supervised task: classification and multilabel heads take the
                         embedding and give logits (B, K); segmentation heads take the pyramid
                         (shared pixel decoder + head) and give logits (B, K, S, S); detection
                         heads take the pyramid (shared FCOS decoder + head) and give per level
                         cls_logits_l, box_regression_l (distances / stride), centerness_l
    onnx_config.json     input contract, every graph's inputs and outputs, classes, strides and
                         how to turn outputs into predictions

Normalisation (the backbone's mean/std) is inside ``encoder.onnx``: feed [0, 1] images. The
batch dimension is dynamic; the image side is the checkpoint's. Shared decoders are part of each
head graph that needs them, so the encoder runs once per batch for every task. Detection
post-processing (top-k, box decoding, NMS) stays outside the graphs (``onnx_config.json`` says
how; ``medfoundry predict`` does it).

Exporter: ``torch.onnx.export(..., dynamo=True)``, the ``torch.export``-based exporter that
torch has used by default since 2.9 (the TorchScript exporter is deprecated). On torch 2.14.1 it
exports timm ResNet, ConvNeXt, ViT and Swin encoders with a dynamic batch (see
docs/benchmarks.md). Every graph is checked before the folder is moved into place: onnxruntime's
outputs on a batch of another size must equal PyTorch's to within ``TOLERANCE``. An encoder that
``torch.export`` cannot trace is reported in one line and nothing is written.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import traceback
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medfoundry.errors import ConfigError
from medfoundry.models.multitask_model import MultiTaskModel
from medfoundry.output_folders import check_output_folder, write_marker
from medfoundry.recipes.predict.job import supervised_tasks
from medfoundry.safe_writes import write_folder_atomically
from medfoundry.tasks import TASK_TYPES
from medfoundry.training.checkpoint_config import library_versions
from medfoundry.training.model_loading import load_multitask_model

__all__ = ["COMMAND", "TOLERANCE", "run"]

COMMAND = "export --onnx"

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
"""Largest absolute difference allowed between onnxruntime's and PyTorch's outputs."""


class EncoderGraph(nn.Module):
    """Images -> (embedding, *pyramid): what the encoder graph computes."""

    def __init__(self, model: MultiTaskModel) -> None:
        super().__init__()
        self.encoder = model.encoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.encoder(images)
        return (features[-1].mean(dim=(-2, -1)), *features)


class PooledHeadGraph(nn.Module):
    """Embedding -> logits (classification and multilabel heads)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(embedding)
        return logits


class PixelHeadGraph(nn.Module):
    """Pyramid -> per-pixel logits at the input size (shared pixel decoder + segmentation head)."""

    def __init__(self, decoder: nn.Module, head: nn.Module, image_size: int) -> None:
        super().__init__()
        self.decoder, self.head, self.image_size = decoder, head, image_size

    def forward(self, *features: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.decoder(list(features), (self.image_size, self.image_size)))
        return logits


class DetectionHeadGraph(nn.Module):
    """Pyramid -> FCOS outputs per level, flattened (shared detection decoder + FCOS head)."""

    def __init__(self, decoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.decoder, self.head = decoder, head

    def forward(self, *features: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.head(self.decoder(list(features)))
        return (*out.cls_logits, *out.box_regression, *out.centerness)


def run(checkpoint: Path, out_dir: Path) -> Path:
    """Write the ONNX graphs of ``checkpoint`` to ``out_dir``; returns ``out_dir``.

    Raises:
        ConfigError: not a checkpoint, the ONNX packages are missing, a graph that cannot be
            traced or whose onnxruntime outputs differ from PyTorch's (nothing is written).
        DataError: ``out_dir`` is not new, empty or an earlier ``export --onnx`` folder (e.g.
            an existing file; ``output_folders``; before any work).
    """
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"export --onnx needs {', '.join(missing)}: pip install 'medfoundry[export]' (or: make setup)"
        )
    check_output_folder(Path(out_dir), COMMAND)
    model, config = load_multitask_model(checkpoint)
    size = int(config["model"]["image_size"])
    images = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        encoder_outputs = EncoderGraph(model)(images)
    levels = len(encoder_outputs) - 1
    feature_names = [f"features_{i}" for i in range(levels)]
    graphs: dict[str, tuple[nn.Module, tuple[torch.Tensor, ...], list[str], list[str]]] = {
        "encoder": (EncoderGraph(model), (images,), ["images"], ["embedding", *feature_names])
    }
    heads: dict[str, dict[str, Any]] = {}
    for spec in supervised_tasks(config):
        kind = model.head_features[spec.name]
        head = model.heads[spec.name]
        if kind == "pooled":
            graph: nn.Module = PooledHeadGraph(head)
            inputs, names = encoder_outputs[:1], ["embedding"]
            outputs = ["logits"]
        elif kind == "pixel":
            graph = PixelHeadGraph(model.pixel_decoder, head, size)  # type: ignore[arg-type]
            inputs, names, outputs = encoder_outputs[1:], feature_names, ["logits"]
        else:
            graph = DetectionHeadGraph(model.detection_decoder, head)  # type: ignore[arg-type]
            inputs, names = encoder_outputs[1:], feature_names
            with torch.no_grad():
                count = len(graph(*inputs)) // 3
            parts = ("cls_logits", "box_regression", "centerness")
            outputs = [f"{part}_{i}" for part in parts for i in range(count)]
        graphs[f"heads/{spec.name}"] = (graph.eval(), tuple(inputs), names, outputs)
        postprocess = TASK_TYPES.get(spec.type).postprocess_text
        heads[spec.name] = {"type": spec.type, "classes": spec.classes, "postprocess": postprocess}
        if kind == "pyramid":
            decoder: Any = model.detection_decoder
            heads[spec.name]["strides"] = list(decoder.strides)

    def write(tmp: Path) -> None:
        described = {}
        for name, (graph, inputs, input_names, output_names) in graphs.items():
            path = tmp / f"{name}.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            _export(graph, inputs, input_names, output_names, path, name, config)
            described[name] = _check(graph, path, input_names, output_names, name)
        (tmp / "onnx_config.json").write_text(
            json.dumps(_onnx_config(checkpoint, config, described, heads), indent=2)
        )
        write_marker(tmp, COMMAND, list_files=True)

    return write_folder_atomically(Path(out_dir), write)


def _export(
    graph: nn.Module,
    inputs: tuple[torch.Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    path: Path,
    name: str,
    config: dict[str, Any],
) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    dims = tuple({0: batch} for _ in inputs)
    # one positional input (images, embedding), or the pyramid as varargs (*features)
    varargs = isinstance(graph, PixelHeadGraph | DetectionHeadGraph)
    dynamic_shapes: Any = {"features": dims} if varargs else dims
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on unsupported-but-unused ops
            torch.onnx.export(
                graph,
                inputs,
                str(path),
                input_names=input_names,
                output_names=output_names,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # noqa: BLE001 - torch.export and the ONNX translation raise many types
        what = f"the encoder '{config['model']['encoder']['name']}'" if name == "encoder" else name
        raise ConfigError(
            f"export --onnx: {what} cannot be exported to ONNX ({_cause(e)}); nothing written "
            "(the --timm and --hf exports need no tracing)"
        ) from None


def _cause(error: BaseException) -> str:
    """The root cause of an exporter failure, with where it was raised, on one line."""
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    text = str(root).strip().splitlines()[0][:160] if str(root).strip() else ""
    frames = traceback.extract_tb(root.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(root).__name__}{': ' + text if text else ''}{where}"


def _check(
    graph: nn.Module, path: Path, input_names: list[str], output_names: list[str], name: str
) -> dict[str, Any]:
    """Run the graph in onnxruntime on a batch of 3 (not the export's 2) and compare with PyTorch."""
    import onnx
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    shapes = {i.name: i.shape for i in session.get_inputs()}
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(3, *shapes[n][1:], generator=generator) for n in input_names]
    if input_names == ["images"]:
        inputs = [inputs[0].sigmoid()]  # images in [0, 1]
    with torch.no_grad():
        expected = graph(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = session.run(output_names, {n: x.numpy() for n, x in zip(input_names, inputs, strict=True)})
    difference = max(float(np.abs(e.numpy() - g).max()) for e, g in zip(expected, got, strict=True))
    if not difference <= TOLERANCE:
        raise ConfigError(
            f"export --onnx: {name}.onnx differs from PyTorch by {difference:.2g} in onnxruntime (allowed "
            f"{TOLERANCE:g}); nothing written"
        )
    log.info("%s.onnx: onnxruntime matches PyTorch (max abs difference %.2g)", name, difference)
    opset = next(o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx"))
    return {
        "file": f"{name}.onnx",
        "opset": opset,
        "inputs": {i.name: i.shape for i in session.get_inputs()},
        "outputs": {o.name: o.shape for o in session.get_outputs()},
        "max_abs_difference_to_pytorch": difference,
    }


def _onnx_config(
    checkpoint: Path, config: dict[str, Any], graphs: dict[str, Any], heads: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "format": "medfoundry-onnx",
        "source_checkpoint": str(checkpoint),
        "exporter": f"torch.onnx.export(dynamo=True), torch {torch.__version__}",
        "opset": graphs["encoder"]["opset"],
        "input": config.get("input", {}),
        "encoder": graphs["encoder"],
        "heads": {name: {**heads[name], **graphs[f"heads/{name}"]} for name in heads},
        "versions": library_versions(),
    }
