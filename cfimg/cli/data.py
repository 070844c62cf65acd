"""`cfimg data check ROOT`: what training on ROOT would see, and whether it can go ahead."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cfimg.data import CountRow, DatasetReport, check_dataset, count_rows
from cfimg.errors import DatasetError
from cfimg.imageio import DEFAULT_MAX_PIXELS
from cfimg.labels import CLASS_NAMES

data_app = typer.Typer(
    help="Inspect datasets: counts, splits, unreadable files, duplicates and leaks.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add the `data` command group to the cfimg app."""
    app.add_typer(data_app, name="data")


@data_app.command("check")
def check(
    source: Path = typer.Argument(
        ...,
        help="Folder tree ROOT/<label>/..., split folders ROOT/{train,val,test}/<label>/..., "
        "a CSV manifest, or a folder with manifest.csv.",
    ),
    val_frac: float = typer.Option(0.15, help="Share of items for validation, when not given."),
    test_frac: float = typer.Option(0.15, help="Share of items for test, when not given."),
    seed: int = typer.Option(0, help="Seed of the grouped, stratified split."),
    group_regex: str = typer.Option(
        None,
        help="Regex on file names whose first group is the item id (default: the stem "
        "without a view suffix like _1, -2, ' (3)').",
    ),
    max_pixels: int = typer.Option(
        DEFAULT_MAX_PIXELS,
        help="Refuse images with more pixels (decompression bombs); 0: no limit.",
    ),
    verify: bool = typer.Option(True, help="Decode every image to find unreadable files."),
    max_rows: int = typer.Option(20, help="Longest list of files shown per table."),
) -> None:
    """Print counts per split, label, category and brand, unreadable files, duplicates and leaks.

    Exits with status 4 when training on SOURCE would fail.
    """
    report = check_dataset(
        source,
        val_frac=val_frac,
        test_frac=test_frac,
        seed=seed,
        group_regex=group_regex,
        max_pixels=max_pixels,
        verify=verify,
    )
    console = _console()
    print_report(console, report, val_frac=val_frac, test_frac=test_frac, seed=seed, rows=max_rows)
    if report.blockers:
        raise DatasetError(f"{source}: cannot train on this dataset: {'; '.join(report.blockers)}")
    console.print("[green]OK[/green]: ready to train")


def _console() -> Console:
    """Terminals get their own width; pipes and log files get 120 columns instead of rich's 80,
    so that file paths in tables are not folded mid-name."""
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=120)
    return console


def print_report(
    console: Console,
    report: DatasetReport,
    *,
    val_frac: float,
    test_frac: float,
    seed: int,
    rows: int,
) -> None:
    readable = report.readable_samples
    console.print(
        f"[bold]{report.source}[/bold]: {report.layout}, {len(report.samples)} images"
        f"{f' ({len(report.unreadable)} unreadable)' if report.unreadable else ''}, "
        f"{report.item_count} items, fingerprint {report.fingerprint}",
        soft_wrap=True,
    )
    if report.splits_given:
        console.print("splits: as given by the dataset", soft_wrap=True)
    else:
        console.print(
            f"splits: assigned by item, stratified by label, category and brand "
            f"(val {val_frac:g}, test {test_frac:g}, seed {seed})",
            soft_wrap=True,
        )
    console.print(counts_table("Split", count_rows(readable, "split")))
    for field, title in (("category", "Category"), ("brand", "Brand")):
        counted = count_rows(readable, field)
        if any(row.name for row in counted):
            console.print(counts_table(title, counted))
    root = _display_root(report)
    if report.unreadable:
        console.print(unreadable_table(report, root, rows))
    if report.duplicates:
        console.print(duplicates_table(report, root, rows))
    if report.item_leaks:
        console.print(leaks_table(report, rows))
    for line in report.warnings:
        console.print(f"[yellow]warning[/yellow]: {line}", soft_wrap=True)
    for line in report.blockers:
        console.print(f"[red]problem[/red]: {line}", soft_wrap=True)


def counts_table(title: str, counted: list[CountRow]) -> Table:
    table = Table(title=f"Images (items) per {title.lower()}", title_justify="left")
    table.add_column(title)
    for name in CLASS_NAMES:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    table.add_column("imbalance", justify="right")
    for row in counted:
        cells = [f"{images} ({items})" for images, items in zip(row.images, row.items, strict=True)]
        ratio = "-" if row.imbalance == float("inf") else f"{row.imbalance:.1f}:1"
        table.add_row(row.name or "(none)", *cells, str(row.total_images), ratio)
    return table


def unreadable_table(report: DatasetReport, root: str, rows: int) -> Table:
    table = Table(title=f"Unreadable files ({len(report.unreadable)})", title_justify="left")
    table.add_column("file", overflow="fold")
    table.add_column("reason")
    for path, reason in list(report.unreadable.items())[:rows]:
        table.add_row(_relative(path, root), reason)
    _note_hidden(table, len(report.unreadable), rows)
    return table


def duplicates_table(report: DatasetReport, root: str, rows: int) -> Table:
    table = Table(title=f"Identical files ({len(report.duplicates)} groups)", title_justify="left")
    table.add_column("files", overflow="fold")
    table.add_column("splits")
    table.add_column("note")
    for group in report.duplicates[:rows]:
        notes = []
        if group.crosses_splits:
            notes.append("[red]leak across splits[/red]")
        if group.conflicting_labels:
            notes.append("[red]different labels[/red]")
        splits = ", ".join(sorted({split or "-" for split in group.splits}))
        files = "\n".join(_relative(path, root) for path in group.paths)
        table.add_row(files, splits, ", ".join(notes))
    _note_hidden(table, len(report.duplicates), rows)
    return table


def leaks_table(report: DatasetReport, rows: int) -> Table:
    title = f"Items in more than one split ({len(report.item_leaks)})"
    table = Table(title=title, title_justify="left")
    table.add_column("item", overflow="fold")
    table.add_column("splits")
    for item, splits in list(report.item_leaks.items())[:rows]:
        table.add_row(item, ", ".join(splits))
    _note_hidden(table, len(report.item_leaks), rows)
    return table


def _note_hidden(table: Table, total: int, shown: int) -> None:
    if total > shown:
        table.caption = f"... and {total - shown} more (--max-rows)"


def _display_root(report: DatasetReport) -> str:
    source = os.path.abspath(report.source)
    return os.path.dirname(source) if os.path.isfile(source) else source


def _relative(path: str, root: str) -> str:
    try:
        relative = os.path.relpath(path, root)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative
