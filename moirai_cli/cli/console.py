"""What the command line shows on stderr while a command runs: notes, warnings, a progress bar, tables."""

from __future__ import annotations

import contextlib
from typing import Any, Hashable, Iterable, Iterator

import typer

from moirai_cli.cli.errors import warn
from moirai_cli.cli.options import flag_name
from moirai_cli.errors import render
from moirai_cli.forecasting.procedure import ChunkResult, Notice, crossing_notice


def note(message: str, quiet: bool = False) -> None:
    """An informational line on stderr (silenced by --quiet)."""
    if not quiet:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            typer.echo(message, err=True)


class Console:
    """RunEvents for the command line, and the rest of what a run shows: each notice once, warnings always, notes unless quiet."""

    def __init__(self, quiet: bool, label: str = "forecasting") -> None:
        self.quiet, self.label = quiet, label
        self.where = ""
        self.crossing = self.rows = 0
        self._shown: set[str] = set()
        self._wanted = False  # inside `progress`
        self._bar: Any = None
        self._task: Any = None

    # --- RunEvents ---

    def input_read(self, description: str) -> None:
        note(description, self.quiet)

    def notice(self, notice: Notice) -> None:
        text = render(notice.text, flag_name)
        if text in self._shown:
            return
        self._shown.add(text)
        if notice.kind == "warning":
            warn(text)
        else:
            note(text, self.quiet)

    def started(self, total: int | None, where: str) -> None:
        self.where = where
        if self._wanted and self._bar is None:  # shown from now on: not over the model's download bars
            self._start_bar(total)

    def advance(self, series: int) -> None:
        if self._bar is not None and series:
            self._bar.advance(self._task, series)

    # --- The rest of a run ---

    def report(self, result: ChunkResult) -> None:
        """What one chunk found: skipped series (one warning each), then its notices, each shown once; crossing rows are counted."""
        for item_id in result.skipped:
            self.notice(Notice("warning", f"skipped series '{item_id}': no observed target value"))
        for notice in result.notices:
            self.notice(notice)
        self.crossing += result.crossing
        self.rows += result.rows

    def finish(self) -> None:
        """The run's closing warnings: rows with crossing quantiles, counted over the whole run."""
        if self.crossing:
            self.notice(crossing_notice(self.crossing, self.rows))

    @contextlib.contextmanager
    def progress(self) -> Iterator["Console"]:
        """Show a progress bar on stderr from `started` to the end of the block (none when quiet or not a terminal).

        It counts finished series: N/total when the total is known, else the count.
        """
        self._wanted = True
        try:
            yield self
        finally:
            self._wanted = False
            if self._bar is not None:
                self._bar.stop()
                self._bar = None

    def _start_bar(self, total: int | None) -> None:
        """The bar itself, once the run knows how many series it has (or that it does not know)."""
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = RichConsole(stderr=True)
        self._bar = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn() if total is not None else TextColumn("{task.completed} series"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=self.quiet or not console.is_terminal,
        )
        self._task = self._bar.add_task(self.label, total=total)
        self._bar.start()


class TrainingBar:
    """A progress bar for fine-tuning on stderr: step, training and validation loss, time left (none when quiet or not a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> "TrainingBar":
        from rich.console import Console as RichConsole
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        console = RichConsole(stderr=True)
        self._bar = Progress(
            TextColumn("fine-tuning"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[losses]}"),
            console=console, transient=True, disable=self.quiet or not console.is_terminal,
        )
        self._task = self._bar.add_task("fine-tuning", total=None, losses="")
        return self

    def update(self, progress: Any) -> None:
        """Show where a run stands (a moirai_cli.training.TrainingProgress)."""
        validation = "-" if progress.validation_loss is None else f"{progress.validation_loss:.4g}"
        losses = f"training loss {progress.train_loss:.4g}, validation loss {validation}, {progress.seconds_left:.0f}s left"
        self._bar.update(self._task, completed=progress.step, total=progress.steps, losses=losses)
        self._bar.start()

    def __exit__(self, *exc_info: Any) -> None:
        self._bar.stop()


def stdout_is_closed() -> bool:
    """Whether this process has no stdout to write to (started with it closed: `moirai ... >&-`)."""
    import errno
    import io
    import os
    import sys

    if sys.stdout is None:
        return True
    try:
        os.fstat(sys.stdout.fileno())
    except io.UnsupportedOperation:  # a stream without a descriptor (a test runner's): it can be written
        return False
    except OSError as exc:
        return exc.errno == errno.EBADF
    return False


def warn_skipped(ids: Iterable[Hashable], reason: str) -> None:
    """One warning per series left out of a run, saying why."""
    for item_id in ids:
        warn(f"skipped series '{item_id}': {reason}")


def print_table(table: Any, stderr: bool = False) -> None:
    """Print a rich table; off a terminal, as wide as it needs (a file or pipe gets whole lines, not folded cells)."""
    from rich.console import Console as RichConsole

    console = RichConsole(stderr=stderr)
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(1_000)).maximum
        console.width = max(console.width, natural)
    console.print(table)
