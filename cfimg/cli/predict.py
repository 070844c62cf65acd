"""`cfimg predict` (classify photos into a CSV, JSONL or Parquet file) and `cfimg merge` (join
shards)."""

from __future__ import annotations

from pathlib import Path

import typer

PREDICT_EPILOG = (
    "INPUT forms: a file (a missing one becomes an error row); a folder (recursive, image "
    "extensions only, any case); a quoted glob pattern ('shots/**/*.jpg'); @list.txt (one path a "
    "line, taken as given); - (paths on stdin). Paths are enumerated lazily, sorted by name "
    "within each folder.\n\n"
    "Each row: path, verdict (genuine | counterfeit | uncertain | error), p_counterfeit, "
    "threshold, model_id, width, height (original image, EXIF rotation applied), error (why, for "
    "error rows). Rows are appended and flushed every batch, in input order; a killed run keeps "
    "every complete row, and --resume cuts off a partial last line and classifies only the "
    "paths not in OUT yet.\n\n"
    "Sharding: run 'cfimg predict MODEL INPUT --shard K/N --out part-K.csv' for K = 1..N (N "
    "machines or a job array; give every shard the same INPUT strings), then 'cfimg merge "
    "all.csv part-*.csv'. Or let Ray schedule one run over a cluster: --engine ray "
    "--ray-address ADDR (MODEL and the photos at the same paths on every node).\n\n"
    "Parquet (--out F.parquet, needs pyarrow): rows go to F.parquet.partial.jsonl as they come "
    "and into F.parquet when the run ends; --resume after a kill reads that journal.\n\n"
    "Exit status: 0 every input classified; 3 some inputs failed (their rows say why); 2 usage "
    "error (bad flag, unsupported --out suffix, OUT exists without --resume/--overwrite, no "
    "images found, requested --device unavailable); 5 model file missing or damaged; 1 "
    "unexpected error; 130 interrupted (complete rows are kept: rerun with --resume)."
)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the cfimg app."""
    app.command(name="predict", no_args_is_help=True, epilog=PREDICT_EPILOG)(predict_command)
    app.command(name="merge", no_args_is_help=True)(merge_command)


def predict_command(
    model: Path = typer.Argument(
        ..., help="An exported .onnx (onnxruntime) or a .pt checkpoint / run folder (PyTorch)."
    ),
    inputs: list[str] = typer.Argument(
        ..., metavar="INPUT...", help="Files, folders, glob patterns, @list.txt, or - for stdin."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Result file: .csv, .jsonl or .parquet (by its suffix)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", "-b", help="Images per inference batch."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-w",
        help="Decode processes (default: half the CPU cores on CPU, all of them on a GPU; 0: "
        "decode in the main process).",
    ),
    device: str = typer.Option(
        "auto",
        "--device",
        help="auto | cpu | cuda[:N] | tensorrt[:N] (ONNX only). A requested GPU provider that "
        "is missing is an error, never a silent fall-back to CPU.",
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        help="Inference threads (default: the cores the decode workers leave, at least 1; with "
        "--engine ray: per actor, default 1). Decoders plus threads above the core count slow "
        "both down.",
    ),
    threshold: float | None = typer.Option(
        None,
        "--threshold",
        help="p_counterfeit at or above this is 'counterfeit' (default: the model's own, with "
        "its uncertain band if it has one; an explicit threshold turns the band off).",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Append to an existing OUT, skipping the paths it already holds."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: classify only share K (1..N) of the inputs, by path hash."
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        help="Refuse images declaring more pixels than this (decompression bombs); default "
        "89478485; 0 turns the guard off.",
    ),
    sort: bool = typer.Option(
        False,
        "--sort",
        help="At the end, rewrite OUT with the most suspicious rows first (errors last).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress line."),
    engine: str = typer.Option(
        "local",
        "--engine",
        help="local: decode processes and the model on this machine. ray: decode tasks and "
        "classifier actors on a Ray cluster (ONNX models; pip install -e '.\\[ray]').",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="Join this Ray cluster (host:port, ray://host:port or auto); default: start a "
        "local Ray on this machine for the run.",
    ),
    actors: int | None = typer.Option(
        None,
        "--actors",
        help="Ray classifier actors, one onnxruntime session each (default: one per "
        "--gpus-per-actor share of the GPUs, else one per two CPUs).",
    ),
    gpus_per_actor: float = typer.Option(
        0.0,
        "--gpus-per-actor",
        help="GPUs for each Ray actor (0: CPU; 0.5: two actors share one); needs onnxruntime's "
        "CUDA provider on the nodes.",
    ),
    items: bool = typer.Option(
        False,
        "--items",
        help="Also write one verdict per item (listing) beside OUT: OUT.items.csv or .jsonl.",
    ),
    group_regex: str | None = typer.Option(
        None, "--group-regex", help="--items: item id from the file name, as cfimg train."
    ),
    items_from: Path | None = typer.Option(
        None, "--items-from", help="--items: a manifest CSV with path and item_id columns."
    ),
    item_rule: str | None = typer.Option(
        None, "--item-rule", help="--items: max|mean_logit|noisy_or [the model card's]."
    ),
    review: Path | None = typer.Option(
        None,
        "--review",
        help="Afterwards, write an HTML page of the --top most suspicious photos with Grad-CAM "
        "heatmaps into this folder (same as 'cfimg review OUT').",
    ),
    top: int = typer.Option(50, "--top", "-k", help="Photos on the --review page."),
    review_model: Path | None = typer.Option(
        None,
        "--review-model",
        help="Checkpoint (.pt or run folder) for the --review heatmaps; default MODEL when it "
        "is one. With an .onnx MODEL and no checkpoint the page has no heatmaps.",
    ),
) -> None:
    """Classify photos as genuine or counterfeit into a CSV, JSONL or Parquet file, streaming.

    Bad files (corrupt, truncated, empty, not an image, too large, unreadable, dangling links)
    become error rows and the run goes on."""
    import sys

    from cfimg.errors import ModelFileError, UsageError
    from cfimg.imageio import DEFAULT_MAX_PIXELS
    from cfimg.predict import predict_paths

    # --items' and --review's own mistakes surface now, not after the whole batch has run.
    if items:
        from cfimg.items import check_item_rule, item_grouper

        if item_rule is not None:
            check_item_rule(item_rule)
        item_grouper(group_regex, items_from)
    elif group_regex or items_from or item_rule:
        raise UsageError("--group-regex, --items-from and --item-rule go with --items")
    if review is not None and top < 1:
        raise UsageError(f"--top must be at least 1 (got {top})")
    if review is not None and review_model is not None and not review_model.exists():
        raise ModelFileError(review_model, "file not found (--review-model)")
    summary = predict_paths(
        model,
        inputs,
        out,
        batch_size=batch_size,
        workers=workers,
        device=device,
        threads=threads,
        threshold=threshold,
        resume=resume,
        overwrite=overwrite,
        shard=shard,
        max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        sort=sort,
        progress=progress,
        stdin=sys.stdin,
        engine=engine,
        ray_address=ray_address,
        actors=actors,
        gpus_per_actor=gpus_per_actor,
    )
    print_summary(summary)
    if items:
        from cfimg.items import items_path_for, write_items_file

        written = write_items_file(
            out,
            items_path_for(out),
            summary.card if threshold is None else threshold,
            item_rule,
            group_regex=group_regex,
            items_from=items_from,
        )
        counts = ", ".join(f"{n} {v}" for v, n in sorted(written.verdict_counts.items()))
        print(
            f"{written.n_items} items ({counts}) from {written.n_photos} photos, rule "
            f"{written.rule} at threshold {written.threshold:.3f}, written to {written.items_path}"
        )
    if review is not None:
        # After predict has closed its onnxruntime session, so torch (Grad-CAM) and onnxruntime
        # threads never compete for the same cores.
        from cfimg.cli.explain import warn, write_review_page

        heatmap_model = review_model
        if heatmap_model is None and model.suffix.lower() != ".onnx":
            heatmap_model = model
        if heatmap_model is None:
            warn("review page without heatmaps: Grad-CAM needs the checkpoint (--review-model)")
        torch_device = device.replace("tensorrt", "cuda")  # torch has no TensorRT device
        write_review_page(out, review, model=heatmap_model, top=top, device=torch_device)
    raise typer.Exit(summary.exit_code)


def print_summary(summary) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    verdicts = Table(title="cfimg predict", show_edge=False)
    verdicts.add_column("verdict")
    verdicts.add_column("images", justify="right")
    for verdict, count in sorted(summary.verdict_counts.items(), key=lambda kv: -kv[1]):
        verdicts.add_row(verdict, str(count))
    verdicts.add_row("[bold]total[/bold]", f"[bold]{summary.total_rows}[/bold]")
    console.print(verdicts)
    if summary.error_counts:
        errors = Table(title="errors by reason", show_edge=False)
        errors.add_column("reason")
        errors.add_column("images", justify="right")
        for reason, count in sorted(summary.error_counts.items(), key=lambda kv: -kv[1]):
            errors.add_row(escape(reason), str(count))
        console.print(errors)
    resumed = f" ({summary.skipped_done} already there)" if summary.skipped_done else ""
    console.print(
        f"{summary.rows_written} rows written to {summary.out_path}{resumed} at "
        f"{summary.images_per_s:.1f} images/s on {summary.device}, model {summary.model_id}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def merge_command(
    out: Path = typer.Argument(..., help="Merged result file: .csv, .jsonl or .parquet."),
    shards: list[Path] = typer.Argument(..., metavar="RESULT...", help="Result files to join."),
    sort: bool = typer.Option(
        False, "--sort", help="Most suspicious first (errors last) instead of file order."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
) -> None:
    """Join `cfimg predict` result files (e.g. one per --shard) into OUT, atomically.

    Each path appears once: a classified row wins over an error row for the same path, otherwise
    the first one seen. Partial last lines (killed runs) are ignored. Inputs may mix CSV, JSONL
    and Parquet; OUT's suffix picks its format."""
    from cfimg.results import merge_results

    written, dropped = merge_results(out, shards, sort=sort, overwrite=overwrite)
    duplicates = f" ({dropped} duplicate rows dropped)" if dropped else ""
    typer.echo(f"merged {written} rows from {len(shards)} files into {out}{duplicates}")
