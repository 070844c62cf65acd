"""`cfimg demo`: synthesise, train, evaluate, export, predict and review on built-in data."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command(name="demo")(demo_command)


def demo_command(
    out: Path = typer.Option(Path("demo-out"), "--out", help="Where every artefact goes."),
    quick: bool = typer.Option(False, "--quick", help="A smaller, easier run (under 3 minutes)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Reuse a non-empty --out folder."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Run the whole job on built-in synthetic photos: synthesise a labelled set, train the
    default recipe, evaluate with an operating point, export fp32 and int8 ONNX, classify fresh
    photos with the exported model and write the review page (about 8 minutes on 2 CPU cores;
    --quick about 2)."""
    from rich.console import Console
    from rich.table import Table

    from cfimg.demo import run_demo

    summary = run_demo(out, quick=quick, overwrite=overwrite, progress=not quiet, log=typer.echo)
    console = Console()
    numbers = Table(title="demo results", show_header=False)
    for name, value in summary.numbers.items():
        numbers.add_row(name, f"{value:.3f}" if isinstance(value, float) else str(value))
    console.print(numbers)
    files = Table(title="artefacts", show_header=False)
    for name, path in summary.artefacts.items():
        files.add_row(name, str(path))
    console.print(files)
    for name, seconds in summary.steps_s.items():
        typer.echo(f"  {name}: {seconds:.0f} s")
    typer.echo(f"  total: {sum(summary.steps_s.values()):.0f} s")
    for note in summary.notes:
        typer.echo(f"note: {note}")
    typer.echo(
        f"open {summary.artefacts['review page']} in a browser to review the most suspicious photos"
    )
