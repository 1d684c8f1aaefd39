"""The `moirai` command line: a thin layer that parses options, calls the library and reports errors."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import itertools
import json
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Iterator, Optional, Sequence

# Arrow's own allocator (mimalloc) held 25-40 MB more than the C library's in streamed runs of many
# series (benchmarks/README.md). Arrow reads this once, when pyarrow is first imported (with pandas, below).
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")

import typer
from typer.core import TyperCommand, TyperGroup
from rich.console import Console
from rich.table import Table

from moirai_cli import __version__
from moirai_cli.data import (
    DEFAULT_QUANTILE_LEVELS,
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
    plan_file_reading,
    resolve_source,
    samples_frame,
    write_table,
)
from moirai_cli.errors import InputError, ModelError, MoiraiError, check_at_least_one
from moirai_cli.model.hub import HubError
from moirai_cli.evaluation import compare as compare_models
from moirai_cli.evaluation.backtest import check_output_id_column, with_input_id_column
from moirai_cli.evaluation import evaluate as evaluate_backtest
from moirai_cli.evaluation import plot_best_worst, render_leaderboard, render_summary
from moirai_cli.runtime import (
    hold_stop_signals,
    interruption,
    keep_freed_memory_for_reuse,
    release_stop_signals,
    stop_cleanly_on_signals,
    use_threads,
)
from moirai_cli.forecasting.pipeline import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MODEL,
    DTYPES,
    CheckpointTraits,
    DirectQuantileForecast,
    Forecast,
    MoiraiForecaster,
    pick_device,
)
from moirai_cli.forecasting.seeding import run_seed

SERIES_PER_CHUNK = 1024  # series forecast and written at a time, so memory does not grow with the file
ROWS_PER_READ = 65_536  # rows read at a time from a long file that is streamed
DEFAULT_QUANTILES = ",".join(str(level) for level in DEFAULT_QUANTILE_LEVELS)
DEVICES = ("auto", "cpu", "cuda", "mps")
DECODINGS = ("exact", "cached")
LAYOUTS = ("auto", "long", "wide", "single")

class _FlagsWithoutType:
    """Help without a value type (`<bool>`) next to flags, which take no value (recent Typer prints one)."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Group(_FlagsWithoutType, TyperGroup):
    """The `moirai` command group."""


class _Command(_FlagsWithoutType, TyperCommand):
    """One `moirai` subcommand."""


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Zero-shot probabilistic forecasts from CSV and Parquet files with Salesforce's Moirai models (1.x, MoE, 2.0).",
)

# --- Options shared by the commands that read data or run the model (forecast, evaluate) ---

DataArg = Annotated[
    str,
    typer.Argument(
        metavar="DATA",
        help="CSV (.csv, .csv.gz) or Parquet file, a folder or glob of them (hive partitions too), "
        "or a URI (s3://, gs://, abfs://, file://, fsspec protocols); '-' reads CSV from stdin.",
    ),
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
ModelsOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--model",
        metavar="MODEL",
        help=f"Hugging Face repo id or local checkpoint folder (default {DEFAULT_MODEL}); "
        "repeat to rank several models on the same windows in one leaderboard.",
    ),
]
RevisionOpt = Annotated[Optional[str], typer.Option("--revision", help="Branch, tag or commit of the model repo.")]
CacheDirOpt = Annotated[Optional[str], typer.Option("--cache-dir", help="Hugging Face cache folder.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or mps.")]
DtypeOpt = Annotated[
    str, typer.Option("--dtype", help="Weights and activations: float32 (default, matches the reference) or bfloat16.")
]
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
EvaluateSeedOpt = Annotated[
    Optional[int],
    typer.Option(
        "--seed",
        help="Random seed: the same seed gives the same samples for a series, whatever else is in the file.",
    ),
]
BatchSizeOpt = Annotated[
    Optional[int], typer.Option("--batch-size", help="Series per model batch (default: 32 on a CPU, 256 on a GPU).")
]
TokensPerPassOpt = Annotated[
    Optional[int],
    typer.Option(
        "--tokens-per-pass",
        help="Most tokens (series x samples x patches) in a forward pass at once; bounds memory "
        "(default: 4096 per CPU thread, from 8192 to 65536; from the free memory on a GPU).",
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
ENGINES = ("local", "ray")
EngineOpt = Annotated[
    str,
    typer.Option("--engine", help="local (this process) or ray (a Ray cluster; needs pip install 'moirai-cli[ray]')."),
]
RayAddressOpt = Annotated[
    Optional[str],
    typer.Option("--ray-address", help="Ray cluster to join: 'auto' or an address (default: start a local cluster)."),
]
WorkersOpt = Annotated[
    int, typer.Option("--workers", help="Ray workers, each loading the model once (one GPU each with --device cuda).")
]
ThreadsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--threads",
        help="CPU threads for the model (default: $MOIRAI_NUM_THREADS, else the CPUs this process may use, "
        "from its affinity and cgroup quota).",
        show_default=False,
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

    def check_covariates(self, horizon: int) -> None:
        """Known covariates and --future go together when forecasting; checked before anything is read."""
        known = split_columns(self.known_covariates)
        check_covariate_options(known, self.future, horizon if known else None)

    def batches(self, horizon: int, size: int, quiet: bool = False) -> tuple[Iterator[SeriesDataset], int | None]:
        """Batches of `size` series in file order, and their number of series (None when not known up front).

        A long file grouped by id is streamed, so memory stays flat (and the count is not known).
        """
        self.check_covariates(horizon)
        layout = self._streamable_layout(quiet)
        if layout is None:
            dataset = self.load(horizon)
            return rebatch([dataset], size), len(dataset.series)
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
        return rebatch(chunks, size), None

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
        with _model_errors(f"cannot load model '{self.model}'"):
            forecaster = MoiraiForecaster.from_pretrained(
                self.model,
                revision=self.revision,
                cache_dir=self.cache_dir,
                device=self.device,
                dtype=DTYPES[self.dtype],
                progress=not self.quiet,
            )
        return forecaster

    def resolve(self) -> Path:
        """The checkpoint's local folder, downloading it first if needed; any failure becomes a one-line ModelError."""
        from moirai_cli.model.checkpoint import resolve_checkpoint

        with _model_errors(f"cannot fetch model '{self.model}'"):
            folder = resolve_checkpoint(self.model, self.revision, self.cache_dir, progress=not self.quiet)
        return folder



@contextlib.contextmanager
def _model_errors(failure: str, hub_hint: str | None = "or pass --model with a local checkpoint folder") -> Iterator[None]:
    """Hub failures (with `hub_hint`), and anything unexpected (after `failure`), as one-line ModelErrors; warnings as lines."""
    try:
        with _one_line_warnings():
            yield
    except HubError as exc:
        raise ModelError(exc.message(hub_hint)) from exc
    except MoiraiError:
        raise
    except Exception as exc:
        raise ModelError(f"{failure}: {_one_line(exc)}") from exc


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
        check_at_least_one(
            ("--num-samples", self.num_samples),
            ("--context-length", self.context_length),
            ("--batch-size", self.batch_size),
            ("--tokens-per-pass", self.tokens_per_pass),
        )
        if self.decoding not in DECODINGS:
            raise InputError(f"--decoding: '{self.decoding}' is not one of {', '.join(DECODINGS)}")
        given = {
            "num_samples": self.num_samples,
            "patch_size": None if self.patch_size is None else _parse_patch_size(self.patch_size),
            "context_length": self.context_length,
            "batch_size": self.batch_size,
            "token_budget": self.tokens_per_pass,
        }
        return {"decoding": self.decoding, **{name: value for name, value in given.items() if value is not None}}

    def check_model(
        self,
        forecaster: MoiraiForecaster | CheckpointTraits,
        samples_output: str | None = None,
        quiet: bool = False,
        label: str | None = None,
    ) -> None:
        """Refuse what the model's family cannot do, before any output is written; note what it ignores.

        label names the model among several (a leaderboard).
        """
        title, offered = forecaster.family_title, forecaster.decodings
        if self.decoding not in offered:
            which = f"{title} checkpoints offer" if label is None else f"'{label}' is a {title} checkpoint and offers"
            raise InputError(f"--decoding {self.decoding}: {which} only {' or '.join(offered)}")
        if forecaster.output_kind == "quantiles":
            if samples_output:
                raise InputError(
                    f"--samples-output: {title} predicts quantiles, not sample paths; leave --samples-output out"
                )
            if self.num_samples is not None:
                which = title if label is None else f"'{label}' ({title})"
                note(f"note: {which} predicts quantiles directly; --num-samples does not apply", quiet)

    def check_models(self, checkpoints: dict[str, CheckpointTraits], quiet: bool = False) -> None:
        """check_model for each of several checkpoints, and that each has the --patch-size asked for, before any runs."""
        size = None if self.patch_size is None else _parse_patch_size(self.patch_size)
        for label, traits in checkpoints.items():
            self.check_model(traits, quiet=quiet, label=label)
            if size not in (None, "auto") and size not in traits.patch_sizes:
                raise InputError(
                    f"--patch-size {size} is not one of the sizes of '{label}' ({traits.family_title}): "
                    f"{list(traits.patch_sizes)}; leave --patch-size out to use each model's default"
                )


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
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP (runtime.stop_cleanly_on_signals)
        message, code = interruption(exc)
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(code) from None
    except BrokenPipeError:  # stdout closed early (`| head`): stop quietly, as other command-line tools do
        raise typer.Exit(stdout_closed()) from None
    except Exception as exc:
        if debug:
            raise
        typer.echo(f"error: {type(exc).__name__}: {_one_line(exc)} (rerun with --debug for details)", err=True)
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
        MofNCompleteColumn() if total is not None else TextColumn("{task.completed} series"),
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


def check_context_length(forecaster: MoiraiForecaster, dataset: SeriesDataset, settings: dict[str, object], horizon: int) -> None:
    """Warn when the context (as long as the data allows) exceeds what the checkpoint saw in training."""
    config = getattr(getattr(forecaster, "model", None), "config", None)
    if config is None or not dataset.series:
        return
    record = dataset.series[0]
    tokens_per_step = sum(
        0 if values is None else values.shape[1] for values in (record.target, record.past_covariates, record.known_covariates)
    )
    patch_size = settings.get("patch_size", forecaster.default_patch_size)
    smallest = min(config.patch_sizes) if patch_size == "auto" else int(patch_size)
    context = settings.get("context_length", DEFAULT_CONTEXT_LENGTH)
    used = min(context, max(len(r.target) for r in dataset.series))
    longest = config.longest_context(horizon, smallest, tokens_per_step)
    if used > longest:
        option = f"--context-length {context}" if "context_length" in settings else f"the default context of {context} steps"
        warn(
            f"{option} gives sequences longer than this checkpoint's {config.max_seq_len} tokens "
            f"(at most {longest} steps of context with horizon {horizon}, patch size {smallest} and "
            f"{tokens_per_step} token(s) per step); forecasts may degrade: use a shorter --context-length"
        )


def _input_note(source: str, layout: Layout, freq: str, notes: Sequence[str] = ()) -> str:
    """One line saying how the input was read (layout, columns, frequency, what reading it noted), for the user to check."""
    return "; ".join([f"{source}: {layout.describe()}; frequency {freq}", *notes])


def warn_no_observed(skipped: list) -> None:
    """One warning per series left out because it has no observed target value."""
    for item_id in skipped:
        warn(f"skipped series '{item_id}': no observed target value")


def _warn_about(dataset: SeriesDataset) -> None:
    """The warnings of a loaded dataset or batch: skipped series, then what reading it found."""
    warn_no_observed(dataset.skipped)
    for message in dataset.warnings:
        warn(message)


def _check_plot(plot: str | None) -> None:
    """Fail before any work when --plot cannot be written (matplotlib missing, not a .png)."""
    if plot:
        from moirai_cli.plotting import check_plot_path

        check_plot_path(plot)


@app.command(cls=_Command)
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
    threads: ThreadsOpt = None,
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
        Optional[str],
        typer.Option(
            "--output", "-o",
            help="CSV, Parquet, JSON or JSONL file, or a folder (or URI) for a Parquet dataset (default: CSV on stdout).",
        ),
    ] = None,
    samples_output: Annotated[
        Optional[str], typer.Option("--samples-output", help="File for the sample paths (one row per sample and step).")
    ] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="PNG with history, median and 80% band.")] = None,
    engine: EngineOpt = "local",
    ray_address: RayAddressOpt = None,
    workers: WorkersOpt = 1,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Forecast every series in DATA and write quantiles (and optionally sample paths and a plot)."""
    with reported_errors(debug):
        check_at_least_one(("--horizon", horizon))
        if engine not in ENGINES:
            raise InputError(f"--engine: '{engine}' is not one of {', '.join(ENGINES)}")
        check_at_least_one(("--workers", workers))
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
        if samples_output == STDIO and output == STDIO:
            raise InputError(
                "--samples-output -: stdout already carries the forecast table; "
                "write the samples to a file, or the forecast to one with -o"
            )
        _check_plot(plot)
        check_distinct_paths(
            {"DATA": data, "--future": future},
            {"--output": output, "--samples-output": samples_output, "--plot": plot},
        )
        if engine == "ray":
            for option, value in (("--samples-output", samples_output), ("--plot", plot)):
                if value:
                    raise InputError(f"{option} is not available with --engine ray; use --engine local")
            _forecast_on_ray(
                data_options, model_options, horizon, levels, seed, settings, output, quiet, address=ray_address, workers=workers
            )
            return

        use_threads(threads)
        batches, total = data_options.batches(horizon, SERIES_PER_CHUNK, quiet)
        first = next(batches)  # bad data fails here, before the (slow) model load
        check_output_columns(first, levels, samples=bool(samples_output))
        whole = first.source if data == STDIO else data  # a folder or glob, not just the first batch's file
        note(_input_note(whole, first.layout, first.freq, first.notes), quiet)
        started = time.perf_counter()
        forecaster = model_options.load()
        predict_options.check_model(forecaster, samples_output, quiet)
        check_context_length(forecaster, first, settings, horizon)
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
            total,
        )
        where = f"device {getattr(forecaster, 'device', device)}"
        note(_forecast_note(*counts, horizon, model, where, started, output), quiet)


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
    total: int | None = None,
) -> tuple[int, int]:
    """Forecast each batch and stream rows to the atomic outputs; returns (series forecast, skipped)."""
    bar, advance = _progress(quiet, total)
    forecast_count = skipped_count = 0
    first: tuple[SeriesDataset, Forecast | DirectQuantileForecast] | None = None  # what the plot shows
    with contextlib.ExitStack() as stack:
        hold_stop_signals()  # until the stack owns both writers' temporary files
        try:
            writer = stack.enter_context(TableWriter(output))
            sample_writer = stack.enter_context(TableWriter(samples_output)) if samples_output else None
        finally:
            release_stop_signals()
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


def _forecast_on_ray(
    data_options: DataOptions,
    model_options: ModelOptions,
    horizon: int,
    levels: list[float],
    seed: int | None,
    settings: dict[str, object],
    output: str,
    quiet: bool,
    *,
    address: str | None,
    workers: int,
) -> None:
    """`forecast --engine ray`: settle columns, frequency and seed here, forecast on the cluster, write here."""
    from moirai_cli import distributed

    data_options.check_covariates(horizon)
    distributed.import_ray()
    source = resolve_source(data_options.path)
    if source.is_stdin:
        raise InputError("--engine ray reads files, folders or URIs, not stdin")
    reading = plan_file_reading(
        source, layout=data_options.layout, freq=data_options.freq, **data_options.columns(), **data_options.values()
    )
    distributed.require_long_layout(reading.layout, source.label)
    note(_input_note(source.label, reading.layout, reading.freq), quiet)
    started = time.perf_counter()
    model_options.resolve()  # a missing model fails here, once, not on every worker
    job = distributed.ForecastJob(
        horizon, reading, run_seed(seed), model_options.model, model_options.revision, model_options.cache_dir,
        model_options.device, model_options.dtype, tuple(levels), dict(settings), data_options.future,
    )
    forecast_count = skipped_count = 0
    with distributed.RayCluster(address, workers) as cluster, TableWriter(output) as writer:
        plan = distributed.plan_source(source, reading.layout.id_column, workers)
        bar, advance = _progress(quiet, plan.series)  # series done / total, as locally, when the scan counted them
        with bar:
            dataset = distributed.forecast_source(
                source, job, workers=workers, cpus_per_worker=cluster.cpus_per_worker, plan=plan
            )
            for frame, skipped, count in distributed.forecast_rows(distributed.collect(dataset), reading.layout.id_column):
                warn_no_observed(skipped)
                writer.write(frame)
                forecast_count += count
                skipped_count += len(skipped)
                advance(count + len(skipped))
        if not forecast_count:  # as a local read says it (the output is then not published)
            raise InputError(f"{source.label}: no series has an observed target value")
    where = f"engine ray ({workers} worker{'s' if workers > 1 else ''}, device {model_options.device})"
    note(_forecast_note(forecast_count, skipped_count, horizon, model_options.model, where, started, output), quiet)


def _forecast_note(count: int, skipped: int, horizon: int, model: str, where: str, started: float, output: str) -> str:
    """The closing line of `forecast`: what was forecast, with which model, where, how long, to which file."""
    skipped_text = f" ({skipped} skipped)" if skipped else ""
    return (
        f"forecast {count} series{skipped_text}, horizon {horizon}, model {model}, {where}, "
        f"{time.perf_counter() - started:.1f}s" + ("" if output == STDIO else f" -> {output}")
    )


def _resolve_checkpoint(
    name_or_path: str, revision: str | None, cache_dir: str | None, *, force: bool = False, quiet: bool = False
) -> Path:
    """Find or download a checkpoint folder, checking cached files against the Hub (the model package owns the details)."""
    from moirai_cli.model.checkpoint import resolve_checkpoint

    return resolve_checkpoint(name_or_path, revision, cache_dir, force_download=force, verify=True, progress=not quiet)


@app.command(cls=_Command)
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
        with _model_errors(f"cannot download '{model}'", hub_hint=None):
            path = _resolve_checkpoint(model, revision, cache_dir, force=force, quiet=quiet)
        ModelOptions(str(path), None, cache_dir, "cpu").load()
        typer.echo(str(path))


MODEL_LIST_FORMATS = ("table", "csv", "json")


@app.command()
def models(
    cache_dir: CacheDirOpt = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="First ask the Hub for each listed model's card, for its licence (waits bounded like downloads).",
        ),
    ] = False,
    output_format: Annotated[
        Optional[str],
        typer.Option("--format", help="table, csv or json (default: a table on a terminal, CSV otherwise)."),
    ] = None,
    debug: DebugOpt = False,
) -> None:
    """List the known Moirai checkpoints: family, size, parameters, patch sizes, licence, and which are cached.

    Reads only the local cache (no network) unless --refresh is given.
    """
    from moirai_cli.model.hub import is_offline
    from moirai_cli.model.inventory import list_models, models_frame, models_records, refresh_model_cards, render_models

    with reported_errors(debug):
        chosen = output_format or ("table" if sys.stdout.isatty() else "csv")
        if chosen not in MODEL_LIST_FORMATS:
            raise InputError(f"--format: '{chosen}' is not one of {', '.join(MODEL_LIST_FORMATS)}")
        if refresh:
            if is_offline():
                raise InputError("--refresh asks the Hub, but offline mode is on (HF_HUB_OFFLINE); unset it or leave --refresh out")
            with _one_line_warnings():
                refresh_model_cards([entry.repo_id for entry in list_models(cache_dir)], cache_dir)
        entries = list_models(cache_dir)
        if chosen == "table":
            _print_table(render_models(entries, cache_dir))
        elif chosen == "csv":
            write_table(models_frame(entries), STDIO)
        else:
            typer.echo(json.dumps(models_records(entries), indent=2))


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


@app.command(cls=_Command, epilog=METRICS_HELP)
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
    seed: EvaluateSeedOpt = None,
    model: ModelsOpt = None,
    revision: RevisionOpt = None,
    cache_dir: CacheDirOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
    threads: ThreadsOpt = None,
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
    forecasts_output: Annotated[
        Optional[str],
        typer.Option(
            "--forecasts-output",
            help="Per-window forecasts (one row per series, window and step: actual, means, quantiles), same formats.",
        ),
    ] = None,
    plot: Annotated[
        Optional[str], typer.Option("--plot", help="PNG of the best and worst series (by MASE) in the last window.")
    ] = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Backtest the model on the last windows of every series in DATA and compare it with a seasonal-naive baseline.

    With several --model, every model is backtested on the same windows, one after the other, and ranked in one leaderboard with the baseline.
    """
    with reported_errors(debug):
        check_at_least_one(("--horizon", horizon), ("--windows", windows), ("--stride", stride), ("--season-length", season_length))
        predict_options = PredictOptions(num_samples, context_length, batch_size, patch_size, decoding, tokens_per_pass)
        settings = predict_options.settings()
        levels = parse_quantiles(quantiles)
        data_options = DataOptions(
            data, layout, id_column, timestamp_column, target, freq, past_covariates, known_covariates, None,
            dayfirst, date_format, inf_as_missing,
        )
        models = model or [DEFAULT_MODEL]
        model_options = ModelOptions(models[0], revision, cache_dir, device, dtype, quiet)
        for path in (output, forecasts_output):
            if path:
                check_output_path(path)
        _check_plot(plot)
        if output == STDIO and forecasts_output == STDIO:
            raise InputError("-o - and --forecasts-output - would write two tables to stdout; send one of them to a file")
        check_distinct_paths({"DATA": data}, {"--output": output, "--forecasts-output": forecasts_output, "--plot": plot})
        if len(models) > 1:
            _check_leaderboard_options(models, plot)

        use_threads(threads)
        dataset = data_options.load()
        note(_input_note(dataset.source, dataset.layout, dataset.freq, dataset.notes), quiet)
        if output or forecasts_output:
            check_output_id_column(dataset.id_column, leaderboard=len(models) > 1)
        _warn_about(dataset)
        started = time.perf_counter()
        backtest = dict(  # the same windows, scoring and predict options for one model or several
            windows=windows,
            stride=stride,
            freq=dataset.freq,
            season_length=season_length,
            quantile_levels=levels,
            seed=seed,
            target_names=dataset.target_names,
            **settings,
        )
        if len(models) > 1:
            _evaluate_leaderboard(models, model_options, predict_options, dataset, horizon, backtest, output, forecasts_output)
            return
        forecaster = model_options.load()
        predict_options.check_model(forecaster, quiet=quiet)
        check_context_length(forecaster, dataset, settings, horizon)
        bar, advance = _progress(quiet, len(dataset.series) * windows, "evaluating")
        with bar:
            result = evaluate_backtest(forecaster, dataset.series, horizon, progress=advance, **backtest)
        warn_too_short(result.skipped, windows, horizon, result.stride)
        write_backtest_tables(result.per_window, result.forecasts, dataset.id_column, output, forecasts_output)
        if plot:
            plot_best_worst(result, plot)
        on_stdout = STDIO in (output, forecasts_output)
        if not on_stdout or not quiet:
            Console(stderr=on_stdout).print(render_summary(result))
        note(
            f"evaluated {result.n_series} series, {len(result.skipped)} skipped as too short, {windows} window(s) "
            f"of {horizon} steps, model {models[0]}, device {getattr(forecaster, 'device', device)}, "
            f"{time.perf_counter() - started:.1f}s"
            + "".join(f" -> {path}" for path in (output, forecasts_output) if path and path != STDIO),
            quiet,
        )


def warn_too_short(skipped: list[str], windows: int, horizon: int, stride: int) -> None:
    """One warning per series a backtest left out as too short, saying how long it would need to be."""
    for item_id in skipped:
        warn(
            f"skipped series '{item_id}': too short for {windows} window(s) of {horizon} steps "
            f"{stride} apart (it needs more than {horizon + (windows - 1) * stride} rows, "
            "with an observed value before the first window)"
        )


def write_backtest_tables(
    per_window, forecasts, id_column: str, output: str | None, forecasts_output: str | None
) -> None:
    """Write a backtest's per-window scores and forecasts where asked, with the input's id column name."""
    if output:
        write_table(with_input_id_column(per_window, id_column), output)
    if forecasts_output:
        write_table(with_input_id_column(forecasts, id_column), forecasts_output)




def _print_table(table: Table, stderr: bool = False) -> None:
    """Print a rich table; off a terminal, as wide as it needs (a file or pipe gets whole lines, not folded cells)."""
    console = Console(stderr=stderr)
    if not console.is_terminal:
        natural = console.measure(table, options=console.options.update_width(1_000)).maximum
        console.width = max(console.width, natural)
    console.print(table)


def _check_leaderboard_options(models: list[str], plot: str | None) -> None:
    """Refuse, before any work, what a leaderboard of several models cannot do."""
    repeated = next((name for i, name in enumerate(models) if name in models[:i]), None)
    if repeated is not None:
        raise InputError(f"--model '{repeated}' is given more than once; give each model once")
    if plot:
        raise InputError("--plot draws one model's forecasts: give a single --model, or leave --plot out")


def _evaluate_leaderboard(
    models: list[str],
    model_options: ModelOptions,
    predict_options: PredictOptions,
    dataset: SeriesDataset,
    horizon: int,
    backtest: dict[str, object],  # evaluate's window, scoring and predict options, as for one model
    output: str | None,
    forecasts_output: str | None,
) -> None:
    """`evaluate` with several --model: fetch every model and check the options against each, then backtest
    them in turn (one in memory at a time) and write the leaderboard, the per-window rows and the forecasts."""
    started, quiet = time.perf_counter(), model_options.quiet
    folders = {name: dataclasses.replace(model_options, model=name).resolve() for name in models}
    predict_options.check_models({name: CheckpointTraits.of_folder(folder) for name, folder in folders.items()}, quiet)
    loaders = {name: dataclasses.replace(model_options, model=str(folder), revision=None).load for name, folder in folders.items()}
    windows = backtest["windows"]
    bar, advance = _progress(quiet, len(dataset.series) * windows * len(models), f"evaluating {len(models)} models")
    with bar:
        board = compare_models(loaders, dataset.series, horizon, progress=advance, **backtest)
    warn_too_short(board.skipped, windows, horizon, board.stride)
    write_backtest_tables(board.per_window, board.forecasts, dataset.id_column, output, forecasts_output)
    on_stdout = STDIO in (output, forecasts_output)
    if not on_stdout or not quiet:
        _print_table(render_leaderboard(board), stderr=on_stdout)
    note(
        f"evaluated {board.n_series} series, {len(board.skipped)} skipped as too short, {windows} window(s) of "
        f"{horizon} steps, {len(models)} models, device {pick_device(model_options.device)}, "
        f"{time.perf_counter() - started:.1f}s"
        + "".join(f" -> {path}" for path in (output, forecasts_output) if path and path != STDIO),
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
    except typer.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # a signal while the options were being parsed
            message, code = interruption(exc.__cause__)
            typer.echo(f"error: {message}", err=True)
            return code
        typer.echo("error: aborted", err=True)
        return 1
    return code if isinstance(code, int) else 0


def run() -> None:
    """The `moirai` executable: `main` with clean stops on SIGTERM/SIGHUP, then exit without tearing the interpreter down.

    By then every output file is written and closed; freeing the model and unloading
    torch would only add about half a second to each command.
    """
    stop_cleanly_on_signals()
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = stdout_closed()
    with contextlib.suppress(OSError):
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
