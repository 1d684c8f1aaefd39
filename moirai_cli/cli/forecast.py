"""`moirai forecast`: forecast every series of a table and write the quantiles (and sample paths, a plot)."""

from __future__ import annotations

import contextlib
import time
from typing import Any, Iterator

from moirai_cli.cli import options as opts
from moirai_cli.cli.console import Console, note, stdout_is_closed
from moirai_cli.cli.errors import reported_errors
from moirai_cli.errors import InputError, check_at_least_one, option


@opts.with_options(
    opts.DATA_ARGUMENT, opts.HORIZON, *opts.PREDICT_OPTIONS, opts.SEED, opts.MODEL_NAME, *opts.MODEL_OPTIONS,
    *opts.READ_OPTIONS, opts.KNOWN_COVARIATES, opts.FUTURE, *opts.FORECAST_OUTPUTS, *opts.ENGINE_OPTIONS, opts.QUIET, opts.DEBUG,
)
def forecast(**given: Any) -> None:
    """Forecast every series in DATA and write quantiles (and optionally sample paths and a plot)."""
    with reported_errors(given["debug"]):
        from moirai_cli.forecasting.job import ForecastJob

        job = ForecastJob.build(given["horizon"], **opts.job_options(given))
        outputs = ForecastOutputs(given["output"], given["samples_output"], given["plot"])
        outputs.check(given["data"], job.read.future, engine=given["engine"].value)
        console = Console(given["quiet"])
        started = time.perf_counter()
        with outputs.writers() as write, console.progress():
            for result in _engine_run(job, given, console, samples=outputs.samples is not None):
                console.report(result)
                write(result)
            outputs.plot_first()
        console.finish()
        note(
            f"forecast {outputs.series} series{f' ({outputs.skipped} skipped)' if outputs.skipped else ''}, horizon {job.horizon}, "
            f"model {job.model.model}, {console.where}, {time.perf_counter() - started:.1f}s{outputs.destination}",
            given["quiet"],
        )


def _engine_run(job, given: dict[str, Any], console: Console, *, samples: bool):
    """The chosen engine's run: its chunk results, one by one. Options of another engine are refused, never ignored."""
    check_at_least_one(("workers", given["workers"]))
    if given["engine"].value == "ray":
        from moirai_cli.engines import ray

        workers, address = given["workers"] or 1, given["ray_address"]
        return ray.forecast(job, given["data"], console, workers=workers, address=address, samples=samples)
    for name in ("workers", "ray_address"):
        if given[name] is not None:
            raise InputError(f"{option(name)} applies to {option('engine')} ray only; leave it out, or add {option('engine')} ray")
    from moirai_cli.engines import local

    return local.forecast(job, given["data"], console, samples=samples, download_progress=not given["quiet"])


class ForecastOutputs:
    """Where a forecast goes: the forecast table (stdout by default), the sample paths, the plot; written together."""

    def __init__(self, output: str | None, samples: str | None, plot: str | None) -> None:
        from moirai_cli.data import STDIO

        self.output, self.samples, self.plot = output or STDIO, samples, plot
        self.series = self.skipped = 0
        self._first: Any = None  # (dataset, forecast) of the first chunk: what the plot shows

    def check(self, data: str, future: str | None, *, engine: str) -> None:
        """Refuse, before any work, outputs that cannot be written or would overwrite an input or each other."""
        from moirai_cli.data import STDIO, check_distinct_paths, check_output_path

        check_output_path(self.output)
        if self.samples:
            check_output_path(self.samples)
        if STDIO in (self.output, self.samples) and stdout_is_closed():
            raise InputError(f"stdout is closed, so nothing could be written there; write the forecast to a file with {option('output')}")
        if self.samples == STDIO and self.output == STDIO:
            raise InputError(
                f"{option('samples_output')} -: stdout already carries the forecast table; "
                f"write the samples to a file, or the forecast to one with {option('output')}"
            )
        if self.plot:
            if engine != "local":
                raise InputError(f"{option('plot')} is not available with {option('engine')} {engine}; use {option('engine')} local")
            from moirai_cli.plotting import check_plot_path

            check_plot_path(self.plot)
        check_distinct_paths(
            {"DATA": data, "--future": future if isinstance(future, str) else None},
            {"--output": self.output, "--samples-output": self.samples, "--plot": self.plot},
        )

    @contextlib.contextmanager
    def writers(self) -> Iterator[Any]:
        """A function writing each chunk's tables; the files are published when the block succeeds, else removed."""
        from moirai_cli.data import TableWriter, publish_together
        from moirai_cli.forecasting.procedure import FORECAST, SAMPLES
        from moirai_cli.runtime import hold_stop_signals, release_stop_signals

        with publish_together(), contextlib.ExitStack() as stack:  # every file of the run, or none
            hold_stop_signals()  # until the stack owns both writers' temporary files
            try:
                table = stack.enter_context(TableWriter(self.output))
                samples = stack.enter_context(TableWriter(self.samples)) if self.samples else None
            finally:
                release_stop_signals()

            def write(result) -> None:
                self.series += result.series
                self.skipped += len(result.skipped)
                if FORECAST in result.tables:
                    table.write(result.tables[FORECAST])
                if samples is not None and SAMPLES in result.tables:
                    samples.write(result.tables[SAMPLES])
                if self._first is None and result.detail is not None:
                    self._first = result.detail

            yield write

    def plot_first(self) -> None:
        """Draw the first chunk's series, when a plot was asked for."""
        if self.plot and self._first is not None:
            from moirai_cli.plotting import plot_forecasts

            plot_forecasts(*self._first, self.plot)

    @property
    def destination(self) -> str:
        """' -> FILE' for the closing note when the forecast went to a file."""
        return "" if self.output == "-" else f" -> {self.output}"
