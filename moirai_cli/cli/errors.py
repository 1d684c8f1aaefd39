"""The one place where the command line turns exceptions into a one-line message and an exit code.

MoiraiError: its own code (2 for bad input, 1 for a model or other failure), the message with options named
as flags; Ctrl-C and stop signals: 130 / 143 / 129; a closed stdout: 141, quietly; anything else: 1, with a
hint to rerun with --debug, which prints the traceback first and keeps the exit code.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
import warnings
from typing import Iterator

import typer

from moirai_cli.cli.options import choice_error, flag_name
from moirai_cli.errors import MoiraiError, render
from moirai_cli.runtime import interruption

# Click's exception classes, reached through Typer's public BadParameter: older Typer releases use the
# click package, newer ones a private copy of it.
USAGE_ERROR: type[Exception] = typer.BadParameter.__bases__[0]
CLICK_EXCEPTION: type[Exception] = USAGE_ERROR.__bases__[0]


def one_line(text: str) -> str:
    """A message squeezed onto one line."""
    return " ".join(text.split())


def message_of(exc: BaseException) -> str:
    """An exception's message on one line, our errors' options named as the command line's flags."""
    text = render(exc.template, flag_name) if isinstance(exc, MoiraiError) else str(exc)
    return one_line(text) or type(exc).__name__


def echo_error(message: str) -> None:
    """The `error:` line on stderr (nothing when stderr is closed: the exit code still tells)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        typer.echo(f"error: {message}", err=True)


def warn(message: str) -> None:
    """A warning line on stderr (never silenced)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        typer.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn errors into one line on stderr and an exit code; Python warnings raised inside become `warning:` lines."""
    try:
        with warnings.catch_warnings():
            warnings.showwarning = lambda message, *args, **kwargs: warn(message_of(message))  # type: ignore[assignment]
            yield
    except MoiraiError as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        echo_error(message_of(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (runtime.stop_cleanly_on_signals)
        message, code = interruption(exc)
        echo_error(message)
        raise typer.Exit(code) from None
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as other command-line tools do
        raise typer.Exit(stdout_closed()) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if debug:
            raise
        echo_error(f"{type(exc).__name__}: {message_of(exc)} (rerun with --debug for details)")
        raise typer.Exit(1) from None


def stdout_closed() -> int:
    """Exit status after the reader of stdout went away: 141 (128 + SIGPIPE), as a shell reports `yes | head`.

    stdout is pointed at /dev/null so that nothing left in its buffer fails again at exit.
    """
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return 141


def usage_error(exc: Exception, argv: list[str]) -> int:
    """Print a usage error (Click's exception) on one line and return its exit code."""
    message = one_line(exc.format_message())
    if type(exc).__name__ == "NoArgsIsHelpError":  # bare `moirai`: the help was the message (or already shown)
        if message:
            typer.echo(exc.format_message())
    elif isinstance(exc, USAGE_ERROR):
        context = getattr(exc, "ctx", None)
        ours = choice_error(getattr(exc, "param", None), argv) if isinstance(exc, typer.BadParameter) else None
        echo_error(f"{ours or message} (see {context.command_path if context else 'moirai'} --help)")
    else:
        echo_error(message)
    return exc.exit_code
