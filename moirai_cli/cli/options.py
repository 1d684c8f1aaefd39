"""The command line's options, defined once and shared by the commands, and how messages name them.

Every option of the job (`moirai_cli.forecasting.job`: ModelSpec, ReadOptions, PredictSettings, and a
backtest's windows) has one definition here, under its Python name; `with_options` adds a group of them
to a command, so `forecast` and `evaluate` take the same options without listing them twice. Choices are
enums, so Typer validates them and lists them in --help.
"""

from __future__ import annotations

import ast
import enum
import inspect
import re
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional

import typer

from moirai_cli.forecasting.job import (
    DECODINGS,
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MODEL,
    DEFAULT_QUANTILE_LEVELS,
    DEVICES,
    DTYPE_NAMES,
    LAYOUTS,
)

Device = enum.Enum("Device", {name: name for name in DEVICES}, type=str)
Dtype = enum.Enum("Dtype", {name: name for name in DTYPE_NAMES}, type=str)
Decoding = enum.Enum("Decoding", {name: name for name in DECODINGS}, type=str)
Layout = enum.Enum("Layout", {name: name for name in LAYOUTS}, type=str)
Engine = enum.Enum("Engine", {name: name for name in ("local", "ray")}, type=str)
ListFormat = enum.Enum("ListFormat", {name: name for name in ("table", "csv", "json")}, type=str)


@dataclass(frozen=True)
class Opt:
    """One command-line option: its Python name, type (with Typer's Option), default and help panel."""

    name: str
    kind: Any
    default: Any = None

    @property
    def flags(self) -> tuple[str, ...]:
        """The option's flags as declared, e.g. ('--horizon', '-H') or ('--dayfirst/--monthfirst',)."""
        info = self.kind.__metadata__[0]
        first = [info.default] if isinstance(info.default, str) and info.default.startswith("-") else []  # Annotated style
        return (*first, *(getattr(info, "param_decls", None) or ()))


def typed_option(flags: str | tuple[str, ...], kind: Any, help: str, panel: str, **extra: Any) -> Any:
    """An Annotated type carrying Typer's Option."""
    flags = (flags,) if isinstance(flags, str) else flags
    return Annotated[kind, typer.Option(*flags, help=help, rich_help_panel=panel, **extra)]


DATA, MODEL, PREDICT, OUTPUT, RUN = "Data", "Model", "Prediction", "Output", "Run"
DEFAULT_QUANTILES = ",".join(str(level) for level in DEFAULT_QUANTILE_LEVELS)

DATA_ARGUMENT = Opt("data", Annotated[str, typer.Argument(
    metavar="DATA",
    help="CSV (.csv, .csv.gz) or Parquet file, a folder or glob of them (hive partitions too), "
    "or a URI (s3://, gs://, abfs://, file://, fsspec protocols); '-' reads CSV from stdin.",
)], inspect.Parameter.empty)
HORIZON = Opt("horizon", typed_option(("--horizon", "-H"), int, "Number of future steps to forecast.", PREDICT), inspect.Parameter.empty)

READ_OPTIONS = (
    Opt("layout", typed_option("--layout", Layout, "Table layout.", DATA), Layout.auto),
    Opt("id_column", typed_option("--id-column", Optional[str], "Series id column (long layout).", DATA)),
    Opt("timestamp_column", typed_option("--timestamp-column", Optional[str], "Timestamp column.", DATA)),
    Opt("target", typed_option("--target", Optional[list[str]], "Target column; repeat (or comma-separate) for a multivariate forecast.", DATA)),
    Opt("freq", typed_option("--freq", Optional[str], "Pandas frequency (h, D, W-SUN, MS, ...); inferred if unset.", DATA)),
    Opt("dayfirst", typed_option(
        "--dayfirst/--monthfirst", Optional[bool],
        "Read numeric dates such as 03/04/2024 day-first (3 April) or month-first (March 4); "
        "by default the column settles it, or the run stops.", DATA, show_default=False,
    )),
    Opt("date_format", typed_option("--date-format", Optional[str], "strftime format of every timestamp, e.g. '%d/%m/%Y %H:%M'.", DATA)),
    Opt("inf_as_missing", typed_option("--inf-as-missing", bool, "Read inf and -inf values as missing (with a warning) instead of stopping.", DATA), False),
    Opt("past_covariates", typed_option("--past-covariates", Optional[str], "Comma-separated columns known only in the past.", DATA)),
)
KNOWN_COVARIATES = Opt("known_covariates", typed_option(
    "--known-covariates", Optional[str], "Comma-separated columns known in the future too (needs --future).", DATA
))
FUTURE = Opt("future", typed_option("--future", Optional[str], "File with the known covariates over the horizon (same layout).", DATA))
BACKTEST_KNOWN_COVARIATES = Opt("known_covariates", typed_option(
    "--known-covariates", Optional[str], "Comma-separated columns whose values count as known in each window.", DATA
))

MODEL_NAME = Opt("model", typed_option("--model", str, "Hugging Face repo id or local checkpoint folder.", MODEL), DEFAULT_MODEL)
MODELS = Opt("model", typed_option(
    "--model", Optional[list[str]],
    f"Hugging Face repo id or local checkpoint folder (default {DEFAULT_MODEL}); "
    "repeat to rank several models on the same windows in one leaderboard.", MODEL, metavar="MODEL",
))
MODEL_OPTIONS = (
    Opt("revision", typed_option("--revision", Optional[str], "Branch, tag or commit of the model repo.", MODEL)),
    Opt("cache_dir", typed_option("--cache-dir", Optional[str], "Hugging Face cache folder.", MODEL)),
    Opt("device", typed_option("--device", Device, "Where the model runs (auto: CUDA, then MPS, then CPU).", MODEL), Device.auto),
    Opt("dtype", typed_option("--dtype", Dtype, "Weights and activations: float32 (the reference's numerics) or bfloat16.", MODEL), Dtype.float32),
)

PREDICT_OPTIONS = (
    Opt("context_length", typed_option("--context-length", int, "Most recent steps the model sees.", PREDICT), DEFAULT_CONTEXT_LENGTH),
    Opt("num_samples", typed_option(
        "--num-samples", Optional[int], "Sample paths per series (default 100; Moirai 2.0 predicts quantiles and takes none).", PREDICT
    )),
    Opt("quantile_levels", typed_option("--quantiles", str, "Comma-separated quantile levels.", PREDICT), DEFAULT_QUANTILES),
    Opt("patch_size", typed_option(
        "--patch-size", Optional[str],
        "One of the checkpoint's patch sizes, or auto (default: 16 for Moirai-MoE, auto for Moirai 1.x, 16 for 2.0).", PREDICT,
    )),
    Opt("decoding", typed_option(
        "--decoding", Decoding, "exact (the reference's procedure) or cached (faster; scaler frozen at the context).", PREDICT
    ), Decoding.exact),
    Opt("batch_size", typed_option("--batch-size", Optional[int], "Series per model batch (default: 32 on a CPU, 256 on a GPU).", PREDICT)),
    Opt("token_budget", typed_option(
        "--tokens-per-pass", Optional[int],
        "Most tokens (series x samples x patches) in a forward pass at once; bounds memory "
        "(default: 4096 per CPU thread, from 8192 to 65536; from the free memory on a GPU).", PREDICT,
    )),
    Opt("threads", typed_option(
        "--threads", Optional[int],
        "CPU threads for the model (default: $MOIRAI_NUM_THREADS, else the CPUs this process may use, "
        "from its affinity and cgroup quota).", PREDICT, show_default=False,
    )),
    Opt("sort_quantiles", typed_option(
        "--sort-quantiles", bool,
        "Sort each row's quantiles where a quantile model (Moirai 2.0) predicts them crossing.", PREDICT,
    ), False),
)
SEED = Opt("seed", typed_option(
    "--seed", Optional[int],
    "Random seed. Each series draws from its own generator, seeded from this seed and its id: "
    "a series gets the same samples whatever else is in the file, its position, the batch size or the engine.", PREDICT,
))
EVALUATE_SEED = Opt("seed", typed_option(
    "--seed", Optional[int], "Random seed: the same seed gives the same samples for a series, whatever else is in the file.", PREDICT
))
WINDOW_OPTIONS = (
    Opt("windows", typed_option("--windows", int, "Rolling windows per series, cut from its end.", PREDICT), 1),
    Opt("stride", typed_option("--stride", Optional[int], "Steps between window starts (default: the horizon).", PREDICT)),
    Opt("season_length", typed_option(
        "--season-length", Optional[int], "Season length m for MASE, MSIS and the baseline (default: from the frequency).", PREDICT
    )),
)

ENGINE_OPTIONS = (
    Opt("engine", typed_option("--engine", Engine, "local (this process) or ray (a Ray cluster; needs pip install 'moirai-cli[ray]').", RUN), Engine.local),
    Opt("ray_address", typed_option("--ray-address", Optional[str], "Ray cluster to join: 'auto' or an address (default: start a local cluster).", RUN)),
    Opt("workers", typed_option(
        "--workers", Optional[int], "Ray workers, each loading the model once (one GPU each with --device cuda; default 1).", RUN
    )),
)
QUIET = Opt("quiet", typed_option(("--quiet", "-q"), bool, "No progress bar, notes or summary (warnings stay).", RUN), False)
DEBUG = Opt("debug", typed_option("--debug", bool, "Show the full traceback on errors.", RUN), False)

FORECAST_OUTPUTS = (
    Opt("output", typed_option(
        ("--output", "-o"), Optional[str],
        "CSV, Parquet, JSON or JSONL file, or a folder (or URI) for a Parquet dataset (default: CSV on stdout).", OUTPUT,
    )),
    Opt("samples_output", typed_option("--samples-output", Optional[str], "File for the sample paths (one row per sample and step).", OUTPUT)),
    Opt("plot", typed_option("--plot", Optional[str], "PNG with history, median and 80% band.", OUTPUT)),
)
EVALUATE_OUTPUTS = (
    Opt("output", typed_option(
        ("--output", "-o"), Optional[str], "Per-window metrics: CSV, Parquet, JSON or JSONL ('-': CSV on stdout, table on stderr).", OUTPUT
    )),
    Opt("forecasts_output", typed_option(
        "--forecasts-output", Optional[str],
        "Per-window forecasts (one row per series, window and step: actual, means, quantiles), same formats.", OUTPUT,
    )),
    Opt("plot", typed_option("--plot", Optional[str], "PNG of the best and worst series (by MASE) in the last window.", OUTPUT)),
)

TRAIN = "Fine-tuning"
TrainingMode = enum.Enum("TrainingMode", {name: name for name in ("full", "lora", "head")}, type=str)
# Fine-tuning settings (moirai_cli.training.FinetuneSettings): unset ones keep the library's defaults.
TRAINING_OPTIONS = (
    Opt("context_length", typed_option("--context-length", Optional[int], "Steps of context in each training window (default 1024).", TRAIN)),
    Opt("steps", typed_option("--steps", Optional[int], "Training steps, at most (default 200; early stopping may end sooner).", TRAIN)),
    Opt("learning_rate", typed_option(
        "--learning-rate", Optional[float], "AdamW's learning rate (default: 1e-5 for --mode full, 1e-4 for lora and head).", TRAIN
    )),
    Opt("batch_size", typed_option("--batch-size", Optional[int], "Training windows per step (default 32).", TRAIN)),
    Opt("mode", typed_option(
        "--mode", Optional[TrainingMode], "What trains: every weight (full, default), low-rank adapters (lora) or the output head (head).", TRAIN
    )),
    Opt("lora_rank", typed_option("--lora-rank", Optional[int], "Rank of the LoRA adapters (default 8).", TRAIN)),
    Opt("lora_alpha", typed_option("--lora-alpha", Optional[float], "Scale of the LoRA adapters: alpha / rank (default 16).", TRAIN)),
    Opt("validation_windows", typed_option(
        "--validation-windows", Optional[int],
        "Last horizons of each series held out, as evaluate holds them out, to stop early and keep the best step (default 1; 0: none).", TRAIN,
    )),
    Opt("validation_interval", typed_option("--validation-interval", Optional[int], "Steps between validations (default 10).", TRAIN)),
    Opt("patience", typed_option("--patience", Optional[int], "Validations without improvement before stopping (default 5).", TRAIN)),
    Opt("seed", typed_option("--seed", Optional[int], "Seed of the training windows' draws and of LoRA's start: the same run twice gives the same weights on a CPU (default 0).", TRAIN)),
    Opt("dtype", typed_option("--dtype", Optional[Dtype], "float32 (default) or bfloat16 (autocast, for GPUs; the weights stay float32).", TRAIN)),
)

LIST_FORMAT = Opt("output_format", typed_option(
    "--format", Optional[ListFormat], "table, csv or json (default: a table on a terminal, CSV otherwise).", OUTPUT
))

JOB_OPTIONS = frozenset(
    opt.name for opt in (*READ_OPTIONS, KNOWN_COVARIATES, FUTURE, MODEL_NAME, *MODEL_OPTIONS, *PREDICT_OPTIONS, SEED, *WINDOW_OPTIONS)
)
"""The options that go into the job (ForecastJob / BacktestJob); the others are the command line's own."""
ALL_OPTIONS = (
    DATA_ARGUMENT, HORIZON, *READ_OPTIONS, KNOWN_COVARIATES, FUTURE, MODEL_NAME, *MODEL_OPTIONS, *PREDICT_OPTIONS, SEED,
    *WINDOW_OPTIONS, *ENGINE_OPTIONS, QUIET, DEBUG, *FORECAST_OUTPUTS, *EVALUATE_OUTPUTS, LIST_FORMAT, *TRAINING_OPTIONS,
)


def with_options(*options: Opt) -> Callable[[Callable], Callable]:
    """Give a command taking `**options` these options' parameters (what Typer reads to build the command)."""

    def decorate(command: Callable) -> Callable:
        parameters = [
            inspect.Parameter(opt.name, inspect.Parameter.KEYWORD_ONLY, annotation=opt.kind, default=opt.default)
            for opt in options
        ]
        command.__signature__ = inspect.Signature(parameters)
        command.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
        return command

    return decorate


def job_options(given: dict[str, Any]) -> dict[str, Any]:
    """The parsed options that go into the job, enum members as their text."""
    return {
        name: value.value if isinstance(value, enum.Enum) else value
        for name, value in given.items()
        if name in JOB_OPTIONS
    }


def flag_name(name: str, value: str | None = None) -> str:
    """How the command line names the option `name` in a message: `--freq`, `--dayfirst` / `--monthfirst`, `--id-column store`."""
    flags = next((opt.flags for opt in ALL_OPTIONS if opt.name == name and opt.flags), ())
    long = next((flag for flag in flags if flag.startswith("--")), "--" + name.replace("_", "-"))
    positive, _, negative = long.partition("/")
    if value is None:
        return f"{positive} or {negative}" if negative else positive
    shown = ast.literal_eval(value)
    if shown is True or shown is False:
        return positive if shown or not negative else negative
    text = str(shown)
    if re.fullmatch(r"[\w.+-]+", text) is None:  # not a plain word, number or frequency: quoted as a shell would take it
        text = "'" + text.replace("'", "'\"'\"'") + "'"
    return f"{positive} {text}"


def choice_error(param: Any, argv: list[str]) -> str | None:
    """Our one-line message for a value outside an enum option's choices, e.g. "--engine: 'x' is not one of local, ray"."""
    opt = next((o for o in ALL_OPTIONS if o.name == getattr(param, "name", None)), None)
    kind = opt.kind.__origin__ if opt is not None else None
    kind = next((arg for arg in getattr(kind, "__args__", ()) if isinstance(arg, enum.EnumMeta)), kind)  # Optional[Enum]
    if not isinstance(kind, enum.EnumMeta):
        return None
    choices = list(kind.__members__)
    names = [flag for flag in param.opts if flag.startswith("-")]
    given = next(
        (argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in names),
        next((arg.split("=", 1)[1] for arg in argv if arg.split("=", 1)[0] in names and "=" in arg), None),
    )
    if given is None:
        return None
    return f"{names[0]}: '{given}' is not one of {', '.join(choices)}"
