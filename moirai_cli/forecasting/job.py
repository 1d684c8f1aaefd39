"""One description of a forecasting run, shared by every surface: which model, how the table is read, how to predict.

`ForecastJob.build(horizon, **options)` (and `BacktestJob.build`) takes every option by its Python name,
validates each value once, here, and refuses a bad one in one line naming it. The job is plain, frozen
and picklable: the command line, the Python API, and the Ray and Spark engines all build the same object
and ship it to their workers, which call the one per-chunk procedure (`procedure.forecast_chunk`).

This module imports neither torch nor pandas, so that the command line can describe its options cheaply.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Sequence, TypeVar

from moirai_cli.errors import InputError, check_at_least_one, option

DEFAULT_MODEL = "Salesforce/moirai-moe-1.0-R-small"
DEFAULT_CONTEXT_LENGTH = 1024
DEFAULT_NUM_SAMPLES = 100
DEFAULT_QUANTILE_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # a forecast's quantile columns unless asked otherwise
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPE_NAMES = ("float32", "bfloat16")
DECODINGS = ("exact", "cached")
LAYOUTS = ("auto", "long", "wide", "single")


def _one_of(name: str, value: str, choices: Sequence[str]) -> None:
    """InputError unless `value` is one of `choices`."""
    if value not in choices:
        raise InputError(f"{option(name)}: '{value}' is not one of {', '.join(choices)}")


def column_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Column names from a name, a comma-separated string, or a list of either (as the command line repeats options)."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(name.strip() for item in items for name in str(item).split(",") if name.strip())


def quantile_levels(value: str | Sequence[float]) -> tuple[float, ...]:
    """Sorted, distinct levels strictly between 0 and 1, from '0.1,0.5,0.9' or a sequence of numbers."""
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        levels = [float(part) for part in parts if str(part).strip()]
    except (TypeError, ValueError):
        raise InputError(f"{option('quantile_levels')}: {value!r} is not a comma-separated list of numbers") from None
    if not levels:
        raise InputError(f"{option('quantile_levels')}: give at least one level, e.g. 0.1,0.5,0.9")
    outside = [q for q in levels if not 0 < q < 1]
    if outside:
        raise InputError(f"{option('quantile_levels')}: {outside[0]} is not strictly between 0 and 1")
    return tuple(sorted(set(levels)))


def patch_size_choice(value: int | str | None) -> int | str | None:
    """A positive patch size, 'auto', or None (the family's default)."""
    if value is None or value == "auto":
        return value
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if size < 1 or str(size) != str(value).strip():
        raise InputError(f"{option('patch_size')}: '{value}' is not a positive integer or 'auto'")
    return size


@dataclass(frozen=True)
class ModelSpec:
    """Which checkpoint to load and on what: a Hub repo id or a local folder, its revision, the cache, device, dtype."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    cache_dir: str | None = None
    device: str = "auto"  # auto, cpu, cuda, cuda:N or mps
    dtype: str = "float32"  # float32 (the reference's numerics) or bfloat16

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, str):  # a torch.dtype, as the Python API once took
            object.__setattr__(self, "dtype", str(self.dtype).removeprefix("torch."))
        _one_of("device", str(self.device).split(":")[0], DEVICES)
        _one_of("dtype", self.dtype, DTYPE_NAMES)
        object.__setattr__(self, "model", str(self.model))


@dataclass(frozen=True)
class ReadOptions:
    """How the input table is read: layout, column roles, frequency, dates, infinite values, covariates, future values.

    `future` is a file or URI (or, from Python, a pandas DataFrame) with the known covariates over the horizon.
    """

    layout: str = "auto"
    id_column: str | None = None
    timestamp_column: str | None = None
    target: tuple[str, ...] = ()
    freq: str | None = None
    dayfirst: bool | None = None
    date_format: str | None = None
    inf_as_missing: bool = False
    past_covariates: tuple[str, ...] = ()
    known_covariates: tuple[str, ...] = ()
    future: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("target", "past_covariates", "known_covariates"):
            object.__setattr__(self, name, column_names(getattr(self, name)))
        _one_of("layout", self.layout, LAYOUTS)
        if self.dayfirst is not None and self.date_format is not None:
            raise InputError(f"{option('date_format')} already says where the day is; drop {option('dayfirst')}")
        if self.freq is not None:
            from moirai_cli.data.frames import parse_freq

            object.__setattr__(self, "freq", parse_freq(self.freq))
        if self.future is not None and not self.known_covariates:
            raise InputError(f"{option('future')} is only used with {option('known_covariates')}")

    @property
    def columns(self) -> dict[str, Any]:
        """The column roles asked for, as keyword arguments of the data functions (detect_layout, plan_reading, ...)."""
        return {
            "id_column": self.id_column,
            "timestamp_column": self.timestamp_column,
            "target": self.target,
            "past_covariates": self.past_covariates,
            "known_covariates": self.known_covariates,
        }

    @property
    def values(self) -> dict[str, Any]:
        """How timestamps and numbers are read, as keyword arguments of the data functions."""
        return {"dayfirst": self.dayfirst, "date_format": self.date_format, "inf_as_missing": self.inf_as_missing}

    @property
    def table(self) -> dict[str, Any]:
        """Everything but the future values, as keyword arguments of load_dataset, iter_series_chunks and plan_reading."""
        return {"layout": self.layout, "freq": self.freq, **self.columns, **self.values}


@dataclass(frozen=True)
class PredictSettings:
    """How the model runs: context, samples, quantile levels, patch size, decoding, batching, seed and threads.

    None keeps the family's or the device's default (num_samples: 100 sample paths, none for Moirai 2.0;
    patch_size: the family's; batch_size and token_budget: the device's plan; seed: drawn once per run;
    threads: the CPUs this process may use).
    """

    context_length: int = DEFAULT_CONTEXT_LENGTH
    num_samples: int | None = None
    quantile_levels: tuple[float, ...] = DEFAULT_QUANTILE_LEVELS
    patch_size: int | str | None = None
    decoding: str = "exact"
    batch_size: int | None = None
    token_budget: int | None = None
    seed: int | None = None
    threads: int | None = None
    sort_quantiles: bool = False  # sort each row's quantiles when a quantile model's levels cross

    def __post_init__(self) -> None:
        check_at_least_one(
            ("context_length", self.context_length),
            ("num_samples", self.num_samples),
            ("batch_size", self.batch_size),
            ("token_budget", self.token_budget),
            ("threads", self.threads),
        )
        _one_of("decoding", self.decoding, DECODINGS)
        object.__setattr__(self, "quantile_levels", quantile_levels(self.quantile_levels))
        object.__setattr__(self, "patch_size", patch_size_choice(self.patch_size))
        if self.seed is not None:
            object.__setattr__(self, "seed", int(self.seed))

    def predict_options(self) -> dict[str, Any]:
        """Keyword arguments of MoiraiForecaster.predict: every setting but those applied elsewhere, unset ones left to it."""
        given = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _APPLIED_ELSEWHERE}
        return {name: value for name, value in given.items() if value is not None and value is not False}


_APPLIED_ELSEWHERE = {
    "seed",  # settled once per run, passed apart
    "threads",  # set for the process by each engine
    "quantile_levels",  # read off the forecast when its table is laid out
}


Job = TypeVar("Job", bound="ForecastJob")
_PARTS = {"model": ModelSpec, "read": ReadOptions, "predict": PredictSettings}


@dataclass(frozen=True)
class ForecastJob:
    """Forecast `horizon` steps of every series: the model, how to read the table and how to predict."""

    horizon: int
    model: ModelSpec = ModelSpec()
    read: ReadOptions = ReadOptions()
    predict: PredictSettings = PredictSettings()

    def __post_init__(self) -> None:
        check_at_least_one(("horizon", self.horizon))

    needs_future = True  # a forecast's known covariates need values over the horizon; a backtest's come from the data

    @classmethod
    def build(cls: type[Job], horizon: int, **options: Any) -> Job:
        """A validated job from options named as the Python API names them (model, id_column, num_samples, ...)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"horizon", *_PARTS}
        parts: dict[str, dict[str, Any]] = {name: {} for name in _PARTS}
        known = {f.name: part for part, kind in _PARTS.items() for f in dataclasses.fields(kind)}
        for name, value in options.items():
            if name in own:
                continue
            if name not in known:
                close = difflib.get_close_matches(name, [*known, *own], n=1)
                raise TypeError(f"unknown option {name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            parts[known[name]][name] = value
        built = {part: kind(**parts[part]) for part, kind in _PARTS.items()}
        read = built["read"]
        if read.known_covariates and read.future is None and cls.needs_future:
            raise InputError(f"known covariates need future values: pass {option('future')}")
        return cls(horizon, **built, **{name: options[name] for name in own if name in options})

    def with_run_seed(self: Job) -> Job:
        """This job with its seed settled: the one given, or one drawn now (from torch's global generator).

        Engines settle it once on the driver, so every worker derives the same per-series seeds.
        """
        from moirai_cli.forecasting.seeding import run_seed

        return dataclasses.replace(self, predict=dataclasses.replace(self.predict, seed=run_seed(self.predict.seed)))


@dataclass(frozen=True)
class BacktestJob(ForecastJob):
    """Score forecasts of the last `windows` windows of every series (`stride` steps apart) against what happened.

    Known covariates come from the table itself; `season_length` None takes the frequency's.
    """

    windows: int = 1
    stride: int | None = None
    season_length: int | None = None

    needs_future = False

    def __post_init__(self) -> None:
        if self.read.future is not None:
            raise InputError(f"{option('future')} does not apply to a backtest: known covariates come from the data")
        super().__post_init__()
        check_at_least_one(("windows", self.windows), ("stride", self.stride), ("season_length", self.season_length))

    @property
    def step(self) -> int:
        """Steps between window starts: the stride, or the horizon."""
        return self.horizon if self.stride is None else self.stride
