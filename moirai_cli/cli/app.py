"""The `moirai` command: registers the commands and runs them, usage errors on one line.

Each command lives in its own module and imports the heavy libraries (torch, pandas) only when it runs,
so `moirai --version` and `moirai --help` answer at once.
"""

from __future__ import annotations

import contextlib
import os
import sys

import typer
from typer.core import TyperCommand, TyperGroup

from moirai_cli import __version__
from moirai_cli.cli import evaluate, finetune, forecast, models
from moirai_cli.cli.errors import CLICK_EXCEPTION, echo_error, stdout_closed, usage_error
from moirai_cli.runtime import interruption, keep_freed_memory_for_reuse, stop_cleanly_on_signals


class _FlagsWithoutType:
    """Help without a value type (`<bool>`) next to flags, which take no value (recent Typer prints one)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class Group(_FlagsWithoutType, TyperGroup):
    """The `moirai` command group; usage errors are one line (exit code 2), however the app is called."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        arguments = sys.argv[1:] if args is None else list(args)
        try:
            code = super().main(arguments, prog_name, complete_var, standalone_mode=False, **extra)
        except CLICK_EXCEPTION as exc:
            code = usage_error(exc, arguments)
        except BrokenPipeError:  # `moirai forecast --help | head -1`: the reader went away
            code = stdout_closed()
        except SystemExit as exc:
            if not isinstance(exc.__context__, BrokenPipeError):  # rich's own answer to a closed pipe is exit 1
                raise
            code = stdout_closed()
        except typer.Abort as exc:
            code = 1
            message = "aborted"
            if isinstance(exc.__cause__, KeyboardInterrupt):  # a signal while the options were being parsed
                message, code = interruption(exc.__cause__)
            echo_error(message)
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


class Command(_FlagsWithoutType, TyperCommand):
    """One `moirai` subcommand."""


app = typer.Typer(
    cls=Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Zero-shot probabilistic forecasts from CSV and Parquet files with Salesforce's Moirai models (1.x, MoE, 2.0).",
)


def _version(value: bool) -> None:
    """Print the version and exit."""
    if value:
        typer.echo(f"moirai-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Zero-shot probabilistic forecasts from CSV and Parquet files with Salesforce's Moirai models (1.x, MoE, 2.0)."""


app.command("forecast", cls=Command)(forecast.forecast)
app.command("evaluate", cls=Command, epilog=evaluate.METRICS_HELP)(evaluate.evaluate)
app.command("finetune", cls=Command)(finetune.finetune)
app.command("download", cls=Command)(models.download)
app.command("models", cls=Command)(models.models)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app and return its exit code (usage errors on one line, code 2)."""
    keep_freed_memory_for_reuse()
    return app(args=argv, prog_name="moirai", standalone_mode=False)


def run() -> None:
    """The `moirai` executable: `main` with clean stops on SIGTERM/SIGHUP, then exit without tearing the interpreter down.

    By then every output file is written and closed; freeing the model and unloading
    torch would only add about half a second to each command.
    """
    stop_cleanly_on_signals()
    code = main()
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except BrokenPipeError:
        code = stdout_closed()
    except (OSError, ValueError):  # stdout closed under us: what it should have shown is lost
        code = code or 1
    with contextlib.suppress(OSError, ValueError, AttributeError):
        sys.stderr.flush()
    os._exit(code)
