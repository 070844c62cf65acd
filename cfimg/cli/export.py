"""`cfimg export` (checkpoint -> checked, self-describing ONNX) and `cfimg info` (what a model
file holds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from cfimg.export.graph import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET
from cfimg.export.images import DEFAULT_CALIB_IMAGES, DEFAULT_CHECK_IMAGES
from cfimg.export.verify import MAX_ACCURACY_DROP_POINTS


def register(app: typer.Typer) -> None:
    """Add `export` and `info` to the cfimg app."""
    app.command("export")(export)
    app.command("info")(info)


def export(
    source: Path = typer.Argument(..., help="Run folder (its best.pt) or checkpoint file (.pt)."),
    out: Path = typer.Option(
        None, "--out", "-o", help="ONNX file to write (default: RUN/model.onnx, or CKPT.onnx)."
    ),
    opset: int = typer.Option(
        None, help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default: {DEFAULT_OPSET})."
    ),
    fp16: bool = typer.Option(False, "--fp16", help="Also write OUT.fp16.onnx (for GPUs)."),
    int8: bool = typer.Option(
        False, "--int8", help="Also write OUT.int8.onnx: static int8 quantization (CPU)."
    ),
    calib: Path = typer.Option(
        None,
        help="Images to calibrate int8 with: a dataset or any folder of photos "
        "(default: the run's training split).",
    ),
    check_data: Path = typer.Option(
        None,
        help="Labelled images for the parity and accuracy checks "
        "(default: the run's validation split).",
    ),
    check_images: int = typer.Option(DEFAULT_CHECK_IMAGES, help="Most images used for the checks."),
    calib_images: int = typer.Option(
        DEFAULT_CALIB_IMAGES, help="Most images used for int8 calibration."
    ),
    any_size: bool = typer.Option(
        False, "--any-size", help="Input: one HxWx3 uint8 photo of any size; resize in the graph."
    ),
    float_input: bool = typer.Option(
        False, "--float-input", help="Input: NCHW float32, already normalised with mean/std."
    ),
    force: bool = typer.Option(
        False,
        "--force",
        help="Write fp16/int8 models even when they lose > "
        f"{MAX_ACCURACY_DROP_POINTS:g} point of accuracy.",
    ),
    check: bool = typer.Option(
        True, "--check/--no-check", help="Run the fp32 model against PyTorch before writing."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Export a trained model to one ONNX file that carries its preprocessing, class names,
    threshold and temperature, after checking it against PyTorch.

    A failed fp32 check writes nothing; a refused --int8/--fp16 copy is left out while the fp32
    file is still written (exit status 1 either way).
    """
    from rich.markup import escape

    from cfimg.export import export_onnx

    console = _console(stderr=json_out)
    report = export_onnx(
        source,
        out,
        opset=opset,
        fp16=fp16,
        int8=int8,
        calib_source=calib,
        any_size=any_size,
        float_input=float_input,
        force=force,
        check=check,
        check_data=check_data,
        max_check_images=check_images,
        max_calib_images=calib_images,
        progress=lambda message: console.print(f"[dim]{escape(message)}[/dim]"),
    )
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_export_report(console, report)


def _console(*, stderr: bool = False):
    from rich.console import Console

    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, stderr=stderr, width=120)
    return console


def _print_export_report(console, report) -> None:
    from rich.markup import escape
    from rich.table import Table

    console.print(
        f"[bold]{escape(str(report.source))}[/bold]; checks on {escape(report.check_source)}",
        soft_wrap=True,
    )
    if report.calib_source:
        console.print(f"int8 calibrated on {escape(report.calib_source)}", soft_wrap=True)
    table = Table(show_header=True, header_style="bold")
    for column in ("file", "check", "result", "detail"):
        table.add_column(column)
    for model in report.models:
        name = f"{model.path.name} ({model.precision}, {_megabytes(model.size_bytes)})"
        for index, check in enumerate(model.checks):
            result = "[green]ok[/green]" if check.ok else "[red]FAILED[/red]"
            table.add_row(name if index == 0 else "", check.name, result, escape(check.detail))
        if model.speedup_batch1 is not None:
            batch32 = (
                f", batch 32 {model.speedup_batch32:.2f}x"
                if model.speedup_batch32 is not None
                else ""
            )
            table.add_row("", "speed vs fp32", "", f"batch 1 {model.speedup_batch1:.2f}x{batch32}")
        table.add_section()
    console.print(table)
    for note in report.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    for model in report.models:
        console.print(f"[green]wrote[/green] {escape(str(model.path))}", soft_wrap=True)


def _megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB"


def info(
    model: Path = typer.Argument(..., help="A .onnx model, a .pt checkpoint or a run folder."),
    json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Show what a model file holds: architecture, classes, preprocessing, threshold,
    temperature, metrics; inputs, outputs and opset of ONNX files; epoch of checkpoints."""
    from cfimg.modelinfo import model_info

    details = model_info(model)
    if json_out:
        typer.echo(json.dumps(details, indent=2, sort_keys=True))
        return
    _print_info(_console(), details)


def _head(values: dict | None) -> str:
    from cfimg.heads import HeadSpec

    head = HeadSpec.from_dict(values)
    coverage = (
        f"{head.tiles} x {head.tiles} tiles of {head.tile_px} px, logits averaged"
        if head.tiles > 1
        else "the whole frame at once"
    )
    return f"{head.pooling} pooling; {coverage}"


def _print_info(console, details: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    card = details["card"]
    rows = [
        ("file", f"{details['path']} ({details['kind']}, {_megabytes(details['size_bytes'])})"),
        ("architecture", card["arch"]),
        ("head", _head(card.get("head"))),
        ("model id", card.get("model_id") or "-"),
        ("classes", ", ".join(card["class_names"])),
        ("threshold", f"{card['threshold']:g} (p_counterfeit at or above: counterfeit)"),
        ("uncertain band", _band(card.get("uncertain_band"))),
        ("temperature", f"{card['temperature']:g}"),
        ("preprocessing", details["preprocessing"]),
        ("mean / std", f"{card['preprocessing']['mean']} / {card['preprocessing']['std']}"),
        ("data fingerprint", card.get("data_fingerprint") or "-"),
        ("cfimg version", card.get("cfimg_version") or "-"),
    ]
    if details["kind"] == "onnx":
        export = details["export"]
        rows += [
            ("opset", str(details["opset"])),
            ("producer", details["producer"] or "-"),
            ("precision", export.get("precision", "-")),
            ("input format", export.get("input_format", "-")),
            ("exported", export.get("export_date_utc", "-")),
        ]
    else:
        rows += [
            ("epoch", "-" if details.get("epoch") is None else str(details["epoch"])),
            ("parameters", f"{details['parameters']:,}"),
            ("training state", ", ".join(details["training_state"]) or "-"),
        ]
        if "exports" in details:
            rows.append(("exported models", ", ".join(details["exports"]) or "-"))
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)
    if details["kind"] == "onnx":
        tensors = Table(title="inputs and outputs", title_justify="left")
        for column in ("", "name", "type", "shape"):
            tensors.add_column(column)
        for role in ("inputs", "outputs"):
            for tensor in details[role]:
                shape = "[" + ", ".join(str(dim) for dim in tensor["shape"]) + "]"
                tensors.add_row(role[:-1], escape(tensor["name"]), tensor["type"], escape(shape))
        console.print(tensors)
    metrics = card.get("metrics") or {}
    if metrics:
        table = Table(title="metrics", title_justify="left", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        for key, value in sorted(metrics.items()):
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            table.add_row(escape(str(key)), escape(shown))
        console.print(table)


def _band(band) -> str:
    return "-" if not band else f"[{band[0]:g}, {band[1]:g}) answers 'uncertain'"
