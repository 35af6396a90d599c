"""The model card (``README.md``) of an exported encoder, written from its checkpoint alone.

Like timm's and rad-dino's Hub cards, and like the ``network_data_format`` and
``intended_use`` of MONAI bundle metadata, it says what the weights are, what they expect and
what they are not for: the card metadata (licence, library, tags), architecture, input
(channels, value range, size, normalisation, intensity handling per modality), the pretraining
tasks with their sources and sample counts, the validation metrics recorded in the checkpoint,
how to load it, intended use and limitations (not a medical device), licence and the patent
notice. The YAML header is ``huggingface_hub.ModelCardData``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from medfoundry.models.encoder import Encoder
from medfoundry.tasks import TaskSpec

__all__ = ["PATENT_NOTICE", "model_card"]

PATENT_NOTICE = (
    "The licence of the UMedPT authors' framework names a European patent application, "
    "**EP 23209015.9**, held by Fraunhofer, that concerns the multi-task training method. "
    "medfoundry's Apache-2.0 licence covers medfoundry's own code only; it cannot grant rights "
    "under third-party patents. If your use may fall under that application (for example "
    "commercial use in a country where it is granted), judge your own situation and seek advice."
)

MAX_CLASSES_SHOWN = 12

INTENSITY = {
    "auto": "by format: image files by their bit depth (8-bit / 255, 16-bit / 65535), 2D DICOM by its "
    "VOI window, volumes (NIfTI, NRRD, DICOM series) by their 0.5th-99.5th percentiles",
    "range": "stored values divided by their type's range (DICOM: 2^BitsStored - 1)",
    "minmax": "minimum to maximum of each image (of each volume for volumes)",
    "voi": "the DICOM header's VOI LUT or window",
}


def model_card(config: dict[str, Any], encoder: Encoder, timm_config: dict[str, Any]) -> str:
    """The card of the encoder of a checkpoint.

    Args:
        config: The checkpoint's ``config.json``.
        encoder: Its encoder (for parameters and the feature pyramid).
        timm_config: The exported timm ``config.json`` (architecture, model arguments, mean/std).
    """
    specs = [TaskSpec.model_validate(t) for t in config["tasks"]]
    architecture = timm_config["architecture"]
    metadata = ModelCardData(
        license="apache-2.0",
        library_name="timm",
        pipeline_tag="image-feature-extraction",
        tags=["medfoundry", "timm", "image-feature-extraction", "medical-imaging", "biomedical"],
    )
    sections = [
        f"---\n{metadata.to_yaml()}\n---",
        f"# medfoundry encoder: {architecture}",
        (
            f"An image encoder for biomedical images: timm's `{architecture}` pretrained with medfoundry "
            f"on {len(specs)} task(s) ({', '.join(sorted({s.type for s in specs}))}) for "
            f"{config.get('training', {}).get('step', '?')} shared steps. The weights are the backbone "
            "alone (task heads and decoders stay in the medfoundry checkpoint); it gives a feature "
            "pyramid and an image embedding to probe or fine-tune on new tasks."
        ),
        _architecture(encoder, timm_config),
        _input(config, specs, timm_config),
        _tasks(config, specs),
        _metrics(config),
        _usage(),
        _intended_use(),
        "## Licence and patent notice\n\n"
        "The weights are released under Apache-2.0, the licence of medfoundry, an independent "
        "implementation written from the published descriptions of UMedPT and VIS-MAE that contains "
        "no code of the UMedPT authors' framework. The licences of the pretraining data (see the "
        "sources above) may add conditions: check them before you publish or use these weights.\n\n"
        f"**Patent notice.** {PATENT_NOTICE}",
        "## Citation\n\n"
        '- Schäfer et al., "Overcoming data scarcity in biomedical imaging with a foundational '
        'multi-task model", *Nature Computational Science* 4, 495-509 (2024).\n'
        '- Liu et al., "VIS-MAE: An Efficient Self-supervised Learning Approach on Medical Image '
        'Segmentation and Classification", arXiv 2402.01034 (2024).\n'
        '- He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022.',
    ]
    return "\n\n".join(sections) + "\n"


def _architecture(encoder: Encoder, timm_config: dict[str, Any]) -> str:
    parameters = sum(p.numel() for p in encoder.backbone.parameters())
    levels = ", ".join(f"{f.channels} ch at stride {f.stride:g}" for f in encoder.feature_info)
    pyramid = " (the ViT's last map through a simple feature pyramid)" if encoder.pyramid is not None else ""
    return (
        "## Architecture\n\n"
        f"- timm architecture: `{timm_config['architecture']}`, built with "
        f"`{timm_config.get('model_args', {})}` (BatchNorm replaced by GroupNorm when "
        '`norm_layer: "groupnorm"`: medfoundry trains one task\'s batch at a time)\n'
        f"- parameters: {parameters / 1e6:.2f} M\n"
        f"- feature pyramid in medfoundry{pyramid}: {levels}\n"
        f"- embedding: global average of the deepest map, {encoder.out_channels} values"
    )


def _input(config: dict[str, Any], specs: list[TaskSpec], timm_config: dict[str, Any]) -> str:
    size = config["model"]["image_size"]
    pretrained = timm_config.get("pretrained_cfg", {})
    lines = [
        "## Input",
        "",
        f"- 3 channels, float32 in [0, 1], {size} x {size} pixels; grayscale images are replicated "
        "to 3 channels",
        f"- normalisation: `(x - mean) / std` with mean {pretrained.get('mean')} and std "
        f"{pretrained.get('std')} (timm's `resolve_data_config` applies it; `medfoundry.load_encoder` "
        "applies it inside the model)",
        "- intensity handling when pretrained, by task and modality (the same settings give new "
        "images the same scale; `medfoundry predict` and `embed --task` apply them):",
        "",
        "| task | modality | intensity | fit to the square | channels |",
        "|---|---|---|---|---|",
    ]
    for spec in specs:
        p = spec.preprocessing
        lines.append(
            f"| {spec.name} | {spec.modality or 'not given'} | {describe_intensity(p.intensity)} | "
            f"{p.fit} | {p.channels} |"
        )
    return "\n".join(lines)


def describe_intensity(intensity: Any) -> str:
    """One phrase for a task's intensity setting."""
    if intensity.type == "percentile":
        return f"{intensity.low:g}th-{intensity.high:g}th percentile of each image (of each volume)"
    if intensity.type == "window":
        windows = ", ".join(f"level {lv:g} / width {w:g} HU" for lv, w in intensity.levels_widths())
        return f"CT window(s) {windows}"
    return INTENSITY[intensity.type]


def _tasks(config: dict[str, Any], specs: list[TaskSpec]) -> str:
    counts = config.get("sample_counts", {})
    lines = [
        "## Pretraining tasks",
        "",
        "| task | type | classes | modality | source | train samples | val samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs:
        count = counts.get(spec.name)
        train, val = (count.get("train", 0), count.get("val", 0)) if count else ("not recorded",) * 2
        shown = spec.classes[:MAX_CLASSES_SHOWN]
        classes = ", ".join(shown) if shown else "(unlabelled)"
        if len(spec.classes) > len(shown):
            classes += f", ... ({len(spec.classes)} classes)"
        source = f"{spec.source.type}: `{Path(spec.source.location).name}`" if spec.source else "not given"
        lines.append(
            f"| {spec.name} | {spec.type} | {classes} | {spec.modality or 'not given'} | {source} | "
            f"{train} | {val} |"
        )
    training = config.get("training", {})
    lines += [
        "",
        "Samples are 2D images, volume slices or frames. Training: "
        f"{training.get('step', '?')} shared steps, seed {training.get('seed', '?')}, "
        f"strategy `{training.get('strategy', '?')}` (one backward per task batch; memory does not "
        "grow with the number of tasks).",
    ]
    return "\n".join(lines)


def _metrics(config: dict[str, Any]) -> str:
    results = config.get("metrics", {}).get("val", {})
    if not results:
        return (
            "## Validation metrics\n\nThis checkpoint records no validation metrics (those are kept in "
            "a run's `checkpoints/best`)."
        )
    step = config.get("training", {}).get("step", "?")
    lines = [
        "## Validation metrics",
        "",
        f"On each task's validation split at step {step}, as recorded in the checkpoint (loss: "
        "normalised so that chance is about 1):",
        "",
        "| task | metric | value |",
        "|---|---|---|",
    ]
    for task, values in results.items():
        for metric, value in values.items():
            lines.append(f"| {task} | {metric} | {value:.4f} |")
    return "\n".join(lines)


def _usage() -> str:
    return (
        "## How to use\n\n"
        "With timm alone (`ORG/NAME` is the repository this card belongs to):\n\n"
        "```python\n"
        "import timm, torch\n"
        'model = timm.create_model("hf-hub:ORG/NAME", pretrained=True).eval()\n'
        "config = timm.data.resolve_data_config({}, model=model)\n"
        "mean, std = (torch.tensor(config[k]).view(1, 3, 1, 1) for k in ('mean', 'std'))\n"
        "x = (images - mean) / std  # images: (B, 3, H, W) in [0, 1]\n"
        "features = model.forward_intermediates(x, intermediates_only=True)\n"
        "```\n\n"
        "With medfoundry (images in [0, 1]; normalisation inside):\n\n"
        "```python\n"
        "import medfoundry\n"
        'encoder = medfoundry.load_encoder("hf-hub:ORG/NAME")\n'
        "embeddings = encoder.embed(images)\n"
        "```"
    )


def _intended_use() -> str:
    return (
        "## Intended use and limitations\n\n"
        "- Intended use: research. An image encoder for biomedical images, to be probed or "
        "fine-tuned on downstream tasks and measured there.\n"
        "- **Not a medical device.** It is not validated for clinical use and must not be used "
        "for diagnosis, treatment or any decision about a patient.\n"
        "- It has seen only the pretraining data listed above. How well its features serve other "
        "modalities, scanners, sites or populations is unknown until measured: run a "
        "data-efficiency study (`medfoundry evaluate`) on your task against an ImageNet or "
        "random-weight baseline before relying on it.\n"
        "- Labels of the pretraining tasks may be derived rather than expert annotations (see each "
        "source's documentation); biases of those datasets carry over to the features."
    )
