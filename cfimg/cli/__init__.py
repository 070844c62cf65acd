"""The `cfimg` command line: each subcommand lives in its own module and only parses, calls
library functions and prints. Errors become one line on stderr and a distinct exit status."""

from __future__ import annotations

import os
import sys

# Spin-waiting OpenMP threads collapse throughput on shared virtual cores; libgomp reads this
# when torch is first imported, so set it before any command imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

try:  # recent typer vendors click; older releases depend on the click package
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError

from cfimg import __version__  # noqa: E402
from cfimg.cli import data, demo, evaluate, explain, export, predict, synth, train  # noqa: E402
from cfimg.errors import EXIT_ERROR, CfimgError  # noqa: E402

app = typer.Typer(
    name="cfimg",
    help="Tell genuine from counterfeit luxury goods in product photos: "
    "synthesise data, train, evaluate, export to ONNX, classify folders, explain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"cfimg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """cfimg: counterfeit detection for product photos."""


for _module in (data, synth, train, evaluate, export, predict, explain, demo):
    _module.register(app)


def error_line(message: str) -> None:
    """Print one error line on stderr, in red when it is a terminal."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `cfimg` script and `python -m cfimg`.

    Every error, a bad flag included, is one line on stderr and a distinct exit status: 2 for
    usage errors, cfimg's own codes for its typed errors, 130 when interrupted.
    """
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="cfimg", standalone_mode=False)
    except NoArgsIsHelpError:
        app(args=argv, prog_name="cfimg")  # typer prints the command's help and exits
    except UsageError as exc:
        # Typer would draw a multi-line box; one line naming the command is easier to grep.
        where = exc.ctx.command_path if exc.ctx is not None else "cfimg"
        error_line(f"{where}: {exc.format_message()} (see '{where} --help')")
        sys.exit(exc.exit_code)
    except CfimgError as exc:
        error_line(str(exc))
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        error_line("interrupted")
        sys.exit(130)
    except Exception as exc:  # the last line of defence: a one-line report, never a traceback
        if os.environ.get("CFIMG_DEBUG"):
            raise
        error_line(f"unexpected {type(exc).__name__}: {exc} (set CFIMG_DEBUG=1 for a traceback)")
        sys.exit(EXIT_ERROR)
    if code == 130:
        error_line("interrupted")
    sys.exit(code if isinstance(code, int) else 0)
