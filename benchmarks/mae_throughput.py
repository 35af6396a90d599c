"""Training throughput of masked-image pretraining: what token dropping saves, and MONAI for reference.

Three models with the same ViT (size, patch, mask ratio) and the same decoder, each trained
with AdamW on random images (full steps: forward, loss, backward, optimizer step):

- ``drop_tokens``: medfoundry's MAE; the encoder sees only the visible patches.
- ``mask_token``: the same model and objective without dropping; masked patches are replaced
  by a learned token, so the encoder sees every patch.
- ``monai``: MONAI's ``MaskedAutoEncoderViT`` (token dropping too), same ViT and decoder sizes,
  with the same masked-patch loss.

The variants are timed in alternation (round-robin, order rotated each round), so slow phases
of a shared machine hit all of them; the table reports the median images/s over rounds, and
the training FLOPs per image (forward and backward, counted by torch's ``FlopCounterMode`` on
one untimed step), whose ratio bounds what dropping can save.

Run (CPU, the numbers in docs/benchmarks.md; one thread, as the machine was shared)::

    PYTHONPATH=src python benchmarks/mae_throughput.py --encoder vit_small_patch16_224 \\
        --image-size 224 --batch-size 8 --decoder-dim 256 --decoder-depth 4 --decoder-heads 8 --threads 1

On a GPU, the MAE paper's ViT-B setting, with model FLOPs utilisation (``--peak-tflops``: the
device's dense peak in that precision, 989 for an H100 SXM in bf16)::

    python benchmarks/mae_throughput.py --device cuda --precision bf16 --encoder vit_base_patch16_224 \\
        --batch-size 128 --decoder-dim 512 --decoder-depth 8 --decoder-heads 16 --rounds 10 --steps 10 \\
        --peak-tflops 989

Writes ``benchmarks/results/mae_throughput-<encoder>-dec<dim>x<depth>-<size>px-<device>-<precision>-
torch<version>.csv`` (one row per variant and round) and a ``.json`` sidecar with the command,
git SHA, versions and summary.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from medfoundry.models import create_encoder, create_masked_image_objective
from medfoundry.models.masking import masked_unit_loss, patchify
from medfoundry.training.checkpoint_config import library_versions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_io import RESULTS  # noqa: E402

VARIANTS = ("drop_tokens", "mask_token", "monai")


def build_step(
    variant: str, args: argparse.Namespace, device: torch.device
) -> Callable[[torch.Tensor], None]:
    """One training step of ``variant`` on a batch, with its own AdamW."""
    encoder = create_encoder(args.encoder, img_size=args.image_size, use_groupnorm=False)
    vit = encoder.backbone
    patch = vit.patch_embed.patch_size[0]
    decoder = {"decoder_depth": args.decoder_depth, "decoder_num_heads": args.decoder_heads}
    if variant == "monai":
        try:
            from monai.networks.nets import MaskedAutoEncoderViT
        except ImportError as e:
            sys.exit(f"the monai variant needs MONAI and einops ({e}): pip install monai einops")

        width = vit.embed_dim
        model = MaskedAutoEncoderViT(
            in_channels=3,
            img_size=args.image_size,
            patch_size=patch,
            hidden_size=width,
            mlp_dim=4 * width,
            num_layers=len(vit.blocks),
            num_heads=vit.blocks[0].attn.num_heads,
            masking_ratio=args.mask_ratio,
            decoder_hidden_size=args.decoder_dim,
            decoder_mlp_dim=4 * args.decoder_dim,
            decoder_num_layers=args.decoder_depth,
            decoder_num_heads=args.decoder_heads,
            spatial_dims=2,
            qkv_bias=True,
        ).to(device)

        def loss_of(images: torch.Tensor) -> torch.Tensor:
            pred, mask = model(images)
            return masked_unit_loss(pred, patchify(images, patch), mask.float())

        params = list(model.parameters())
    else:
        encoder.to(device)
        objective = create_masked_image_objective(
            encoder,
            image_size=args.image_size,
            masking=variant,
            mask_ratio=args.mask_ratio,
            mask_unit_size=patch,
            decoder_dim=args.decoder_dim,
            **decoder,
        ).to(device)

        def loss_of(images: torch.Tensor) -> torch.Tensor:
            return objective(encoder, images).loss

        params = [*encoder.backbone.parameters(), *objective.parameters()]
    fused = device.type == "cuda" or None  # the fused kernel, as medfoundry's training uses
    optimizer = torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=fused)
    # FLOPs are counted on the eager step first; ``--compile`` switches to the compiled one after
    compute = {"loss": loss_of}
    dtype = {"fp32": None, "bf16": torch.bfloat16}[args.precision]

    def step(images: torch.Tensor) -> None:
        amp = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with amp:
            loss = compute["loss"](images)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def compile_step() -> None:
        compute["loss"] = torch.compile(loss_of)

    step.compile = compile_step  # type: ignore[attr-defined]
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="vit_small_patch16_224", help="a timm plain ViT")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mask-ratio", type=float, default=0.75)
    parser.add_argument("--decoder-dim", type=int, default=256)
    parser.add_argument("--decoder-depth", type=int, default=4)
    parser.add_argument("--decoder-heads", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of all variants")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS)
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the forward and loss")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense peak for --precision (e.g. 989 for an H100 SXM in bf16): reports "
        "model FLOPs utilisation, counted training FLOPs x images/s / peak",
    )
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=device)
    variants = tuple(v for v in VARIANTS if v in args.variants.split(","))
    steps = {variant: build_step(variant, args, device) for variant in variants}

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # training FLOPs per image bound the attainable speed-up; counted on one untimed step
    flops = {}
    for variant, step in steps.items():
        with FlopCounterMode(display=False) as counter:
            step(images)
        flops[variant] = counter.get_total_flops() / args.batch_size
        if args.compile:
            step.compile()  # type: ignore[attr-defined]
        for _ in range(args.warmup):
            step(images)
    rows = []
    for round_index in range(args.rounds):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            sync()
            started = time.perf_counter()
            for _ in range(args.steps):
                steps[variant](images)
            sync()
            seconds = time.perf_counter() - started
            images_per_s = args.steps * args.batch_size / seconds
            rows.append({"variant": variant, "round": round_index, "images_per_s": images_per_s})

    speed = {v: [r["images_per_s"] for r in rows if r["variant"] == v] for v in variants}
    median = {v: statistics.median(speed[v]) for v in variants}
    # ratios within a round share the machine's state at that time: their median is steadier
    summary: dict[str, object] = {
        "gflop_per_image": {v: f / 1e9 for v, f in flops.items()},
        "median_images_per_s": median,
    }
    for other, target in (("mask_token", 2.5), ("monai", 1.0)):
        if "drop_tokens" in variants and other in variants:
            ratio = statistics.median(a / b for a, b in zip(speed["drop_tokens"], speed[other], strict=True))
            summary[f"drop_tokens_over_{other}"] = ratio
            print(f"drop_tokens vs {other}: {ratio:.2f}x (target >= {target}x; median of per-round ratios)")
    if "drop_tokens" in variants and "mask_token" in variants:
        summary["flop_ratio_mask_token_over_drop_tokens"] = flops["mask_token"] / flops["drop_tokens"]
    if args.peak_tflops:
        mfu = {v: flops[v] * median[v] / (args.peak_tflops * 1e12) for v in variants}
        summary["mfu"] = mfu
        print("model FLOPs utilisation: " + ", ".join(f"{v} {m:.1%}" for v, m in mfu.items()))
    print(f"{'variant':<12} {'GFLOP/image':>12} {'images/s (median)':>18}  per round")
    for v in variants:
        per_round = " ".join(f"{r['images_per_s']:.1f}" for r in rows if r["variant"] == v)
        print(f"{v:<12} {flops[v] / 1e9:>12.1f} {median[v]:>18.2f}  {per_round}")
    _write(args, rows, summary, device)


def _write(
    args: argparse.Namespace, rows: list[dict[str, object]], summary: dict[str, object], device: torch.device
) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch_version = torch.__version__.split("+")[0]
    decoder = f"dec{args.decoder_dim}x{args.decoder_depth}"
    compiled = "-compiled" if args.compile else ""
    what = f"{args.encoder}-{decoder}-{args.image_size}px-{device.type}-{args.precision}{compiled}"
    name = f"mae_throughput-{what}-torch{torch_version}"
    settings = {k: v for k, v in vars(args).items() if k not in ("rounds", "steps", "warmup", "variants")}
    with (RESULTS / f"{name}.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*settings, "variant", "round", "images_per_s"])
        writer.writeheader()
        writer.writerows({**settings, **row} for row in rows)
    git = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    if device.type == "cuda":
        hardware = torch.cuda.get_device_name(device)
    else:
        hardware = _cpu_name()
    sidecar = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_sha": git.stdout.strip(),
        "versions": {**library_versions(), "monai": _version("monai")},
        "device": {"type": device.type, "name": hardware, "torch_threads": torch.get_num_threads()},
        "settings": vars(args),
        "summary": summary,
    }
    (RESULTS / f"{name}.json").write_text(json.dumps(sidecar, indent=2))
    print(f"wrote {RESULTS / name}.csv and .json")


def _cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    main()
