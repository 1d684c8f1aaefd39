"""The `moirai` command line: a thin layer that parses options, calls the library and reports errors."""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer

from moirai_cli import __version__
from moirai_cli.data import (
    STDIO,
    SeriesDataset,
    TableWriter,
    check_output_path,
    forecast_frame,
    load_dataset,
    parse_quantiles,
    samples_frame,
)
from moirai_cli.errors import InputError, ModelError, MoiraiError
from moirai_cli.forecasting.pipeline import DEFAULT_MODEL, MoiraiForecaster

SERIES_PER_CHUNK = 1024  # series forecast and written at a time, so memory does not grow with the file
DEFAULT_QUANTILES = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
DEVICES = ("auto", "cpu", "cuda", "mps")
DECODINGS = ("exact", "cached")
LAYOUTS = ("auto", "long", "wide", "single")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Zero-shot probabilistic forecasts from CSV and Parquet files with Salesforce's Moirai-MoE.",
)

# --- Options shared by the commands that read data or load a model (forecast, and later evaluate) ---

DataArg = Annotated[str, typer.Argument(help="CSV (.csv, .csv.gz) or Parquet file; '-' reads CSV from stdin.")]
LayoutOpt = Annotated[str, typer.Option("--layout", help="Table layout: auto, long, wide or single.")]
IdColumnOpt = Annotated[Optional[str], typer.Option("--id-column", help="Series id column (long layout).")]
TimestampColumnOpt = Annotated[Optional[str], typer.Option("--timestamp-column", help="Timestamp column.")]
TargetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--target", help="Target column; repeat (or comma-separate) for a multivariate forecast."),
]
FreqOpt = Annotated[
    Optional[str], typer.Option("--freq", help="Pandas frequency (h, D, W-SUN, MS, ...); inferred if unset.")
]
PastCovariatesOpt = Annotated[
    Optional[str], typer.Option("--past-covariates", help="Comma-separated columns known only in the past.")
]
KnownCovariatesOpt = Annotated[
    Optional[str],
    typer.Option("--known-covariates", help="Comma-separated columns known in the future too (needs --future)."),
]
FutureOpt = Annotated[
    Optional[str], typer.Option("--future", help="File with the known covariates over the horizon (same layout).")
]
ModelOpt = Annotated[str, typer.Option("--model", help="Hugging Face repo id or local checkpoint folder.")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit of the model repo.")]
CacheDirOpt = Annotated[Optional[str], typer.Option("--cache-dir", help="Hugging Face cache folder.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, notes or summary (warnings stay).")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]


def split_columns(values: list[str] | str | None) -> list[str]:
    """Column names from repeated and/or comma-separated option values."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else values
    return [name.strip() for item in items for name in item.split(",") if name.strip()]


@dataclass
class DataOptions:
    """How to read the input table; shared by every command that reads series."""

    path: str
    layout: str = "auto"
    id_column: str | None = None
    timestamp_column: str | None = None
    target: list[str] | None = None
    freq: str | None = None
    past_covariates: str | None = None
    known_covariates: str | None = None
    future: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"--layout: '{self.layout}' is not one of {', '.join(LAYOUTS)}")

    def load(self, horizon: int | None = None) -> SeriesDataset:
        """Read and check the data (and the future file), raising InputError on bad input."""
        return load_dataset(
            self.path,
            layout=self.layout,  # type: ignore[arg-type]
            id_column=self.id_column,
            timestamp_column=self.timestamp_column,
            target=split_columns(self.target),
            freq=self.freq,
            past_covariates=split_columns(self.past_covariates),
            known_covariates=split_columns(self.known_covariates),
            future=self.future,
            horizon=horizon if self.known_covariates else None,
        )


@dataclass
class ModelOptions:
    """Which checkpoint to load and where; shared by every command that runs the model."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    cache_dir: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InputError(f"--device: '{self.device}' is not one of {', '.join(DEVICES)}")

    def load(self) -> MoiraiForecaster:
        """Load the forecaster; any failure becomes a one-line ModelError."""
        try:
            return MoiraiForecaster.from_pretrained(
                self.model, revision=self.revision, cache_dir=self.cache_dir, device=self.device
            )
        except MoiraiError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load model '{self.model}': {_one_line(exc)}") from exc


# --- Output helpers ---


def _one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def note(message: str, quiet: bool = False) -> None:
    """An informational line on stderr (silenced by --quiet)."""
    if not quiet:
        typer.echo(message, err=True)


def warn(message: str) -> None:
    """A warning line on stderr (never silenced)."""
    typer.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn errors into one line on stderr and an exit code; --debug lets the traceback through."""
    try:
        yield
    except MoiraiError as exc:
        if debug:
            raise
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for details)", err=True)
        raise typer.Exit(1) from None


def _parse_patch_size(text: str) -> int | str:
    """`auto` or a positive integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"--patch-size: '{text}' is not a positive integer or 'auto'")
    return value


def _progress(quiet: bool, total: int):
    """A rich progress bar on stderr counting finished series (inert when quiet or not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("forecasting"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )
    task = bar.add_task("forecast", total=total)
    return bar, lambda n: bar.advance(task, n)


def _version(value: bool) -> None:
    """Print the version and exit."""
    if value:
        typer.echo(f"moirai-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Zero-shot probabilistic forecasts from CSV and Parquet files with Salesforce's Moirai-MoE."""


@app.command()
def forecast(
    data: DataArg,
    horizon: Annotated[int, typer.Option("--horizon", "-H", help="Number of future steps to forecast.")],
    context_length: Annotated[
        Optional[int], typer.Option("--context-length", help="Most recent steps the model sees.")
    ] = None,
    num_samples: Annotated[int, typer.Option("--num-samples", help="Sample paths per series.")] = 100,
    quantiles: Annotated[str, typer.Option("--quantiles", help="Comma-separated quantile levels.")] = DEFAULT_QUANTILES,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Random seed for reproducible samples.")] = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Series per model batch.")] = None,
    patch_size: Annotated[str, typer.Option("--patch-size", help="Patch size (8, 16, 32, 64, 128) or auto.")] = "16",
    decoding: Annotated[str, typer.Option("--decoding", help="exact or cached (faster, approximate).")] = "exact",
    layout: LayoutOpt = "auto",
    id_column: IdColumnOpt = None,
    timestamp_column: TimestampColumnOpt = None,
    target: TargetOpt = None,
    freq: FreqOpt = None,
    past_covariates: PastCovariatesOpt = None,
    known_covariates: KnownCovariatesOpt = None,
    future: FutureOpt = None,
    output: Annotated[
        Optional[str], typer.Option("--output", "-o", help="CSV, Parquet, JSON or JSONL file (default: CSV on stdout).")
    ] = None,
    samples_output: Annotated[
        Optional[str], typer.Option("--samples-output", help="File for the sample paths (one row per sample and step).")
    ] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="PNG with history, median and 80% band.")] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Forecast every series in DATA and write quantiles (and optionally sample paths and a plot)."""
    with reported_errors(debug):
        if horizon < 1:
            raise InputError(f"--horizon must be at least 1, got {horizon}")
        if num_samples < 1:
            raise InputError(f"--num-samples must be at least 1, got {num_samples}")
        if decoding not in DECODINGS:
            raise InputError(f"--decoding: '{decoding}' is not one of {', '.join(DECODINGS)}")
        levels = parse_quantiles(quantiles)
        patch = _parse_patch_size(patch_size)
        data_options = DataOptions(
            data, layout, id_column, timestamp_column, target, freq, past_covariates, known_covariates, future
        )
        model_options = ModelOptions(model, revision, cache_dir, device)
        output = output or STDIO
        check_output_path(output)
        if samples_output:
            check_output_path(samples_output)
        if plot:
            from moirai_cli.plotting import check_plot_path

            check_plot_path(plot)

        dataset = data_options.load(horizon)
        note(dataset.describe(), quiet)
        for item_id in dataset.skipped:
            warn(f"skipped series '{item_id}': no observed target value")

        started = time.perf_counter()
        forecaster = model_options.load()
        settings = {
            "num_samples": num_samples,
            "patch_size": patch,
            "decoding": decoding,
            **({"context_length": context_length} if context_length is not None else {}),
            **({"batch_size": batch_size} if batch_size is not None else {}),
        }
        _run_forecast(dataset, forecaster, horizon, levels, seed, settings, output, samples_output, plot, quiet)
        used = getattr(forecaster, "device", device)
        note(
            f"forecast {len(dataset.series)} series, horizon {horizon}, model {model}, device {used}, "
            f"{time.perf_counter() - started:.1f}s" + ("" if output == STDIO else f" -> {output}"),
            quiet,
        )


def _run_forecast(
    dataset: SeriesDataset,
    forecaster: MoiraiForecaster,
    horizon: int,
    levels: list[float],
    seed: int | None,
    settings: dict,
    output: str,
    samples_output: str | None,
    plot: str | None,
    quiet: bool,
) -> None:
    """Forecast the dataset chunk by chunk, streaming rows to the (atomic) output files."""
    bar, advance = _progress(quiet, len(dataset.series))
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(TableWriter(output))
        sample_writer = stack.enter_context(TableWriter(samples_output)) if samples_output else None
        stack.enter_context(bar)
        first = None
        for number, (start, records) in enumerate(dataset.chunks(SERIES_PER_CHUNK)):
            result = forecaster.predict(
                [r.target[:, 0] if r.target.shape[1] == 1 else r.target for r in records],
                horizon,
                past_covariates=[r.past_covariates for r in records] if dataset.layout.past_covariates else None,
                known_covariates=[r.known_covariates for r in records] if dataset.layout.known_covariates else None,
                seed=None if seed is None else seed + number,
                progress=advance,
                **settings,
            )
            writer.write(forecast_frame(dataset, result, levels, start=start))
            if sample_writer is not None:
                sample_writer.write(samples_frame(dataset, result, start=start))
            first = first if first is not None else result
        if plot:
            from moirai_cli.plotting import plot_forecasts

            plot_forecasts(dataset, first, plot)


def _resolve_checkpoint(name_or_path: str, revision: str | None, cache_dir: str | None) -> Path:
    """Find or download a checkpoint folder (the model package owns the details)."""
    from moirai_cli.model.checkpoint import resolve_checkpoint

    return resolve_checkpoint(name_or_path, revision, cache_dir)


@app.command()
def download(
    model: Annotated[str, typer.Argument(help="Hugging Face repo id or local folder.")] = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Fetch a checkpoint into the Hugging Face cache, check that it loads, and print its folder."""
    with reported_errors(debug):
        try:
            path = _resolve_checkpoint(model, revision, cache_dir)
        except MoiraiError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot download '{model}': {_one_line(exc)}") from exc
        ModelOptions(str(path), None, cache_dir, "cpu").load()
        typer.echo(str(path))


# `moirai evaluate` is added here from moirai_cli.evaluation, reusing DataOptions / ModelOptions and the
# option aliases above.


def main() -> None:
    """Console-script entry point."""
    app(prog_name="moirai")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
