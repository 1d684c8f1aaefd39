"""Forecast and backtest Spark DataFrames with Moirai-MoE (needs the `spark` extra: pyspark).

    >>> from moirai_cli import spark as moirai_spark
    >>> forecast = moirai_spark.forecast(sales, horizon=28, model="Salesforce/moirai-moe-1.0-R-small", seed=0)

An adapter over the library's own procedure, not a second copy of it. The driver settles how the
table is read once, from a sample (the columns' roles and the frequency: `moirai_cli.data.plan_reading`),
and draws the seed when none is given. The rows are then spread over partitions by series id and
sorted within each, and `mapInPandas` hands each partition's rows, as pandas frames, to a worker.
The worker reads complete series from them a chunk at a time with `load_dataset`, forecasts each
chunk with `MoiraiForecaster.predict_dataset` and lays it out with `forecast_frame` (or backtests
it with `moirai_cli.evaluation.evaluate`). The model is loaded once per Python worker process.
Each series draws its samples from its own random stream (seed and id), so the forecast equals
`moirai forecast`'s and `predict_df`'s with the same seed, whatever the partitioning.

A worker that meets bad data does not raise inside Spark (which would retry the task and bury the
message in a Java stack trace): it returns one note row, and the driver raises the first error as
one line that names the series. Notes also carry the series skipped for having no observed value.
`forecast` and `evaluate` therefore run their Spark job when called; the result is cached on the
executors (`unpersist()` frees it), so later actions on it do not forecast again.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Hashable, Iterable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import torch

from moirai_cli.data import (
    DEFAULT_QUANTILE_LEVELS,
    ReadPlan,
    SeriesDataset,
    SeriesRecord,
    forecast_frame,
    load_dataset,
    plan_reading,
    quantile_column,
)
from moirai_cli.data.frames import FREQUENCY_SAMPLE_SERIES, parse_timestamps
from moirai_cli.data.layout import find_column
from moirai_cli.errors import InputError, ModelError, MoiraiError, check_at_least_one, first_line
from moirai_cli.evaluation.backtest import evaluate as evaluate_records
from moirai_cli.evaluation.backtest import has_backtest_history, summarise_windows, too_short_error
from moirai_cli.forecasting.pipeline import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MODEL,
    DEFAULT_NUM_SAMPLES,
    Forecast,
    MoiraiForecaster,
    load_forecaster_once,
)
from moirai_cli.forecasting.seeding import run_seed

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructType

SOURCE = "Spark DataFrame"  # how messages name the input
FUTURE_SOURCE = "future DataFrame"
SAMPLE_ROWS = 10_000  # first rows read on the driver to detect the columns' roles
SERIES_PER_CALL = 1024  # series a worker reads and forecasts at a time (as the command line does)
NOTE_KIND = "_moirai_note_kind"  # extra output columns, set only on a worker's note rows
NOTE_TEXT = "_moirai_note"
FUTURE_FLAG = "_moirai_future"  # marks the rows of future_df after the union with the history
ERROR, NO_OBSERVED, TOO_SHORT = "error", "no_observed", "too_short"


def forecast(
    df: "DataFrame",
    horizon: int,
    *,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    freq: str | None = None,
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    future_df: "DataFrame | pd.DataFrame | None" = None,
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    dtype: torch.dtype = torch.float32,
    num_samples: int | None = None,
    seed: int | None = None,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    patch_size: int | Literal["auto"] | None = None,
    batch_size: int = 32,
    decoding: Literal["exact", "cached"] = "exact",
    partitions: int | None = None,
    series_per_call: int = SERIES_PER_CALL,
) -> "DataFrame":
    """Forecast every series of a Spark DataFrame: `MoiraiForecaster.predict_df`'s columns, options and output, on Spark.

    The result has one row per series and future timestamp (and target, when multivariate):
    the id and timestamp columns as named in `df`, then `mean` and one float column per
    quantile level. `future_df` (Spark or pandas) holds the known covariates over the horizon.
    `model` is a Hub repo id or a checkpoint folder that every executor can read; `device`
    'auto' takes the task's GPU when Spark assigned one. A long table is spread over
    `partitions` partitions by id (default: one per core, `default_partitions`); a wide or
    single-series table is forecast by one task. Bad data raises InputError naming the series.
    """
    levels = _check_levels(quantile_levels)
    check_at_least_one(("horizon", horizon), ("num_samples", num_samples), ("series_per_call", series_per_call))
    if known_covariates and future_df is None:
        raise InputError("known covariates need future values: pass future_df")
    if future_df is not None and not known_covariates:
        raise InputError("future_df is only used with known_covariates")
    plan, _ = _plan(df, id_column, timestamp_column, target, freq, past_covariates, known_covariates)
    lay = plan.layout
    job = _Job(
        task="forecast",
        plan=plan,
        horizon=horizon,
        seed=run_seed(seed),
        model=_ModelSpec(model, revision, cache_dir, device, dtype),
        predict=dict(
            context_length=context_length, patch_size=patch_size, batch_size=batch_size, decoding=decoding
        ),
        num_samples=num_samples,
        series_per_call=series_per_call,
        quantile_levels=tuple(levels),
        with_future=future_df is not None,
    )
    data_types = _data_types(df)
    key_types: list[tuple[str, DataType]] = [
        (lay.id_column, data_types[lay.id_column]) if lay.id_column else ("item_id", _string()),
        (lay.timestamp_column, _timestamp_type(data_types[lay.timestamp_column])),
    ]
    if len(lay.target_names) > 1:
        key_types.append(("target", _string()))
    value_columns = ["mean", *(quantile_column(q) for q in levels)]
    schema = _schema(key_types + [(name, _float()) for name in value_columns])
    rows = _partitioned(df, plan, future_df, partitions)
    return _run(rows, job, schema)


def evaluate(
    df: "DataFrame",
    horizon: int,
    *,
    windows: int = 1,
    stride: int | None = None,
    season_length: int | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    freq: str | None = None,
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    dtype: torch.dtype = torch.float32,
    num_samples: int | None = None,
    seed: int | None = None,
    context_length: int = DEFAULT_CONTEXT_LENGTH,
    patch_size: int | Literal["auto"] | None = None,
    batch_size: int = 32,
    decoding: Literal["exact", "cached"] = "exact",
    partitions: int | None = None,
    series_per_call: int = SERIES_PER_CALL,
) -> "DataFrame":
    """Backtest every series of a Spark DataFrame as `moirai evaluate` does: its per-window metrics, as a Spark DataFrame.

    Each worker runs `moirai_cli.evaluation.evaluate` on its series, so the rows (one per series
    and window, and variate) and their columns are those of `moirai evaluate --output`.
    `summary(result)` gives the summary table. Known covariates come from `df` itself, as in a
    backtest. Series too short for the windows are skipped with a warning.
    """
    levels = _check_levels(quantile_levels)
    stride = horizon if stride is None else stride
    check_at_least_one(
        ("horizon", horizon), ("windows", windows), ("stride", stride), ("num_samples", num_samples),
        ("series_per_call", series_per_call), ("season_length", season_length),
    )
    plan, sample = _plan(df, id_column, timestamp_column, target, freq, past_covariates, known_covariates)
    job = _Job(
        task="evaluate",
        plan=plan,
        horizon=horizon,
        seed=run_seed(seed),
        model=_ModelSpec(model, revision, cache_dir, device, dtype),
        predict=dict(
            context_length=context_length, patch_size=patch_size, batch_size=batch_size, decoding=decoding
        ),
        num_samples=num_samples,
        series_per_call=series_per_call,
        quantile_levels=tuple(levels),
        windows=windows,
        stride=stride,
        season_length=season_length,
    )
    data_types = _data_types(df)
    sample_id = _first_id(sample, plan)
    per_window = _backtest_rows(job, _schema_records(plan, job, sample_id), _ShapeOnlyForecaster())
    timestamp_type = _timestamp_type(data_types[plan.layout.timestamp_column])
    schema = _schema([(name, _spark_type(per_window[name], timestamp_type)) for name in per_window.columns])
    rows = _partitioned(df, plan, None, partitions)
    return _run(rows, job, schema)


def summary(per_window: "DataFrame | pd.DataFrame") -> pd.DataFrame:
    """The summary table of `evaluate`'s per-window rows, as `moirai evaluate` prints it (collected on the driver).

    One row per metric: the model's and the seasonal-naive baseline's aggregate and their relative error.
    """
    frame = per_window if isinstance(per_window, pd.DataFrame) else per_window.toPandas()
    keys = [frame.columns[0]] + (["target"] if "target" in frame.columns else [])  # the id column comes first
    return summarise_windows(frame, keys)


# --- The driver's side ---


def _check_levels(levels: Sequence[float]) -> list[float]:
    """Quantile levels as floats strictly between 0 and 1, or InputError."""
    try:
        values = [float(q) for q in levels]
    except (TypeError, ValueError):
        raise InputError(f"quantile_levels: {list(levels)!r} are not numbers") from None
    outside = [q for q in values if not 0 < q < 1]
    if outside:
        raise InputError(f"quantile_levels: {outside[0]} is not strictly between 0 and 1")
    return values


def _plan(
    df: "DataFrame",
    id_column: str | None,
    timestamp_column: str | None,
    target: Sequence[str] | str,
    freq: str | None,
    past_covariates: Sequence[str],
    known_covariates: Sequence[str],
) -> tuple[ReadPlan, pd.DataFrame]:
    """Column roles from the first rows and the frequency from the first series' rows, settled once on the driver.

    Returns the plan and those first rows (collected once)."""
    sample = df.limit(SAMPLE_ROWS).toPandas()

    def series_rows(layout) -> pd.DataFrame:
        """Every row (id and timestamp) of the first series in the sample; a wide or single table's timestamps."""
        ts = layout.timestamp_column
        if layout.id_column is None:
            return df.select(_col(ts)).toPandas()
        ids = pd.unique(sample[layout.id_column].dropna())[:FREQUENCY_SAMPLE_SERIES].tolist()
        rows = df.where(_col(layout.id_column).isin(ids)).select(_col(layout.id_column), _col(ts))
        rows = rows.orderBy(_col(layout.id_column), _col(ts)).toPandas()
        try:
            rows[ts] = parse_timestamps(rows[ts], SOURCE, ts)  # parsed once: the frequency is read from these
        except InputError as exc:
            raise _name_failing_series(rows, layout.id_column, lambda part, src: parse_timestamps(part[ts], src, ts), exc)
        return rows

    plan = plan_reading(
        sample,
        series_rows=series_rows,
        source=SOURCE,
        id_column=id_column,
        timestamp_column=timestamp_column,
        target=target,
        freq=freq,
        past_covariates=past_covariates,
        known_covariates=known_covariates,
    )
    return plan, sample


def _partitioned(df: "DataFrame", plan: ReadPlan, future_df: Any, partitions: int | None) -> "DataFrame":
    """The plan's columns (and the future rows, flagged), each series in one partition, sorted by id and timestamp."""
    from pyspark.sql import functions as F

    lay = plan.layout
    rows = df.select(*(_col(c) for c in plan.columns))
    if future_df is not None:
        rows = rows.withColumn(FUTURE_FLAG, F.lit(False)).unionByName(
            _future_rows(df, future_df, plan), allowMissingColumns=True
        )
    if lay.id_column is None:  # a wide or single table is read whole by one task, as locally
        return rows.repartition(1)
    by_id = rows.repartition(partitions or default_partitions(df.sparkSession), _col(lay.id_column))
    return by_id.sortWithinPartitions(_col(lay.id_column), _col(lay.timestamp_column))


def default_partitions(session: Any) -> int:
    """One partition per core of the cluster (Spark's default parallelism), else the shuffle partitions.

    Each partition costs a task (tens of milliseconds on a quiet machine, benchmarks/README.md)
    and a worker forecasts its partition's series in batches, so few, large partitions are best.
    The number must be set: a cached result keeps its plan's partitions, which adaptive query
    execution does not merge, and Spark's default of 200 shuffle partitions would cost 200 tasks.
    """
    try:
        return int(session.sparkContext.defaultParallelism)
    except Exception:  # Spark Connect has no SparkContext
        return int(session.conf.get("spark.sql.shuffle.partitions"))


def _future_rows(df: "DataFrame", future_df: Any, plan: ReadPlan) -> "DataFrame":
    """future_df's id, timestamp and known-covariate columns, named and typed as in `df`, flagged as future."""
    from pyspark.sql import functions as F

    if isinstance(future_df, pd.DataFrame):
        future_df = df.sparkSession.createDataFrame(future_df)
    lay = plan.layout
    names = pd.DataFrame(columns=future_df.columns)  # find_column matches names as the file reader does
    types = _data_types(df)
    wanted = [c for c in (lay.id_column, lay.timestamp_column) if c] + list(lay.known_covariates)
    columns = [
        _col(find_column(names, c, FUTURE_SOURCE)).cast(types[c]).alias(c) for c in wanted
    ]
    return future_df.select(*columns).withColumn(FUTURE_FLAG, F.lit(True))


def _run(rows: "DataFrame", job: "_Job", schema: "StructType") -> "DataFrame":
    """Run the workers, raise the first error they noted, warn about skipped series; the result, cached."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    with_notes = StructType([*schema.fields, StructField(NOTE_KIND, StringType()), StructField(NOTE_TEXT, StringType())])
    raw = rows.mapInPandas(partial(_worker, job, [f.name for f in with_notes.fields]), with_notes)
    raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        notes = raw.where(F.col(NOTE_KIND).isNotNull()).select(NOTE_KIND, NOTE_TEXT).collect()  # runs the job
        _raise_first_error([n[NOTE_TEXT] for n in notes if n[NOTE_KIND] == ERROR])
        skipped = {kind: _merge_skipped([n[NOTE_TEXT] for n in notes if n[NOTE_KIND] == kind]) for kind in (NO_OBSERVED, TOO_SHORT)}
        result = raw.where(F.col(NOTE_KIND).isNull()).drop(NOTE_KIND, NOTE_TEXT).persist(StorageLevel.MEMORY_AND_DISK)
        if result.count() == 0:
            result.unpersist()
            if skipped[TOO_SHORT][0]:
                raise too_short_error(job.horizon, job.windows, job.stride)
            raise InputError(f"{SOURCE}: no series has an observed target value")
    finally:
        raw.unpersist()
    for kind, reason in ((NO_OBSERVED, "with no observed target value"), (TOO_SHORT, "too short for the windows")):
        count, ids = skipped[kind]
        if count:
            shown = ", ".join(f"'{i}'" for i in ids) + (", ..." if count > len(ids) else "")
            warnings.warn(f"{SOURCE}: skipped {count} series {reason}: {shown}", stacklevel=3)
    return result


def _raise_first_error(errors: list[str]) -> None:
    """Raise the first (in sorted order, so always the same) error a worker noted, as InputError or ModelError."""
    if not errors:
        return
    code, message = sorted(errors)[0].split("\t", 1)
    if len(errors) > 1:
        message += f" (and errors in {len(errors) - 1} more partition(s))"
    raise (InputError if code == str(InputError.exit_code) else ModelError)(message)


def _merge_skipped(notes: list[str], shown: int = 10) -> tuple[int, list[str]]:
    """(number of skipped series, the first few ids) from the workers' skip notes."""
    parsed = [json.loads(note) for note in notes]
    ids = sorted(i for p in parsed for i in p["ids"])[:shown]
    return sum(p["count"] for p in parsed), ids


def _first_id(sample: pd.DataFrame, plan: ReadPlan) -> Hashable:
    """A series id as the workers will see it (for the output schema); a wide or single table's is a column name."""
    lay = plan.layout
    if lay.id_column is None:
        return lay.targets[0]
    return sample[lay.id_column].dropna().iloc[0]


def _schema_records(plan: ReadPlan, job: "_Job", item_id: Hashable) -> list[SeriesRecord]:
    """One made-up series shaped like the table's (long enough for the windows): backtesting it gives the output's columns."""
    lay = plan.layout
    length = job.horizon + (job.windows - 1) * job.stride + 2 * (job.season_length or 1) + 2
    rng = np.random.default_rng(0)
    columns = lambda n: rng.normal(size=(length, n)).astype(np.float32) if n else None  # noqa: E731
    return [
        SeriesRecord(
            item_id=item_id,
            timestamps=pd.date_range("2000-01-01", periods=length, freq=plan.freq),
            target=columns(len(lay.target_names)),
            past_covariates=columns(len(lay.past_covariates)),
            known_covariates=columns(len(lay.known_covariates)),
        )
    ]


@dataclass
class _ShapeOnlyForecaster:
    """Stands in for the model when the driver backtests a made-up series to learn the output's columns."""

    def predict(self, target: Sequence[np.ndarray], horizon: int, *, num_samples: int = DEFAULT_NUM_SAMPLES, **_: Any) -> Forecast:
        variates = np.asarray(target[0]).reshape(len(target[0]), -1).shape[1]
        return Forecast(np.zeros((len(target), num_samples, horizon, variates), dtype=np.float32))


def _col(name: str):
    """A Spark column by its exact name (dots and spaces included)."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _data_types(df: "DataFrame") -> dict[str, "DataType"]:
    return {f.name: f.dataType for f in df.schema.fields}


def _schema(columns: list[tuple[str, "DataType"]]) -> "StructType":
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(name, data_type, nullable=True) for name, data_type in columns])


def _string() -> "DataType":
    from pyspark.sql.types import StringType

    return StringType()


def _float() -> "DataType":
    from pyspark.sql.types import FloatType

    return FloatType()


def _timestamp_type(input_type: "DataType") -> "DataType":
    """Output timestamps: with the session's time zone when the input's are (TimestampType), else wall-clock (NTZ)."""
    from pyspark.sql.types import TimestampNTZType, TimestampType

    return TimestampType() if isinstance(input_type, TimestampType) else TimestampNTZType()


def _spark_type(values: pd.Series, timestamp_type: "DataType") -> "DataType":
    """The Spark type of a pandas column of a worker's output."""
    from pyspark.sql import types as T

    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return T.BooleanType()
    if pd.api.types.is_integer_dtype(dtype):
        return T.LongType()
    if pd.api.types.is_float_dtype(dtype):
        return T.FloatType() if dtype == np.float32 else T.DoubleType()
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return timestamp_type
    present = values.dropna()
    first = present.iloc[0] if len(present) else ""
    if isinstance(first, (bool, np.bool_)):
        return T.BooleanType()
    if isinstance(first, (int, np.integer)):
        return T.LongType()
    if isinstance(first, (float, np.floating)):
        return T.DoubleType()
    if isinstance(first, pd.Timestamp):
        return timestamp_type
    return T.StringType()


# --- The workers' side ---


@dataclass(frozen=True)
class _ModelSpec:
    """Which checkpoint every worker loads, and on which device."""

    name: str
    revision: str | None
    cache_dir: str | None
    device: str
    dtype: torch.dtype

    def load(self) -> MoiraiForecaster:
        """This process's forecaster, on the task's GPU when Spark assigned one; failures as one-line ModelError."""
        device = self.device
        if device in ("auto", "cuda"):
            from pyspark import TaskContext

            context = TaskContext.get()
            gpus = context.resources().get("gpu") if context is not None else None
            if gpus is not None and gpus.addresses:
                device = f"cuda:{gpus.addresses[0]}"
        try:
            return load_forecaster_once(self.name, revision=self.revision, cache_dir=self.cache_dir, device=device, dtype=self.dtype)
        except MoiraiError:
            raise
        except Exception as exc:
            raise ModelError(f"cannot load model '{self.name}' on a Spark executor: {first_line(exc)}") from exc


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs, settled on the driver and shipped with the task."""

    task: Literal["forecast", "evaluate"]
    plan: ReadPlan
    horizon: int
    seed: int
    model: _ModelSpec
    predict: dict[str, Any] = field(hash=False)
    num_samples: int | None  # None: the family's default (Moirai 2.0 predicts quantiles, no samples)
    series_per_call: int
    quantile_levels: tuple[float, ...]
    with_future: bool = False
    windows: int = 1
    stride: int = 1
    season_length: int | None = None


def _worker(job: _Job, columns: list[str], batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: forecast (or backtest) the partition's series a chunk at a time; problems become note rows."""
    skipped: dict[str, list[Hashable]] = {NO_OBSERVED: [], TOO_SHORT: []}
    forecaster: MoiraiForecaster | None = None
    try:
        for chunk in _series_chunks(batches, job.plan.layout.id_column, job.series_per_call):
            dataset = _read_chunk(job, chunk)
            skipped[NO_OBSERVED].extend(dataset.skipped)
            if not dataset.series:
                continue
            forecaster = forecaster or job.model.load()
            if job.task == "forecast":
                result = forecaster.predict_dataset(dataset, job.horizon, num_samples=job.num_samples, seed=job.seed, **job.predict)
                out = forecast_frame(dataset, result, job.quantile_levels)
            else:
                usable = [has_backtest_history(r.target, job.horizon, job.windows, job.stride) for r in dataset.series]
                skipped[TOO_SHORT].extend(r.item_id for r, ok in zip(dataset.series, usable) if not ok)
                if not any(usable):
                    continue
                out = _backtest_rows(job, [r for r, ok in zip(dataset.series, usable) if ok], forecaster)
            if list(out.columns) != columns[:-2]:  # the schema was built from the same library functions
                raise RuntimeError(f"worker output columns {list(out.columns)} differ from the schema's {columns[:-2]}")
            yield out.assign(**{NOTE_KIND: None, NOTE_TEXT: None})  # None, not NaN: string columns
    except MoiraiError as exc:
        yield _note(columns, ERROR, f"{exc.exit_code}\t{first_line(exc)}")
        return
    for kind, ids in skipped.items():
        if ids:
            yield _note(columns, kind, json.dumps({"count": len(ids), "ids": sorted(str(i) for i in ids)[:10]}))


def _backtest_rows(job: _Job, records: Sequence[SeriesRecord], forecaster: Any) -> pd.DataFrame:
    """`moirai_cli.evaluation.evaluate`'s per-window rows for these series (as `moirai evaluate` calls it)."""
    result = evaluate_records(
        forecaster,
        records,
        job.horizon,
        windows=job.windows,
        stride=job.stride,
        freq=job.plan.freq,
        season_length=job.season_length,
        quantile_levels=job.quantile_levels,
        num_samples=job.num_samples,
        seed=job.seed,
        target_names=job.plan.layout.target_names,
        **job.predict,
    )
    return result.per_window


def _note(columns: list[str], kind: str, text: str) -> pd.DataFrame:
    """One note row: every output column empty but the note's kind and text."""
    row = {name: [None] for name in columns}
    row[NOTE_KIND], row[NOTE_TEXT] = [kind], [text]
    return pd.DataFrame(row, columns=columns)


def _series_chunks(batches: Iterable[pd.DataFrame], id_column: str | None, size: int) -> Iterator[pd.DataFrame]:
    """Frames of whole series, `size` or more at a time, from a partition's row batches sorted by id.

    A series can straddle two batches: the rows of the last id of a batch wait for the next one.
    Without an id column (a wide or single table) the whole partition is one frame.
    """
    if id_column is None:
        frames = [b for b in batches if len(b)]
        if frames:
            yield pd.concat(frames, ignore_index=True)
        return
    ready: list[pd.DataFrame] = []
    count = 0
    pending: pd.DataFrame | None = None
    for batch in batches:
        frame = batch if pending is None else pd.concat([pending, batch], ignore_index=True)
        if not len(frame):
            continue
        ids = frame[id_column]
        last = ids.iloc[-1]
        tail = (ids.isna() if pd.isna(last) else ids == last).to_numpy()  # the last id's rows end the batch
        complete, pending = frame[~tail], frame[tail]
        if len(complete):
            ready.append(complete)
            count += complete[id_column].nunique(dropna=False)
        if count >= size:
            yield pd.concat(ready, ignore_index=True)
            ready, count = [], 0
    if pending is not None and len(pending):
        ready.append(pending)
    if ready:
        yield pd.concat(ready, ignore_index=True)


def _read_chunk(job: _Job, chunk: pd.DataFrame) -> SeriesDataset:
    """load_dataset with the driver's plan; an error in one series names it."""
    id_column = job.plan.layout.id_column

    def read(rows: pd.DataFrame, source: str) -> SeriesDataset:
        history, future = rows, None
        if job.with_future:
            flags = rows[FUTURE_FLAG].fillna(False).to_numpy(dtype=bool)
            history, future = rows[~flags].drop(columns=FUTURE_FLAG), rows[flags].drop(columns=FUTURE_FLAG)
        return load_dataset(
            history.reset_index(drop=True),
            source=source,
            future=future.reset_index(drop=True) if future is not None else None,
            horizon=job.horizon if job.with_future else None,
            require_series=False,
            **job.plan.read_options(),
        )

    try:
        return read(chunk, SOURCE)
    except InputError as exc:
        if id_column is None:
            raise
        raise _name_failing_series(chunk, id_column, read, exc) from None


def _name_failing_series(rows: pd.DataFrame, id_column: str, attempt: Any, error: InputError) -> InputError:
    """The error of the first series that fails `attempt(its rows, source naming it)` on its own, else `error`.

    Row numbers in the message count that series' rows in timestamp order.
    """
    for item_id, part in rows.groupby(id_column, sort=False, dropna=False):
        source = SOURCE if pd.isna(item_id) else f"{SOURCE}, series '{item_id}'"
        try:
            attempt(part.reset_index(drop=True), source)
        except InputError as narrowed:
            return narrowed
    return error
