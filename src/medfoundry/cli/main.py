"""The ``medfoundry`` command: thin typer commands that parse, then call a recipe.

Heavy imports (torch, timm) happen inside the commands, so ``medfoundry --help`` is instant.
Bad input prints one line per problem (no traceback) and exits with code 2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="medfoundry",
    help="Pretrain biomedical image encoders on many small datasets, and measure what they save.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

T = TypeVar("T")


def main() -> None:
    """Console entry point."""
    app()


def _run(action: Callable[[], T]) -> T:
    """Run a command body; user errors become one-line messages and exit code 2."""
    from medfoundry.errors import MedfoundryError

    _configure_logging()
    try:
        return action()
    except MedfoundryError as e:
        for problem in e.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; resume with --resume RUN_DIR", err=True)
        raise typer.Exit(130) from None


def _configure_logging() -> None:
    from rich.logging import RichHandler

    from medfoundry.training.distributed import RankZeroFilter

    handler = RichHandler(show_path=False, show_time=False, markup=False)
    handler.addFilter(RankZeroFilter())
    logger = logging.getLogger("medfoundry")
    if not logger.handlers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


@app.command()
def pretrain(
    config: Annotated[Path | None, typer.Argument(help="Pretraining config (YAML).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: a.b=value (repeatable).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run in this folder from its last checkpoint (from step 0 if it has none yet)."
        ),
    ] = None,
) -> None:
    """Multi-task pretraining (memory flat in the number of tasks)."""

    def body() -> None:
        from medfoundry.errors import ConfigError
        from medfoundry.recipes import pretrain
        from medfoundry.recipes.pretrain.config import load_pretrain_config
        from medfoundry.training.distributed import DistributedRunError

        overrides = list(set_ or [])
        if config is None and resume is None:
            raise ConfigError("give a CONFIG, or --resume RUN_DIR to continue a run")
        if resume is not None:
            if config is None and not (resume / "config.yaml").is_file():
                raise ConfigError(
                    f"{resume}: not a run folder (no config.yaml); a run stopped before it wrote one "
                    f"starts again with its own config: medfoundry pretrain CONFIG --resume {resume}"
                )
            overrides.append(f"run_dir={resume}")
        cfg = load_pretrain_config(config if config is not None else resume / "config.yaml", overrides)  # type: ignore[operator]
        try:
            run_dir = pretrain.run(cfg, resume=resume is not None)
        except (pretrain.NonFiniteLossError, DistributedRunError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"done: {run_dir} (checkpoints in {run_dir / 'checkpoints'})")

    _run(body)


@app.command("validate-data")
def validate_data(
    config: Annotated[Path, typer.Argument(help="A task database or a pretraining config (YAML).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: a.b=value (repeatable).")
    ] = None,
) -> None:
    """Check every file of a task database without training; print a summary per task."""

    def body() -> None:
        from medfoundry.recipes import validate_data as recipe

        recipe.run(recipe.load_validate_config(config, list(set_ or [])))

    _run(body)


@app.command()
def export(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint folder (e.g. RUN/checkpoints/best) or medfoundry:<name>.")
    ],
    timm_dir: Annotated[
        Path | None, typer.Option("--timm", help="Write the encoder here as a plain timm model.")
    ] = None,
    onnx_dir: Annotated[
        Path | None, typer.Option("--onnx", help="Write the encoder and every task head here as ONNX.")
    ] = None,
    hf_dir: Annotated[
        Path | None,
        typer.Option("--hf", help="Write a Hugging Face Hub folder here (timm weights, config, model card)."),
    ] = None,
) -> None:
    """Export a checkpoint: a plain timm encoder, ONNX graphs, or a Hugging Face Hub folder."""

    def body() -> None:
        from medfoundry.errors import ConfigError
        from medfoundry.output_folders import check_output_folder

        given = {"--timm": timm_dir, "--onnx": onnx_dir, "--hf": hf_dir}
        chosen = {option: folder for option, folder in given.items() if folder is not None}
        if not chosen:
            raise ConfigError("export: give at least one of --timm DIR, --onnx DIR, --hf DIR")
        if len({folder.resolve() for folder in chosen.values()}) < len(chosen):
            raise ConfigError(f"export: {', '.join(chosen)} need a folder each, not the same one")
        for option, folder in chosen.items():  # all refused before any is written
            check_output_folder(folder, f"export {option}")
        if timm_dir is not None:
            from medfoundry.recipes.export import to_timm

            out = to_timm.run(checkpoint, timm_dir)
            typer.echo(f"exported: {out}  (load with timm.create_model('local-dir:{out}', pretrained=True))")
        if onnx_dir is not None:
            from medfoundry.recipes.export import to_onnx

            out = to_onnx.run(checkpoint, onnx_dir)
            typer.echo(f"exported: {out}  (encoder.onnx, heads/*.onnx; see onnx_config.json)")
        if hf_dir is not None:
            from medfoundry.recipes.export import to_hf

            out = to_hf.run(checkpoint, hf_dir)
            typer.echo(f"exported: {out}  (upload with: medfoundry push {out} ORG/NAME)")

    _run(body)


@app.command()
def push(
    folder: Annotated[Path, typer.Argument(help="A folder written by 'medfoundry export --hf'.")],
    repo_id: Annotated[str, typer.Argument(help="The Hugging Face Hub repository, ORG/NAME.")],
    private: Annotated[bool, typer.Option(help="Create the repository as private.")] = False,
    revision: Annotated[str | None, typer.Option(help="Branch to upload to (default: main).")] = None,
) -> None:
    """Upload an exported Hugging Face folder to the Hub (token: `hf auth login` or HF_TOKEN)."""

    def body() -> None:
        from medfoundry.recipes.export import to_hf

        typer.echo(f"uploaded: {to_hf.push(folder, repo_id, private=private, revision=revision)}")

    _run(body)


@app.command()
def predict(
    checkpoint: Annotated[
        Path, typer.Argument(help="A checkpoint folder with task heads, or medfoundry:<name>.")
    ],
    input_: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="An image, DICOM file or series folder, NIfTI/NRRD volume, CSV/TSV manifest or folder.",
        ),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder (new or empty).")],
    task: Annotated[str | None, typer.Option(help="The checkpoint's task to predict.")] = None,
    volume_index: Annotated[int | None, typer.Option(help="3D volume of 4D files (default: task's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 16,
    num_workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run a task head on new images or volumes: class probabilities, masks (NIfTI) or COCO boxes."""

    def body() -> None:
        from medfoundry.config_io import validate_config
        from medfoundry.recipes import predict as predict_recipe

        options = dict(
            checkpoint=checkpoint, input=input_, output=output, task=task, volume_index=volume_index,
            batch_size=batch_size, num_workers=num_workers, device=device, progress=progress,
        )  # fmt: skip
        cfg = validate_config(predict_recipe.PredictConfig, options, "predict")
        typer.echo(f"wrote {predict_recipe.run(cfg)}")

    _run(body)


@app.command()
def evaluate(
    config: Annotated[Path, typer.Argument(help="Study config (YAML).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a key: a.b=value (repeatable).")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes running cells at once (one per GPU where there are GPUs); other jobs "
            "may work on the same study folder too.",
            min=1,
        ),
    ] = None,
) -> None:
    """Run an evaluation study (encoders x tasks x modes x fractions x seeds); rerun to resume."""

    def body() -> None:
        from medfoundry.recipes import evaluate as evaluate_recipe
        from medfoundry.recipes.evaluate.config import load_study_config

        overrides = [*(set_ or []), *([f"workers={workers}"] if workers is not None else [])]
        cfg = load_study_config(config, overrides)
        try:
            study_dir = evaluate_recipe.run(cfg)
        except KeyboardInterrupt:
            typer.echo(
                f"interrupted; finished cells are kept: run 'medfoundry evaluate {config}' to resume",
                err=True,
            )
            raise typer.Exit(130) from None
        typer.echo(f"done: {study_dir / 'report.html'} (tidy results: {study_dir / 'results.csv'})")

    _run(body)


@app.command()
def embed(
    encoder: Annotated[
        str,
        typer.Argument(
            help="A checkpoint folder, a released encoder (medfoundry:<name>) or a timm model name."
        ),
    ],
    data: Annotated[
        Path, typer.Argument(help="A CSV/TSV manifest, a folder of images, or a task database YAML.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Features file: .npz or .parquet.")],
    task: Annotated[str | None, typer.Option(help="The task of a task database to embed.")] = None,
    random: Annotated[bool, typer.Option("--random", help="Same architecture, random weights.")] = False,
    image_size: Annotated[int | None, typer.Option(help="Input side (default: the encoder's).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    num_workers: Annotated[int, typer.Option(help="Image-decoding worker processes.")] = 0,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache folder.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Write image embeddings (with sample ids) of a dataset; cached by weights, data and preprocessing."""

    def body() -> None:
        from medfoundry.config_io import validate_config
        from medfoundry.recipes.predict import embed as embed_recipe

        options = {
            "encoder": encoder,
            "data": data,
            "task": task,
            "output": output,
            "pretrained": not random,
            "image_size": image_size,
            "batch_size": batch_size,
            "num_workers": num_workers,
            "cache_dir": cache_dir,
            "device": device,
        }
        cfg = validate_config(embed_recipe.EmbedConfig, options, "embed")
        typer.echo(f"wrote {embed_recipe.run(cfg)}")

    _run(body)


@app.command("demo-data")
def demo_data(out_dir: Annotated[Path, typer.Argument(help="Folder for the small corpus.")]) -> None:
    """Build the corpus's small selection: nuclei, imaging technique, brain MR and DICOM tasks with
    train/val/test splits, and a held-out nuclei task (PNG + CSV + task lists + corpus.json)."""

    def body() -> None:
        from medfoundry.corpus.selections import build_selection

        _report_corpus(build_selection(out_dir, "small", progress=typer.echo))

    _run(body)


@app.command()
def corpus(
    out_dir: Annotated[Path, typer.Argument(help="Folder for the corpus (rebuilt only when out of date).")],
    source: Annotated[list[str] | None, typer.Option("--source", help="Only this source (repeat).")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="Not this source (repeat).")] = None,
    tile_size: Annotated[int, typer.Option(help="Side of tiles cut from large 2D images.")] = 256,
    patch_size: Annotated[int, typer.Option(help="Side (mm) of the brain MR region patches.")] = 64,
    seed: Annotated[int, typer.Option(help="Seeds split assignment.")] = 0,
    min_sources: Annotated[int, typer.Option(help="Fewest pretraining sources to build from.")] = 8,
) -> None:
    """Build the offline pretraining corpus of real packaged images (PNG + CSV + tasks.yaml + corpus.json)."""

    def body() -> None:
        from medfoundry.corpus import CorpusSettings, build_corpus

        settings = CorpusSettings(tile_size=tile_size, patch_size=patch_size, seed=seed)
        _report_corpus(
            build_corpus(
                out_dir,
                sources=source or None,
                exclude=exclude or (),
                settings=settings,
                min_sources=min_sources,
                progress=typer.echo,
            )
        )

    _run(body)


def _report_corpus(result: Any) -> None:
    m = result.manifest
    typer.echo(
        f"corpus: {m['total_images']} images ({m['pretraining_images']} for pretraining) from "
        f"{len(m['sources'])} sources, {len(m['tasks'])} tasks; built in {m['build_seconds']} s"
    )
    typer.echo(f"pretraining tasks: {result.tasks}\nheld-out tasks: {result.heldout_tasks}")


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Folder for the corpus and runs (relative to the current folder).")
    ] = Path("runs/demo"),
    quick: Annotated[
        bool,
        typer.Option(help="A corpus selection, 16 steps, one held-out task (about 3 minutes on 2 cores)."),
    ] = False,
) -> None:
    """Build the offline corpus from packaged images, pretrain an encoder on its labelled tasks,
    and measure its transfer to held-out tasks against random weights and raw pixels."""

    def body() -> Any:
        from medfoundry.recipes import demo as demo_recipe

        return demo_recipe.run(out_dir, quick=quick)

    _run(body)


@app.command("ls")
def list_registries() -> None:
    """List task types, released encoders and encoders."""
    import timm

    from medfoundry.released import PREFIX, release_info, released_names
    from medfoundry.tasks import TASK_TYPES

    typer.echo("task types: " + ", ".join(TASK_TYPES.names()))
    names = released_names()
    typer.echo("released encoders:" + ("" if names else " none in this installation"))
    for name in names:
        typer.echo(f"  {PREFIX}{name}: {release_info(name).get('summary', '')}")
    typer.echo(
        f"encoders: any timm model ({len(timm.list_models())} names; e.g. swin_tiny_patch4_window7_224, "
        "convnext_atto, resnet18, vit_small_patch16_224)"
    )


if __name__ == "__main__":  # pragma: no cover
    main()
