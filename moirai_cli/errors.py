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
