"""The `moirai` command line: a thin layer that parses options, calls the library and reports errors."""

from __future__ import annotations

import contextlib
import os
import itertools
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional

# Arrow's own allocator (mimalloc) held 25-40 MB more than the C library's in streamed runs of many
# series (benchmarks/README.md). Arrow reads this once, when pyarrow is first imported (with pandas, below).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import torch
import typer
from rich.console import Console

from moirai_cli import __version__
from moirai_cli.data import (
    STDIO,
    Layout,
    SeriesDataset,
    TableWriter,
    check_covariate_options,
    check_distinct_paths,
    check_output_columns,
    check_output_path,
    forecast_frame,
    is_grouped_by,
    iter_series_chunks,
    load_dataset,
    parse_quantiles,
    peek_layout,
    rebatch,
    samples_frame,
    write_table,
)
from moirai_cli.errors import InputError, ModelError, MoiraiError
from moirai_cli.model.hub import HubError
from moirai_cli.evaluation import evaluate as evaluate_backtest
from moirai_cli.evaluation import plot_best_worst, render_summary
from moirai_cli.runtime import keep_freed_memory_for_reuse
from moirai_cli.forecasting.pipeline import DEFAULT_MODEL, DirectQuantileForecast, Forecast, MoiraiForecaster

SERIES_PER_CHUNK = 1024  # series forecast and written at a time, so memory does not grow with the file
ROWS_PER_READ = 65_536  # rows read at a time from a long file that is streamed
DEFAULT_QUANTILES = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9"
DEVICES = ("auto", "cpu", "cuda", "mps")
DECODINGS = ("exact", "cached")
LAYOUTS = ("auto", "long", "wide", "single")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Zero-shot probabilistic forecasts from CSV and Parquet files with Salesforce's Moirai models (1.x, MoE, 2.0).",
)

# --- Options shared by the commands that read data or run the model (forecast, evaluate) ---

DataArg = Annotated[
    str, typer.Argument(metavar="DATA", help="CSV (.csv, .csv.gz) or Parquet file; '-' reads CSV from stdin.")
]
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
DayFirstOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--dayfirst/--monthfirst",
        help="Read numeric dates such as 03/04/2024 day-first (3 April) or month-first (March 4); "
        "by default the column settles it, or the run stops.",
    ),
]
DateFormatOpt = Annotated[
    Optional[str], typer.Option("--date-format", help="strftime format of every timestamp, e.g. '%d/%m/%Y %H:%M'.")
]
InfAsMissingOpt = Annotated[
    bool, typer.Option("--inf-as-missing", help="Read inf and -inf values as missing (with a warning) instead of stopping.")
]
FutureOpt = Annotated[
    Optional[str], typer.Option("--future", help="File with the known covariates over the horizon (same layout).")
]
ModelOpt = Annotated[str, typer.Option("--model", help="Hugging Face repo id or local checkpoint folder.")]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit of the model repo.")]
CacheDirOpt = Annotated[Optional[str], typer.Option("--cache-dir", help="Hugging Face cache folder.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="Weights and activations: float32 (default, matches the reference) or bfloat16.")
]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
HorizonOpt = Annotated[int, typer.Option("--horizon", "-H", help="Number of future steps to forecast.")]
ContextLengthOpt = Annotated[
    Optional[int], typer.Option("--context-length", help="Most recent steps the model sees (default 1024).")
]
NumSamplesOpt = Annotated[
    Optional[int],
    typer.Option("--num-samples", help="Sample paths per series (default 100; Moirai 2.0 predicts quantiles and takes none)."),
]
QuantilesOpt = Annotated[str, typer.Option("--quantiles", help="Comma-separated quantile levels.")]
SeedOpt = Annotated[
    Optional[int],
    typer.Option(
        "--seed",
        help="Random seed. Each series draws from its own generator, seeded from this seed and its id: "
        "a series gets the same samples whatever else is in the file, its position, the batch size or the engine.",
    ),
]
BatchSizeOpt = Annotated[
    Optional[int], typer.Option("--batch-size", help="Series per model batch (default: 32 on a CPU, 256 on a GPU).")
]
TokensPerPassOpt = Annotated[
    Optional[int],
    typer.Option(
        "--tokens-per-pass",
        help="Most tokens (series x samples x patches) in one forward pass; bounds memory "
        "(default: 8192 on a CPU, from the free memory on a GPU).",
    ),
]
PatchSizeOpt = Annotated[
    Optional[str],
    typer.Option(
        "--patch-size",
        help="One of the checkpoint's patch sizes, or auto (default: 16 for Moirai-MoE, auto for Moirai 1.x, 16 for 2.0).",
    ),
]
DecodingOpt = Annotated[
    str,
    typer.Option(
        "--decoding", help="exact (the reference's procedure) or cached (faster; scaler frozen at the context)."
    ),
]
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
    dayfirst: bool | None = None
    date_format: str | None = None
    inf_as_missing: bool = False

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"--layout: '{self.layout}' is not one of {', '.join(LAYOUTS)}")
        if self.dayfirst is not None and self.date_format is not None:
            raise InputError("--date-format already says where the day is; drop --dayfirst/--monthfirst")

    def columns(self) -> dict[str, object]:
        """The column choices, as keyword arguments of the data functions."""
        return {
            "id_column": self.id_column,
            "timestamp_column": self.timestamp_column,
            "target": split_columns(self.target),
            "past_covariates": split_columns(self.past_covariates),
            "known_covariates": split_columns(self.known_covariates),
        }

    def values(self) -> dict[str, object]:
        """How timestamps and numbers are read, as keyword arguments of the data functions."""
        return {"dayfirst": self.dayfirst, "date_format": self.date_format, "inf_as_missing": self.inf_as_missing}

    def load(self, horizon: int | None = None) -> SeriesDataset:
        """Read and check the whole table (and the future file when forecasting), raising InputError on bad input."""
        return load_dataset(
            self.path,
            layout=self.layout,  # type: ignore[arg-type]
            freq=self.freq,
            future=self.future,
            horizon=horizon,
            **self.columns(),
            **self.values(),
        )

    def batches(self, horizon: int, size: int, quiet: bool = False) -> Iterator[SeriesDataset]:
        """Batches of `size` series in file order; a long file grouped by id is streamed, so memory stays flat."""
        known = split_columns(self.known_covariates)
        check_covariate_options(known, self.future, horizon if known else None)
        layout = self._streamable_layout(quiet)
        if layout is None:
            return rebatch([self.load(horizon)], size)
        chunks = iter_series_chunks(
            self.path,
            chunk_size=size,
            freq=self.freq,
            future=self.future,
            horizon=horizon,
            rows_per_read=ROWS_PER_READ,
            layout=layout,
            **self.columns(),
            **self.values(),
        )
        return rebatch(chunks, size)

    def _streamable_layout(self, quiet: bool) -> Layout | None:
        """The layout of a long-format file whose rows are grouped by series id; None for any other input."""
        if self.path == STDIO or self.layout not in ("auto", "long"):
            return None
        layout = peek_layout(self.path, layout=self.layout, rows=ROWS_PER_READ, **self.columns())  # type: ignore[arg-type]
        if layout.kind != "long":
            return None
        if not is_grouped_by(self.path, layout.id_column, ROWS_PER_READ):
            note(
                f"{self.path}: rows are not grouped by '{layout.id_column}'; reading the whole file "
                "(sort it by id to keep memory flat)",
                quiet,
            )
            return None
        return layout


@dataclass
class ModelOptions:
    """Which checkpoint to load and where; shared by every command that runs the model."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    quiet: bool = False

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InputError(f"--device: '{self.device}' is not one of {', '.join(DEVICES)}")
        if self.dtype not in DTYPES:
            raise InputError(f"--dtype: '{self.dtype}' is not one of {', '.join(DTYPES)}")

    def load(self) -> MoiraiForecaster:
        """Load the forecaster; any failure becomes a one-line ModelError."""
        try:
            with _one_line_warnings():
                return MoiraiForecaster.from_pretrained(
                    self.model,
                    revision=self.revision,
                    cache_dir=self.cache_dir,
                    device=self.device,
                    dtype=DTYPES[self.dtype],
                    progress=not self.quiet,
                )
        except HubError as exc:
            raise ModelError(exc.message("or pass --model with a local checkpoint folder")) from exc
        except MoiraiError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load model '{self.model}': {_one_line(exc)}") from exc


@dataclass
class PredictOptions:
    """How to run the model on each batch; shared by every command that forecasts."""

    num_samples: int | None = None
    context_length: int | None = None
    batch_size: int | None = None
    patch_size: str | None = None
    decoding: str = "exact"
    tokens_per_pass: int | None = None

    def settings(self) -> dict[str, object]:
        """Validated keyword arguments for MoiraiForecaster.predict (unset options keep its defaults)."""
        for option, value in (
            ("--num-samples", self.num_samples),
            ("--context-length", self.context_length),
            ("--batch-size", self.batch_size),
            ("--tokens-per-pass", self.tokens_per_pass),
        ):
            if value is not None and value < 1:
                raise InputError(f"{option} must be at least 1, got {value}")
        if self.decoding not in DECODINGS:
            raise InputError(f"--decoding: '{self.decoding}' is not one of {', '.join(DECODINGS)}")
        return {
            "decoding": self.decoding,
            **({"num_samples": self.num_samples} if self.num_samples is not None else {}),
            **({"patch_size": _parse_patch_size(self.patch_size)} if self.patch_size is not None else {}),
            **({"context_length": self.context_length} if self.context_length is not None else {}),
            **({"batch_size": self.batch_size} if self.batch_size is not None else {}),
            **({"token_budget": self.tokens_per_pass} if self.tokens_per_pass is not None else {}),
        }

    def check_model(self, forecaster: MoiraiForecaster, samples_output: str | None = None, quiet: bool = False) -> None:
        """Refuse what the loaded model's family cannot do, before any output is written; note what it ignores."""
        title, offered = forecaster.family_title, forecaster.decodings
        if self.decoding not in offered:
            raise InputError(f"--decoding {self.decoding}: {title} checkpoints offer only {' or '.join(offered)}")
        if forecaster.output_kind == "quantiles":
            if samples_output:
                raise InputError(
                    f"--samples-output: {title} predicts quantiles, not sample paths; leave --samples-output out"
                )
            if self.num_samples is not None:
                note(f"note: {title} predicts quantiles directly; --num-samples does not apply", quiet)


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
def _one_line_warnings() -> Iterator[None]:
    """Show Python warnings raised inside (the Hub fell back to the cache, a download was retried) as `warning:` lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *args, **kwargs: warn(_one_line(message))  # type: ignore[assignment]
        yield


@contextlib.contextmanager
def reported_errors(debug: bool) -> Iterator[None]:
    """Turn errors into one line on stderr and an exit code; --debug prints the traceback first (same exit code)."""
    try:
        yield
    except MoiraiError as exc:
        if debug:
            traceback.print_exc(file=sys.stderr)
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM during a download (exit code 143)
        typer.echo("error: interrupted", err=True)
        raise typer.Exit(getattr(exc, "exit_code", 130)) from None
    except BrokenPipeError:  # stdout closed early (`| head`): Typer exits quietly
        raise
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


def _progress(quiet: bool, total: int | None, label: str = "forecasting"):
    """A rich progress bar on stderr counting finished series (inert when quiet or not a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=quiet or not console.is_terminal,
    )
    task = bar.add_task(label, total=total)
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
    """Zero-shot probabilistic forecasts from CSV and Parquet files with Salesforce's Moirai models (1.x, MoE, 2.0)."""


def _input_note(dataset: SeriesDataset) -> str:
    """One line saying how the input was read (layout, columns, frequency), for the user to check."""
    return "; ".join([f"{dataset.source}: {dataset.layout.describe()}; frequency {dataset.freq}", *dataset.notes])


def _warn_about(dataset: SeriesDataset) -> None:
    """The warnings of a loaded dataset or batch: skipped series, then what reading it found."""
    for item_id in dataset.skipped:
        warn(f"skipped series '{item_id}': no observed target value")
    for message in dataset.warnings:
        warn(message)


def _check_plot(plot: str | None) -> None:
    """Fail before any work when --plot cannot be written (matplotlib missing, not a .png)."""
    if plot:
        from moirai_cli.plotting import check_plot_path

        check_plot_path(plot)


@app.command()
def forecast(
    data: DataArg,
    horizon: HorizonOpt,
    context_length: ContextLengthOpt = None,
    num_samples: NumSamplesOpt = None,
    quantiles: QuantilesOpt = DEFAULT_QUANTILES,
    seed: SeedOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    batch_size: BatchSizeOpt = None,
    tokens_per_pass: TokensPerPassOpt = None,
    patch_size: PatchSizeOpt = None,
    decoding: DecodingOpt = "exact",
    layout: LayoutOpt = "auto",
    id_column: IdColumnOpt = None,
    timestamp_column: TimestampColumnOpt = None,
    target: TargetOpt = None,
    freq: FreqOpt = None,
    dayfirst: DayFirstOpt = None,
    date_format: DateFormatOpt = None,
    inf_as_missing: InfAsMissingOpt = False,
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
        predict_options = PredictOptions(num_samples, context_length, batch_size, patch_size, decoding, tokens_per_pass)
        settings = predict_options.settings()
        levels = parse_quantiles(quantiles)
        data_options = DataOptions(
            data, layout, id_column, timestamp_column, target, freq, past_covariates, known_covariates, future,
            dayfirst, date_format, inf_as_missing,
        )
        model_options = ModelOptions(model, revision, cache_dir, device, dtype, quiet)
        output = output or STDIO
        check_output_path(output)
        if samples_output:
            check_output_path(samples_output)
        _check_plot(plot)
        check_distinct_paths(
            {"DATA": data, "--future": future},
            {"--output": output, "--samples-output": samples_output, "--plot": plot},
        )

        batches = data_options.batches(horizon, SERIES_PER_CHUNK, quiet)
        first = next(batches)  # bad data fails here, before the (slow) model load
        check_output_columns(first, levels, samples=bool(samples_output))
        note(_input_note(first), quiet)
        started = time.perf_counter()
        forecaster = model_options.load()
        predict_options.check_model(forecaster, samples_output, quiet)
        counts = _run_forecast(
            itertools.chain([first], batches),
            forecaster,
            horizon,
            levels,
            seed,
            settings,
            output,
            samples_output,
            plot,
            quiet,
        )
        used = getattr(forecaster, "device", device)
        skipped = f" ({counts[1]} skipped)" if counts[1] else ""
        note(
            f"forecast {counts[0]} series{skipped}, horizon {horizon}, model {model}, device {used}, "
            f"{time.perf_counter() - started:.1f}s" + ("" if output == STDIO else f" -> {output}"),
            quiet,
        )


def _run_forecast(
    batches: Iterator[SeriesDataset],
    forecaster: MoiraiForecaster,
    horizon: int,
    levels: list[float],
    seed: int | None,
    settings: dict[str, object],
    output: str,
    samples_output: str | None,
    plot: str | None,
    quiet: bool,
) -> tuple[int, int]:
    """Forecast each batch and stream rows to the atomic outputs; returns (series forecast, skipped)."""
    bar, advance = _progress(quiet, None)
    forecast_count = skipped_count = 0
    first: tuple[SeriesDataset, Forecast | DirectQuantileForecast] | None = None  # what the plot shows
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(TableWriter(output))
        sample_writer = stack.enter_context(TableWriter(samples_output)) if samples_output else None
        stack.enter_context(bar)
        for batch in batches:
            _warn_about(batch)
            skipped_count += len(batch.skipped)
            if not batch.series:
                continue
            result = forecaster.predict_dataset(batch, horizon, seed=seed, progress=advance, **settings)
            writer.write(forecast_frame(batch, result, levels))
            if sample_writer is not None:
                sample_writer.write(samples_frame(batch, result))
            first = first or (batch, result)
            forecast_count += len(batch.series)
        if plot and first is not None:
            from moirai_cli.plotting import plot_forecasts

            plot_forecasts(*first, plot)
    return forecast_count, skipped_count


def _resolve_checkpoint(
    name_or_path: str, revision: str | None, cache_dir: str | None, *, force: bool = False, quiet: bool = False
) -> Path:
    """Find or download a checkpoint folder, checking cached files against the Hub (the model package owns the details)."""
    from moirai_cli.model.checkpoint import resolve_checkpoint

    return resolve_checkpoint(name_or_path, revision, cache_dir, force_download=force, verify=True, progress=not quiet)


@app.command()
def download(
    model: Annotated[
        str, typer.Argument(metavar="MODEL", help="Hugging Face repo id or local folder.")
    ] = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download the files again even if they are cached (repairs a damaged cache).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar (warnings stay).")] = False,
    debug: DebugOpt = False,
) -> None:
    """Fetch a checkpoint into the Hugging Face cache, check it against the Hub and that it loads, and print its folder."""
    with reported_errors(debug):
        try:
            with _one_line_warnings():
                path = _resolve_checkpoint(model, revision, cache_dir, force=force, quiet=quiet)
        except HubError as exc:
            raise ModelError(exc.message(None)) from exc
        except MoiraiError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot download '{model}': {_one_line(exc)}") from exc
        ModelOptions(str(path), None, cache_dir, "cpu").load()
        typer.echo(str(path))


METRICS_HELP = """\
Metrics, per series and window (a multivariate target: per variate), over the window's observed steps; \
MAE, MASE, sMAPE and MAPE score the forecast median, RMSE the mean.

MAE: mean |y - median|. RMSE: sqrt(mean (y - mean)^2). \
MASE: MAE / the mean |y_t - y_(t-m)| of the history before the window (m: --season-length; lag 1 if the history \
is shorter). sMAPE: mean 2|y - median| / (|y| + |median|), from 0 to 2. \
MAPE: mean |y - median| / |y|, zero actuals left out and counted. \
WQL: mean over the --quantiles levels of sum 2 * pinball loss / sum |y|. \
MSIS: interval score of the 80% interval (0.1 to 0.9 quantiles) scaled like MASE. \
Coverage 80%: share of actuals inside that interval (ideal 0.80).

Aggregation: WQL is the ratio of sums over all series and windows (GluonTS, fev); every other metric is the \
mean over series and windows of the per-window values, leaving out windows where it is undefined. \
The seasonal-naive baseline repeats the last season and is scored the same way; Relative is the geometric \
mean over series of model / baseline (per-series values clipped to 0.01..100; below 1: the model is better).

--output writes one row per series and window (and variate) with both sets of metrics.\
"""


@app.command(epilog=METRICS_HELP)
def evaluate(
    data: DataArg,
    horizon: HorizonOpt,
    windows: Annotated[int, typer.Option("--windows", help="Rolling windows per series, cut from its end.")] = 1,
    stride: Annotated[
        Optional[int], typer.Option("--stride", help="Steps between window starts (default: the horizon).")
    ] = None,
    season_length: Annotated[
        Optional[int],
        typer.Option(
            "--season-length", help="Season length m for MASE, MSIS and the baseline (default: from the frequency)."
        ),
    ] = None,
    context_length: ContextLengthOpt = None,
    num_samples: NumSamplesOpt = None,
    quantiles: QuantilesOpt = DEFAULT_QUANTILES,
    seed: SeedOpt = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    batch_size: BatchSizeOpt = None,
    tokens_per_pass: TokensPerPassOpt = None,
    patch_size: PatchSizeOpt = None,
    decoding: DecodingOpt = "exact",
    layout: LayoutOpt = "auto",
    id_column: IdColumnOpt = None,
    timestamp_column: TimestampColumnOpt = None,
    target: TargetOpt = None,
    freq: FreqOpt = None,
    dayfirst: DayFirstOpt = None,
    date_format: DateFormatOpt = None,
    inf_as_missing: InfAsMissingOpt = False,
    past_covariates: PastCovariatesOpt = None,
    known_covariates: Annotated[
        Optional[str],
        typer.Option("--known-covariates", help="Comma-separated columns whose values count as known in each window."),
    ] = None,
    output: Annotated[
        Optional[str],
        typer.Option(
            "--output",
            "-o",
            help="Per-window metrics: CSV, Parquet, JSON or JSONL ('-': CSV on stdout, table on stderr).",
        ),
    ] = None,
    plot: Annotated[
        Optional[str], typer.Option("--plot", help="PNG of the best and worst series (by MASE) in the last window.")
    ] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Backtest the model on the last windows of every series in DATA and compare it with a seasonal-naive baseline."""
    with reported_errors(debug):
        for option, value in (
            ("--horizon", horizon),
            ("--windows", windows),
            ("--stride", stride),
            ("--season-length", season_length),
        ):
            if value is not None and value < 1:
                raise InputError(f"{option} must be at least 1, got {value}")
        predict_options = PredictOptions(num_samples, context_length, batch_size, patch_size, decoding, tokens_per_pass)
        settings = predict_options.settings()
        levels = parse_quantiles(quantiles)
        data_options = DataOptions(
            data, layout, id_column, timestamp_column, target, freq, past_covariates, known_covariates, None,
            dayfirst, date_format, inf_as_missing,
        )
        model_options = ModelOptions(model, revision, cache_dir, device, dtype, quiet)
        if output:
            check_output_path(output)
        _check_plot(plot)
        check_distinct_paths({"DATA": data}, {"--output": output, "--plot": plot})

        dataset = data_options.load()
        note(_input_note(dataset), quiet)
        _warn_about(dataset)
        started = time.perf_counter()
        forecaster = model_options.load()
        predict_options.check_model(forecaster, quiet=quiet)
        bar, advance = _progress(quiet, None, "evaluating")
        with bar:
            result = evaluate_backtest(
                forecaster,
                dataset.series,
                horizon,
                windows=windows,
                stride=stride,
                freq=dataset.freq,
                season_length=season_length,
                quantile_levels=levels,
                seed=seed,
                target_names=dataset.target_names,
                progress=advance,
                **settings,
            )
        if output:
            write_table(result.per_window, output)
        if plot:
            plot_best_worst(result, plot)
        if output != STDIO or not quiet:
            Console(stderr=output == STDIO).print(render_summary(result))
        note(
            f"evaluated {result.n_series} series, {len(result.skipped)} skipped as too short, {windows} window(s) "
            f"of {horizon} steps, model {model}, device {getattr(forecaster, 'device', device)}, "
            f"{time.perf_counter() - started:.1f}s" + (f" -> {output}" if output and output != STDIO else ""),
            quiet,
        )


# Click's exception classes, reached through Typer's public BadParameter: older Typer releases use the
# click package, newer ones a private copy of it.
_USAGE_ERROR: type[Exception] = typer.BadParameter.__bases__[0]
_CLICK_EXCEPTION: type[Exception] = _USAGE_ERROR.__bases__[0]


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, printing usage errors on one line (exit code 2) instead of a box."""
    keep_freed_memory_for_reuse()
    try:
        code = app(args=argv, prog_name="moirai", standalone_mode=False)
    except _CLICK_EXCEPTION as exc:
        message = " ".join(exc.format_message().split())
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `moirai`: the help was the message (or already shown)
            if message:
                typer.echo(exc.format_message())
        elif isinstance(exc, _USAGE_ERROR):
            context = getattr(exc, "ctx", None)
            typer.echo(f"error: {message} (see {context.command_path if context else 'moirai'} --help)", err=True)
        else:
            typer.echo(f"error: {message}", err=True)
        return exc.exit_code
    except typer.Abort:
        typer.echo("error: aborted", err=True)
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    """The `moirai` executable: `main`, then exit without tearing the interpreter down.

    By then every output file is written and closed; freeing the model and unloading
    torch would only add about half a second to each command.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
