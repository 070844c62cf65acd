"""`cfimg explain MODEL IMAGE...` (Grad-CAM overlays) and `cfimg review RESULTS` (HTML page)."""

from __future__ import annotations

from pathlib import Path

import typer

from cfimg.errors import EXIT_SOME_INPUTS_FAILED, UsageError


def register(app: typer.Typer) -> None:
    """Add `explain` and `review` to the cfimg app."""
    app.command("explain", help=EXPLAIN_HELP)(explain)
    app.command("review", help=REVIEW_HELP)(review)


# One line per paragraph: the help renderer keeps a docstring's line breaks.
EXPLAIN_HELP = (
    "Grad-CAM heatmaps: where the model sees counterfeit evidence.\n\n"
    "Writes OUT/<name>.gradcam.png per image (the photo beside its heatmap overlay, under a banner "
    "with verdict and score; red = raises p_counterfeit most, ring = peak, dimmed = outside the "
    "model's crop) and OUT/explain.csv (score, verdict, peak position in photo pixels). An .onnx "
    "MODEL has no gradients: it gets occlusion maps instead, OUT/<name>.occlusion.png.\n\n"
    "Unreadable images are reported one line each and skipped; the exit status is then 3."
)
REVIEW_HELP = (
    "A self-contained HTML page of the most suspicious photos, with heatmaps, sortable.\n\n"
    "Reads a `cfimg predict` result file, takes the --top rows with the highest p_counterfeit, and "
    "writes OUT/index.html plus OUT/images/ (photo copies and Grad-CAM overlays). Open it in any "
    "browser, no server needed. Without --model the photos are shown without heatmaps.\n\n"
    "With --items (an items file written beside the results by `cfimg predict --items`), the "
    "page shows the --top most suspicious items instead, each with its photos side by side."
)


def explain(
    model: Path = typer.Argument(..., help="Checkpoint (.pt) or run folder; not .onnx."),
    images: list[str] = typer.Argument(
        ...,
        help="Image files, folders (recursive), glob patterns, @list.txt files, or - (stdin).",
    ),
    out: Path = typer.Option(Path("explanations"), "--out", "-o", help="Folder for the overlays."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    threshold: float = typer.Option(
        None, help="Verdict threshold on p_counterfeit (default: the model card's)."
    ),
    max_side: int = typer.Option(1024, help="Longest side of each overlay panel, in pixels."),
    with_original: bool = typer.Option(
        True, "--with-original/--overlay-only", help="Put the original photo beside the overlay."
    ),
    save_heatmap: bool = typer.Option(
        False,
        help="Also save each heatmap (model view, float16) as <name>.gradcam.npy (.occlusion.npy).",
    ),
) -> None:
    """`cfimg explain` (help text: EXPLAIN_HELP)."""
    from cfimg.explain import explain_images
    from cfimg.inputs import iter_input_paths

    if max_side < 64:
        raise UsageError(f"--max-side must be at least 64 (got {max_side})")
    failed = 0

    def report(result) -> None:
        nonlocal failed
        if result.error:
            failed += 1
            typer.secho(f"error: {result.path}: {result.error}", err=True, fg=typer.colors.RED)
        else:
            typer.echo(
                f"{result.path}: {result.verdict} p_counterfeit={result.p_counterfeit:.3f}"
                f" -> {result.overlay_path}"
            )

    results = explain_images(
        model,
        iter_input_paths(images),
        out,
        device=device,
        threshold=threshold,
        max_side_px=max_side,
        with_original=with_original,
        save_heatmaps=save_heatmap,
        on_result=report,
    )
    if not results:
        raise UsageError(f"no image files found in {' '.join(images)}")
    typer.echo(f"{len(results) - failed} explained, {failed} failed; summary in {out}/explain.csv")
    if failed:
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)


def review(
    results: Path = typer.Argument(..., help="Result file of `cfimg predict` (.csv or .jsonl)."),
    model: Path = typer.Option(
        None, "--model", "-m", help="Checkpoint (.pt) or run folder for the heatmaps."
    ),
    out: Path = typer.Option(Path("review"), "--out", "-o", help="Folder for the page."),
    top: int = typer.Option(50, "--top", "-k", help="How many of the most suspicious to show."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    thumb_px: int = typer.Option(640, help="Longest side of the images written for the page."),
    items: Path | None = typer.Option(
        None, "--items", help="Items file of RESULTS (e.g. results.items.csv): review items."
    ),
) -> None:
    """`cfimg review` (help text: REVIEW_HELP)."""
    if write_review_page(
        results, out, model=model, top=top, device=device, thumb_px=thumb_px, items=items
    ):
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)


def warn(message: str) -> None:
    typer.secho(f"warning: {message}", err=True, fg=typer.colors.YELLOW)


def write_review_page(
    results: Path,
    out: Path,
    *,
    model: Path | None,
    top: int,
    device: str,
    thumb_px: int = 640,
    items: Path | None = None,
) -> int:
    """cfimg.review.write_review, printing each photo's warning and the page's path; returns how
    many photos warned (`cfimg review` and `cfimg predict --review` share it)."""
    from cfimg.review import write_review

    warnings = 0

    def count_and_warn(message: str) -> None:
        nonlocal warnings
        warnings += 1
        warn(message)

    page = write_review(
        results,
        out,
        model_path=model,
        top_k=top,
        device=device,
        thumb_px=thumb_px,
        on_warning=count_and_warn,
        items_path=items,
    )
    typer.echo(f"review page: {page}")
    return warnings
