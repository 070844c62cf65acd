"""`cfimg data`: not written yet (its issue is open)."""

import typer


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the cfimg app."""
