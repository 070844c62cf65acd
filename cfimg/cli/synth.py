"""`cfimg synth`: write the synthetic genuine/counterfeit product-photo benchmark."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the cfimg app."""
    app.command("synth")(synth)


def synth(
    out: Path = typer.Argument(..., help="Folder to write the dataset into."),
    n: int = typer.Option(2000, "--n", help="Number of images (photos); about half as many items."),
    seed: int = typer.Option(
        0, "--seed", help="Random seed: the same arguments give the same bytes."
    ),
    difficulty: str = typer.Option(
        "medium",
        "--difficulty",
        help="easy, medium or hard: how small the counterfeit defects are.",
    ),
    size: int = typer.Option(512, "--size", help="Image side in pixels (square photos)."),
    workers: int | None = typer.Option(
        None, "--workers", help="Worker processes (default: one per CPU; 0: in-process)."
    ),
    preview: bool = typer.Option(
        False,
        "--preview",
        help="Also write OUT/preview.png: genuine/counterfeit pairs, defects boxed.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in OUT."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Synthesise genuine and counterfeit bags and watches of invented brands, photographed under
    varied, label-blind conditions: OUT/{genuine,counterfeit}/<category>/<brand>/*.jpg and
    OUT/manifest.csv (with each defect's kind and box)."""
    from cfimg.synth import generate_dataset, read_manifest, write_contact_sheet

    start = time.perf_counter()
    manifest = generate_dataset(
        out,
        n_images=n,
        seed=seed,
        difficulty=difficulty,
        size_px=size,
        workers=workers,
        progress=not quiet,
        overwrite=overwrite,
    )
    seconds = time.perf_counter() - start
    rows = read_manifest(manifest)
    fakes = sum(row["label"] == "counterfeit" for row in rows)
    items = len({row["item_id"] for row in rows})
    typer.echo(
        f"wrote {len(rows)} images ({len(rows) - fakes} genuine, {fakes} counterfeit) of {items} "
        f"items to {out} in {seconds:.2f} s; manifest: {manifest}"
    )
    if preview:
        sheet = write_contact_sheet(manifest, Path(out) / "preview.png", pairs_per_brand=2)
        typer.echo(f"contact sheet: {sheet}")
