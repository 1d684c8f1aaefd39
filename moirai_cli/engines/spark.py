"""Forecast and backtest Spark DataFrames (needs the `spark` extra: pyspark).

    >>> from moirai_cli import spark as moirai_spark
    >>> forecast = moirai_spark.forecast(sales, horizon=28, model="Salesforce/moirai-moe-1.0-R-small", seed=0)

An adapter over the library's own procedure, not a second copy of it. The driver builds the job
(`ForecastJob` / `BacktestJob`: every option validated once) and settles how the table is read once,
from a sample (the columns' roles and the frequency: `moirai_cli.data.plan_reading`), and the seed.
The rows are then spread over partitions by series id and sorted within each, and `mapInPandas` hands
each partition's rows, as pandas frames, to a worker, which reads complete series from them a chunk at
a time with `load_dataset` and runs `run_chunk` on each. The model is loaded once per Python worker
process. Each series draws its samples from its own random stream (seed and id), so the forecast equals
`moirai forecast`'s and `predict_df`'s with the same seed, whatever the partitioning.

A worker that meets bad data does not raise inside Spark (which would retry the task and bury the
message in a Java stack trace): it returns one error row, and the driver raises the first error as
one line that names the series (see `moirai_cli.engines.transport`). `forecast` and `evaluate`
therefore run their Spark job when called; the result is cached on the executors (`unpersist()` frees
it), so later actions on it do not forecast again.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import TYPE_CHECKING, Any, Hashable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd

from moirai_cli.data import ReadPlan, SeriesDataset, SeriesRecord, load_dataset, plan_reading, quantile_column
from moirai_cli.data.frames import FREQUENCY_SAMPLE_SERIES, parse_timestamps
from moirai_cli.data.layout import find_column
from moirai_cli.engines import transport
from moirai_cli.errors import InputError, MoiraiError, check_at_least_one
from moirai_cli.evaluation.backtest import summarise_windows, too_short_error
from moirai_cli.evaluation.procedure import PER_WINDOW, backtest_chunk, run_chunk
from moirai_cli.forecasting.job import BacktestJob, ForecastJob, ModelSpec
from moirai_cli.forecasting.pipeline import DEFAULT_NUM_SAMPLES, Forecast, MoiraiForecaster, load_forecaster_once
from moirai_cli.forecasting.procedure import FORECAST, report_to_python
from moirai_cli.runtime import use_threads

if TYPE_CHECKING:
    from pyspark.sql import DataFrame
    from pyspark.sql.types import DataType, StructType

SOURCE = "Spark DataFrame"  # how messages name the input
FUTURE_SOURCE = "future DataFrame"
SAMPLE_ROWS = 10_000  # first rows read on the driver to detect the columns' roles
SERIES_PER_CALL = 1024  # series a worker reads and forecasts at a time (as the command line does)
FUTURE_FLAG = "_moirai_future"  # marks the rows of future_df after the union with the history


def forecast(
    df: "DataFrame",
    horizon: int,
    *,
    future_df: "DataFrame | pd.DataFrame | None" = None,
    partitions: int | None = None,
    series_per_call: int = SERIES_PER_CALL,
    **options: Any,
) -> "DataFrame":
    """Forecast every series of a Spark DataFrame: `MoiraiForecaster.predict_df`'s options and output, on Spark.

    `options` are those of `ForecastJob.build` (model, revision, cache_dir, device, dtype, id_column, target,
    freq, past_covariates, known_covariates, dayfirst, date_format, inf_as_missing, context_length,
    num_samples, quantile_levels, patch_size, decoding, batch_size, token_budget, seed, threads). The
    result has one row per series and future timestamp (and target, when multivariate): the id and
    timestamp columns as named in `df`, then `mean` and one double column per quantile level.
    `future_df` (Spark or pandas) holds the known covariates over the horizon. `model` is a Hub repo id or
    a checkpoint folder that every executor can read; `device` 'auto' takes the task's GPU when Spark
    assigned one. A long table is spread over `partitions` partitions by id (default: one per core,
    `default_partitions`); a wide or single-series table is forecast by one task. Bad data raises
    InputError naming the series.
    """
    job = ForecastJob.build(horizon, future=future_df, **options)
    check_at_least_one(("series_per_call", series_per_call))
    reading, _ = _plan(df, job)
    lay = reading.layout
    data_types = _data_types(df)
    key_types: list[tuple[str, DataType]] = [
        (lay.id_column, data_types[lay.id_column]) if lay.id_column else ("item_id", _string()),
        (lay.timestamp_column, _timestamp_type(data_types[lay.timestamp_column])),
    ]
    if len(lay.target_names) > 1:
        key_types.append(("target", _string()))
    value_columns = ["mean", *(quantile_column(q) for q in job.predict.quantile_levels)]
    schema = _schema(key_types + [(name, _double()) for name in value_columns])
    rows = _partitioned(df, reading, future_df, partitions)
    return _run(rows, _WorkerJob(_shipped(job), reading, series_per_call, future_df is not None), schema, FORECAST)


def evaluate(
    df: "DataFrame", horizon: int, *, partitions: int | None = None, series_per_call: int = SERIES_PER_CALL, **options: Any
) -> "DataFrame":
    """Backtest every series of a Spark DataFrame as `moirai evaluate` does: its per-window metrics, as a Spark DataFrame.

    `options` are those of `BacktestJob.build`: `forecast`'s (but future values) and windows, stride and
    season_length. Each worker backtests its series with the same procedure as `moirai evaluate`, so the
    rows (one per series and window, and variate) and their columns are those of `moirai evaluate --output`.
    `summary(result)` gives the summary table. Known covariates come from `df` itself, as in a backtest.
    Series too short for the windows are skipped with a warning.
    """
    job = BacktestJob.build(horizon, **options)
    check_at_least_one(("series_per_call", series_per_call))
    reading, sample = _plan(df, job)
    data_types = _data_types(df)
    shape = backtest_chunk(_ShapeOnlyForecaster(), _schema_dataset(reading, job, _first_id(sample, reading)), job)
    per_window = shape.tables[PER_WINDOW]
    timestamp_type = _timestamp_type(data_types[reading.layout.timestamp_column])
    schema = _schema([(name, _spark_type(per_window[name], timestamp_type)) for name in per_window.columns])
    rows = _partitioned(df, reading, None, partitions)
    return _run(rows, _WorkerJob(_shipped(job), reading, series_per_call, False), schema, PER_WINDOW)


def summary(per_window: "DataFrame | pd.DataFrame") -> pd.DataFrame:
    """The summary table of `evaluate`'s per-window rows, as `moirai evaluate` prints it (collected on the driver).

    One row per metric: the model's and the seasonal-naive baseline's aggregate and their relative error.
    """
    frame = per_window if isinstance(per_window, pd.DataFrame) else per_window.toPandas()
    keys = [frame.columns[0]] + (["target"] if "target" in frame.columns else [])  # the id column comes first
    return summarise_windows(frame, keys)


# --- The driver's side ---


def _shipped(job: ForecastJob) -> ForecastJob:
    """The job as workers get it: its seed settled, and without the future DataFrame (its rows travel in the partitions)."""
    return dataclasses.replace(job, read=dataclasses.replace(job.read, future=None)).with_run_seed()


def _plan(df: "DataFrame", job: ForecastJob) -> tuple[ReadPlan, pd.DataFrame]:
    """Column roles from the first rows and the frequency from the first series' rows, settled once on the driver.

    Returns the plan and those first rows (collected once)."""
    sample = df.limit(SAMPLE_ROWS).toPandas()
    values = job.read.values

    def series_rows(layout) -> pd.DataFrame:
        """Every row (id and timestamp) of the first series in the sample; a wide or single table's timestamps."""
        ts = layout.timestamp_column
        if layout.id_column is None:
            return df.select(_col(ts)).toPandas()
        ids = pd.unique(sample[layout.id_column].dropna())[:FREQUENCY_SAMPLE_SERIES].tolist()
        rows = df.where(_col(layout.id_column).isin(ids)).select(_col(layout.id_column), _col(ts))
        rows = rows.orderBy(_col(layout.id_column), _col(ts)).toPandas()
        parse = lambda part, src: parse_timestamps(part[ts], src, ts, dayfirst=values["dayfirst"], date_format=values["date_format"])  # noqa: E731
        try:
            rows[ts] = parse(rows, SOURCE)  # parsed once: the frequency is read from these
        except InputError as exc:
            raise _name_failing_series(rows, layout.id_column, parse, exc)
        return rows

    return plan_reading(sample, series_rows=series_rows, source=SOURCE, **job.read.table), sample


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


def _run(rows: "DataFrame", work: "_WorkerJob", schema: "StructType", table: str) -> "DataFrame":
    """Run the workers, raise the first error they sent, warn about what they found; the result, cached."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType

    with_notes = StructType([*schema.fields, *(StructField(name, StringType()) for name in transport.NOTE_COLUMNS)])
    raw = rows.mapInPandas(partial(_worker, work, table, [f.name for f in schema.fields]), with_notes)
    raw = raw.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        kind, text = transport.NOTE_COLUMNS
        notes = raw.where(F.col(kind).isNotNull()).select(kind, text).collect()  # runs the job
        transport.raise_first_error([n[text] for n in notes], [n[kind] for n in notes])
        found = transport.merge_notes(n[text] for n in notes if n[kind] == transport.CHUNK)
        result = raw.where(F.col(kind).isNull()).drop(*transport.NOTE_COLUMNS).persist(StorageLevel.MEMORY_AND_DISK)
        if found.series == 0:
            result.unpersist()
            if found.too_short:
                raise too_short_error(work.job.horizon, work.job.windows, work.job.step)
            raise InputError(f"{SOURCE}: no series has an observed target value")
    finally:
        raw.unpersist()
    report_to_python(found, SOURCE)
    return result


def _first_id(sample: pd.DataFrame, plan: ReadPlan) -> Hashable:
    """A series id as the workers will see it (for the output schema); a wide or single table's is a column name."""
    lay = plan.layout
    if lay.id_column is None:
        return lay.targets[0]
    return sample[lay.id_column].dropna().iloc[0]


def _schema_dataset(plan: ReadPlan, job: BacktestJob, item_id: Hashable) -> SeriesDataset:
    """One made-up series shaped like the table's (long enough for the windows): backtesting it gives the output's columns."""
    lay = plan.layout
    length = job.horizon + (job.windows - 1) * job.step + 2 * (job.season_length or 1) + 2
    rng = np.random.default_rng(0)
    columns = lambda n: rng.normal(size=(length, n)).astype(np.float32) if n else None  # noqa: E731
    record = SeriesRecord(
        item_id=item_id,
        timestamps=pd.date_range("2000-01-01", periods=length, freq=plan.freq),
        target=columns(len(lay.target_names)),
        past_covariates=columns(len(lay.past_covariates)),
        known_covariates=columns(len(lay.known_covariates)),
    )
    return SeriesDataset([record], plan.freq, lay, SOURCE)


@dataclasses.dataclass
class _ShapeOnlyForecaster:
    """Stands in for the model when the driver backtests a made-up series to learn the output's columns."""

    family_title: str = "shape"
    output_kind: str = "samples"

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


def _double() -> "DataType":
    from pyspark.sql.types import DoubleType

    return DoubleType()


def _timestamp_type(input_type: "DataType") -> "DataType":
    """Output timestamps: with the session's time zone when the input's are (TimestampType), else wall-clock (NTZ)."""
    from pyspark.sql.types import TimestampNTZType, TimestampType

    return TimestampType() if isinstance(input_type, TimestampType) else TimestampNTZType()


def _spark_type(values: pd.Series, timestamp_type: "DataType") -> "DataType":
    """The Spark type of a pandas column of a worker's output (every float a double: nothing is rounded)."""
    from pyspark.sql import types as T

    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return T.BooleanType()
    if pd.api.types.is_integer_dtype(dtype):
        return T.LongType()
    if pd.api.types.is_float_dtype(dtype):
        return T.DoubleType()
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


@dataclasses.dataclass(frozen=True)
class _WorkerJob:
    """Everything a worker needs, settled on the driver and shipped with the task."""

    job: ForecastJob
    plan: ReadPlan
    series_per_call: int
    with_future: bool = False


def executor_forecaster(spec: ModelSpec) -> MoiraiForecaster:
    """This process's forecaster, on the task's GPU when Spark assigned one (device auto or cuda)."""
    device = spec.device
    if device in ("auto", "cuda"):
        from pyspark import TaskContext

        context = TaskContext.get()
        gpus = context.resources().get("gpu") if context is not None else None
        if gpus is not None and gpus.addresses:
            device = f"cuda:{gpus.addresses[0]}"
    return load_forecaster_once(spec, device=device)


def _worker(work: _WorkerJob, table: str, columns: list[str], batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """mapInPandas body: run the procedure on the partition's series a chunk at a time; problems become note rows."""
    forecaster: MoiraiForecaster | None = None
    try:
        for chunk in _series_chunks(batches, work.plan.layout.id_column, work.series_per_call):
            dataset = _read_chunk(work, chunk)
            if dataset.series and forecaster is None:
                if work.job.predict.threads is not None:
                    use_threads(work.job.predict.threads)
                forecaster = executor_forecaster(work.job.model)
            yield from transport.spark_rows(run_chunk(forecaster, dataset, work.job), table, columns)
    except MoiraiError as exc:
        yield transport.error_rows(exc, columns)


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


def _read_chunk(work: _WorkerJob, chunk: pd.DataFrame) -> SeriesDataset:
    """load_dataset with the driver's plan; an error in one series names it."""
    id_column = work.plan.layout.id_column
    horizon = work.job.horizon

    def read(rows: pd.DataFrame, source: str) -> SeriesDataset:
        history, future = rows, None
        if work.with_future:
            flags = rows[FUTURE_FLAG].fillna(False).to_numpy(dtype=bool)
            history, future = rows[~flags].drop(columns=FUTURE_FLAG), rows[flags].drop(columns=FUTURE_FLAG)
        return load_dataset(
            history.reset_index(drop=True),
            source=source,
            future=future.reset_index(drop=True) if future is not None else None,
            horizon=horizon if work.with_future else None,
            require_series=False,
            **work.plan.read_options(),
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


__all__ = ["default_partitions", "evaluate", "executor_forecaster", "forecast", "summary"]
