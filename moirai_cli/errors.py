"""Errors that every surface turns into one-line messages and exit codes, and how messages name the user's options.

A message that tells the user to change an option names it with `option("freq")`: the command line shows
`--freq`, the Python API `freq`. Each surface renders the same message its own way (`render`).
"""

from __future__ import annotations

import re
from typing import Callable

_MARK = "\x1f"  # brackets an option reference inside a message; never in text a user can type on one line
_REFERENCE = re.compile(_MARK + r"([A-Za-z_][A-Za-z0-9_]*)(?:=([^" + _MARK + r"]*))?" + _MARK)

OptionNamer = Callable[[str, "str | None"], str]
"""How a surface names an option: (parameter name, value as repr or None) -> text."""


def option(name: str, value: object = None) -> str:
    """A reference to the option `name` (its Python parameter name), with a value for flags such as dayfirst=True."""
    shown = "" if value is None else f"={value!r}"
    return f"{_MARK}{name}{shown}{_MARK}"


def python_name(name: str, value: str | None) -> str:
    """How the Python API names an option: `freq`, or `dayfirst=True` with a value."""
    return name if value is None else f"{name}={value}"


def render(message: str, namer: OptionNamer = python_name) -> str:
    """A message with its option references named for one surface."""
    return _REFERENCE.sub(lambda match: namer(match.group(1), match.group(2)), message)


class MoiraiError(Exception):
    """Base class: a failure we can explain in one line (exit code 1).

    `template` keeps the option references, so that another surface (the command line, a driver
    receiving a worker's error) can render it; `str()` renders them for Python callers.
    """

    exit_code = 1

    @property
    def template(self) -> str:
        """The message with its option references unrendered."""
        return str(self.args[0]) if self.args else type(self).__name__

    def __str__(self) -> str:
        return render(self.template)


class InputError(MoiraiError):
    """The user's data or arguments are wrong (exit code 2): name the file, column or series."""

    exit_code = 2


class ModelError(MoiraiError):
    """A checkpoint cannot be found, downloaded or loaded (exit code 1)."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors can span many lines).

    For our own errors the option references are kept (see MoiraiError.template).
    """
    text = exc.template if isinstance(exc, MoiraiError) else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def check_at_least_one(*options: tuple[str, int | None]) -> None:
    """InputError naming the first (parameter name, value) pair whose value is below 1; None means unset and passes."""
    for name, value in options:
        if value is not None and value < 1:
            raise InputError(f"{option(name)} must be at least 1, got {value}")
