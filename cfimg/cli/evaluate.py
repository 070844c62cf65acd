"""`cfimg eval`: metrics with confidence intervals, operating points, calibration, a report."""

from __future__ import annotations

import math
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the cfimg app."""
    app.command(name="eval", no_args_is_help=True)(eval_command)


def eval_command(
    model: Path = typer.Argument(
        ..., help="A .pt checkpoint or run folder (PyTorch) or an exported .onnx (onnxruntime)."
    ),
    data: Path | None = typer.Argument(
        None,
        help="Labelled data: folder tree, split folders, CSV manifest. Default: the run's own "
        "split.csv (needed for .onnx).",
    ),
    split: str | None = typer.Option(
        None, "--split", help="val|test|train|all. Default: test if present, else val, else all."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Report folder. Default: RUN/eval-SPLIT (beside the .onnx for ONNX)."
    ),
    target_fpr: float | None = typer.Option(
        None, "--target-fpr", help="Threshold flagging at most this fraction of genuine items."
    ),
    target_precision: float | None = typer.Option(
        None, "--target-precision", help="Lowest threshold reaching this counterfeit precision."
    ),
    target_recall: float | None = typer.Option(
        None, "--target-recall", help="Highest threshold catching this fraction of counterfeits."
    ),
    save_threshold: bool = typer.Option(
        False,
        "--save-threshold",
        help="Store the operating point (and band) in the checkpoint's model card; export and "
        "predict then use it by default.",
    ),
    uncertain_band: str | None = typer.Option(
        None, "--uncertain-band", help="LOW,HIGH: p_counterfeit in [LOW, HIGH) is 'uncertain'."
    ),
    uncertain_frac: float | None = typer.Option(
        None,
        "--uncertain-frac",
        help="Fit a band holding this fraction of validation images around the threshold.",
    ),
    calibrate: bool = typer.Option(
        False,
        "--calibrate/--no-calibrate",
        help="Apply the temperature fitted on the validation split and store it in the "
        "checkpoint (the stored threshold is re-expressed so decisions stay the same).",
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="Bootstrap resamples for 95% intervals (0: none)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per inference batch."),
    workers: int = typer.Option(2, "--workers", help="Image decoding threads."),
    device: str = typer.Option("auto", "--device", help="auto|cpu|cuda[:N]|tensorrt (ONNX)."),
    group_regex: str | None = typer.Option(
        None, "--group-regex", help="Item id from file names (as in cfimg train)."
    ),
    item_rule: str | None = typer.Option(
        None,
        "--item-rule",
        help="max|mean_logit|noisy_or: how an item's photos combine, whose fitted item threshold "
        "--save-threshold stores (default: the model card's). The report measures all three.",
    ),
    seed: int = typer.Option(0, "--seed", help="Bootstrap random seed."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG plots."),
) -> None:
    """Evaluate MODEL on labelled DATA: metrics with 95% intervals, per category and brand,
    operating points, calibration, and a report folder (report.json, report.md, plots)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from cfimg.errors import EXIT_SOME_INPUTS_FAILED
    from cfimg.evaluate import evaluate, parse_band

    band = parse_band(uncertain_band) if uncertain_band is not None else None
    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,  # no bar debris in logs and pipes
    ) as bar:
        task = bar.add_task("scoring", total=None)
        result = evaluate(
            model,
            data,
            split=split,
            out_dir=out,
            target_fpr=target_fpr,
            target_precision=target_precision,
            target_recall=target_recall,
            save_threshold=save_threshold,
            uncertain_band=band,
            uncertain_frac=uncertain_frac,
            calibrate=calibrate,
            n_bootstrap=bootstrap,
            batch_size=batch_size,
            workers=workers,
            device=device,
            group_regex=group_regex,
            item_rule=item_rule,
            seed=seed,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            write_plots=not no_plots,
        )
    print_summary(result.report)
    if result.n_failed:
        raise typer.Exit(EXIT_SOME_INPUTS_FAILED)


def print_summary(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from cfimg.metrics import CI_METRICS
    from cfimg.report import format_metric

    console = Console()
    data, m, threshold = report["data"], report["metrics"], report["threshold"]
    fitted = f", fitted on {threshold['split']}" if threshold["split"] else ""
    table = Table(
        title=f"{data['split']}: {data['n_scored']} images ({data['n_genuine']} genuine, "
        f"{data['n_counterfeit']} counterfeit) at threshold {threshold['value']:.4g} "
        f"({threshold['source']}{fitted})",
        title_justify="left",
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column(f"95% CI ({m['ci_unit']} bootstrap)", justify="right")
    for key in CI_METRICS:
        low, high = m["ci"][key]
        interval = (
            f"{format_metric(low)} - {format_metric(high)}"
            if low is not None and math.isfinite(low)
            else ""
        )
        table.add_row(key, format_metric(m[key]), interval)
    console.print(table)
    console.print(f"confusion: tn={m['tn']} fp={m['fp']} fn={m['fn']} tp={m['tp']}")
    point = report["operating_point"]
    if point is not None:
        ev = point["eval"]
        state = "reached" if point["reachable"] else "[red]NOT reachable[/red]"
        met = {True: "met", False: "[red]not met[/red]", None: "undefined"}[ev["target_met"]]
        console.print(
            f"operating point: {point['target']} target {point['target_value']:g} -> threshold "
            f"{point['threshold']:.6g} ({state} on {point['fitted_on']}: "
            f"{point['target']}={point['achieved']:.4g}); on {ev['split']}: "
            f"precision={format_metric(ev['precision'])}, recall={format_metric(ev['recall'])}, "
            f"fpr={format_metric(ev['fpr'])} (target {met})"
        )
    saved_items = report["saved"]["item_threshold"]
    band = report["uncertain_band"]
    if band is not None:
        ev = band["eval"]
        console.print(
            f"uncertain band [{band['low']:.4g}, {band['high']:.4g}): {ev['n_uncertain']} of "
            f"{ev['n']} uncertain on {ev['split']}, accuracy on the rest "
            f"{format_metric(ev['accuracy_decided'])}"
        )
    items = report["items"]
    for name, rule in items["rules"].items():
        console.print(
            f"items by {name}: ROC-AUC {format_metric(rule['roc_auc'])}, balanced accuracy "
            f"{format_metric(rule['balanced_accuracy'])} at threshold {rule['threshold']:.4g} "
            f"({rule['threshold_source']}), {rule['n']} items"
            + (" [green](stored)[/green]" if name == items["rule"] and saved_items else "")
        )
    c = report["calibration"]
    console.print(
        f"calibration: T fitted on {c['fitted_on']} = {c['temperature_fitted']:.4g} "
        f"(card {c['temperature_card']:.4g}); ECE {format_metric(c['ece_before'])} -> "
        f"{format_metric(c['ece_after'])}" + (" [green]stored[/green]" if c["stored"] else "")
    )
    saved = report["saved"]
    if saved["checkpoint"]:
        keys = ("threshold", "uncertain_band", "temperature", "item_threshold")
        what = [k for k in keys if saved[k]]
        console.print(f"saved {', '.join(what)} into {saved['checkpoint']}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")
    if report["failed"]:
        console.print(f"[yellow]{len(report['failed'])} image(s) could not be read[/yellow]")
    console.print(f"report: {report['files']['report_md']}")
    console.print(f"json:   {report['files']['report_json']}")
