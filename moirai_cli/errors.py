"""Errors the command line turns into one-line messages and exit codes."""


class MoiraiError(Exception):
    """Base class: a failure we can explain in one line (exit code 1)."""

    exit_code = 1


class InputError(MoiraiError):
    """The user's data or arguments are wrong (exit code 2): name the file, column or series."""

    exit_code = 2


class ModelError(MoiraiError):
    """A checkpoint cannot be found, downloaded or loaded (exit code 1)."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (library errors can span many lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def check_at_least_one(*options: tuple[str, int | None]) -> None:
    """InputError naming the first (name, value) pair whose value is below 1; None means unset and passes."""
    for name, value in options:
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
