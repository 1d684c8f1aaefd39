"""How an engine tells its caller what happens during a run, so that each surface shows it its own way."""

from __future__ import annotations

from typing import Protocol

from moirai_cli.forecasting.procedure import Notice


class RunEvents(Protocol):
    """What a run reports while it goes: how the input was read, notices, the work ahead and the work done."""

    def input_read(self, description: str) -> None:
        """How the input was read (source, layout, columns, frequency), once, before the model is loaded."""

    def notice(self, notice: Notice) -> None:
        """Something the user should know that no single chunk says (e.g. a file read whole)."""

    def started(self, total: int | None, where: str) -> None:
        """The model is ready: `total` series to forecast (None when not known up front), `where` it runs."""

    def advance(self, series: int) -> None:
        """`series` more series are done (forecast or skipped)."""


def describe_input(source: str, layout, freq: str, notes=()) -> str:
    """One line saying how the input was read (layout, columns, frequency, what reading it noted), for the user to check."""
    return "; ".join([f"{source}: {layout.describe()}; frequency {freq}", *notes])
