"""Forecast many series on a Ray cluster: Ray Data moves whole series to a pool of actors, each of which
loads the model once and runs the same `MoiraiForecaster.predict_dataset` as the local engine.

Two ways to keep every series whole on one worker:

- the input's own partitioning, when each file holds whole series (grouped by id, no id in two files):
  each file goes to one actor, which streams it with `iter_series_chunks` a chunk of series at a time;
- otherwise a hash shuffle on the id with Ray Data's operators: rows get a bucket from a stable hash
  of their id and `groupby(bucket).map_groups` hands each bucket, whole series only, to an actor.

Column roles and frequency are settled once on the driver (`plan_reading`) and the seed drawn once
there, so every worker reads the table the same way and a series' samples do not depend on which worker
forecast it: with a seed, the output equals `--engine local`'s. Ray retries the work of an actor whose
process dies (actors restart, their tasks are rerun), so no series is lost or written twice.

    >>> import ray
    >>> from moirai_cli.distributed import forecast_dataset
    >>> rows = ray.data.read_parquet("s3://bucket/sales/")  # long layout: id, timestamp, target
    >>> forecasts = forecast_dataset(rows, horizon=24, model="Salesforce/moirai-moe-1.0-R-small", seed=0)
    >>> forecasts.write_parquet("s3://bucket/forecasts/")
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from moirai_cli.data import (
    DEFAULT_QUANTILE_LEVELS,
    DataSource,
    ReadPlan,
    Layout,
    check_rows,
    SeriesDataset,
    forecast_frame,
    iter_series_chunks,
    load_dataset,
    read_pieces,
    plan_reading,
    scan_series_ids,
)
from moirai_cli.errors import InputError, MoiraiError, first_line
from moirai_cli.forecasting.pipeline import DEFAULT_MODEL, DTYPES, load_forecaster_once
from moirai_cli.forecasting.seeding import run_seed

if TYPE_CHECKING:
    import ray.data

RAY_INSTALL_HINT = "the Ray engine needs Ray Data: pip install 'moirai-cli[ray]'"
ROWS_PER_BUCKET = 262_144  # rows a shuffled bucket holds on average: what one actor holds in memory at a time
ROWS_PER_READ = 65_536  # rows read at a time from a file
SERIES_PER_CHUNK = 1024  # series forecast at a time from a file that holds whole series
BUCKET_COLUMN = "__moirai_bucket"
FILE_COLUMN = "__moirai_file"
SKIPPED_COLUMN = "__moirai_skipped"  # marks the row that reports a series with no observed value


def import_ray():
    """The ray module, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MoiraiError(RAY_INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class ForecastJob:
    """Everything a worker needs to forecast a part of a table exactly as the local engine would."""

    horizon: int
    reading: ReadPlan  # the columns' roles and the frequency, settled on the driver
    seed: int  # drawn once on the driver when the user gave none
    model: str = DEFAULT_MODEL
    revision: str | None = None
    cache_dir: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    quantile_levels: tuple[float, ...] = DEFAULT_QUANTILE_LEVELS
    predict_options: dict[str, Any] = field(default_factory=dict)  # num_samples, context_length, batch_size, ...
    future: str | None = None  # file or URI with the known covariates over the horizon (read by each worker)

    def future_options(self) -> dict[str, Any]:
        """The future file and the horizon it covers, as arguments of load_dataset / iter_series_chunks."""
        return {"future": self.future, "horizon": self.horizon if self.reading.layout.known_covariates else None}


class _Forecasting:
    """The model of one worker process, loaded once, and the step shared by both ways of splitting the work."""

    def __init__(self, job: ForecastJob) -> None:
        self.job = job
        dtype = DTYPES[job.dtype]
        self.forecaster = load_forecaster_once(job.model, revision=job.revision, cache_dir=job.cache_dir, device=job.device, dtype=dtype)

    def forecast(self, dataset: SeriesDataset) -> pd.DataFrame:
        """Forecast rows of a batch of whole series, then one marker row per skipped series."""
        job = self.job
        frames = []
        if dataset.series:
            result = self.forecaster.predict_dataset(dataset, job.horizon, seed=job.seed, **job.predict_options)
            frames.append(forecast_frame(dataset, result, job.quantile_levels).assign(**{SKIPPED_COLUMN: False}))
        if dataset.skipped:
            frames.append(pd.DataFrame({dataset.id_column: pd.Series(dataset.skipped, dtype=object), SKIPPED_COLUMN: True}))
        if not frames:
            return pd.DataFrame({SKIPPED_COLUMN: pd.Series([], dtype=bool)})
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


class FileForecaster(_Forecasting):
    """Actor for a file that holds whole series: streams it `SERIES_PER_CHUNK` series at a time, as the local engine does."""

    def __init__(self, job: ForecastJob, source: DataSource) -> None:
        super().__init__(job)
        self.source = source

    def __call__(self, batch: pd.DataFrame) -> Iterator[pd.DataFrame]:
        reading = self.job.reading
        for index in batch[FILE_COLUMN].tolist():
            file = self.source.files[int(index)]
            chunks = iter_series_chunks(
                dataclasses.replace(self.source, files=[file]),
                chunk_size=SERIES_PER_CHUNK,
                layout=reading.layout,
                freq=reading.freq,
                known_covariates=reading.layout.known_covariates,
                rows_per_read=ROWS_PER_READ,
                require_series=False,  # a file of series with no observed value: the driver decides
                freq_inferred=reading.freq_inferred,
                **reading.value_options(),
                **self.job.future_options(),
            )
            for chunk in chunks:
                yield self.forecast(chunk)


class BucketForecaster(_Forecasting):
    """Actor for one shuffled bucket: the rows of whole series, from any files, read as the driver settled."""

    def __init__(self, job: ForecastJob, source_label: str) -> None:
        super().__init__(job)
        self.source_label = source_label

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        table = rows.drop(columns=[BUCKET_COLUMN]).reset_index(drop=True)
        reading = self.job.reading
        dataset = load_dataset(
            table, source=self.source_label, require_series=False, **reading.read_options(), **self.job.future_options()
        )
        return self.forecast(dataset)


def bucket_of(ids: pd.Series, buckets: int) -> np.ndarray:
    """A stable bucket in [0, buckets) for each series id (the same on every process and run)."""
    return (pd.util.hash_array(ids.astype(str).to_numpy(dtype=object)) % np.uint64(buckets)).astype(np.int64)


class _FileRows:
    """Ray task: the rows of one file of a source, read and checked by our reader, with the bucket of their series id.

    The values are checked here, where the file and its row numbers are known, so that a bad value
    gets the one-line error a local read gives, naming the file and row.
    """

    def __init__(self, source: DataSource, reading: ReadPlan, buckets: int) -> None:
        self.source, self.reading, self.buckets = source, reading, buckets

    def __call__(self, batch: pd.DataFrame) -> Iterator[pd.DataFrame]:
        for index in batch[FILE_COLUMN].tolist():
            file = self.source.files[int(index)]
            for piece in read_pieces(file, ROWS_PER_READ, source=self.source):
                check_rows(piece, self.reading.layout, file.label, **self.reading.value_options())
                bucket = bucket_of(piece[self.reading.layout.id_column], self.buckets)
                yield piece.assign(**{BUCKET_COLUMN: bucket})


def _scan_file(source: DataSource, id_column: str) -> Callable[[dict], dict]:
    """Ray task body: the id scan of one file (grouped? rows, id hashes), so the driver can choose how to split."""

    def scan(row: dict) -> dict:
        result = scan_series_ids(source, source.files[int(row[FILE_COLUMN])], id_column, ROWS_PER_READ)
        return {FILE_COLUMN: row[FILE_COLUMN], "grouped": result.grouped, "rows": result.rows, "hashes": result.hashes}

    return scan


def _actor_options(workers: int, device: str, cpus_per_worker: float = 1) -> dict[str, Any]:
    """A fixed pool of `workers` actors, one GPU each with device cuda, else `cpus_per_worker` CPUs each.

    Ray sets each actor's OMP_NUM_THREADS to its CPUs, so that is the number of threads torch uses.

    Ray Data's actor pools restart an actor whose process dies and rerun its unfinished tasks
    (max_restarts and max_task_retries default to -1, unlimited, for them); tests/test_distributed.py
    kills a worker mid-run to check that no series is lost or written twice.
    """
    import ray.data

    options: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=workers), "batch_format": "pandas"}
    if device.startswith("cuda"):
        options["num_gpus"] = 1
    else:
        options["num_cpus"] = cpus_per_worker
    return options


def local_cluster_cpus(workers: int, cores: int | None = None) -> tuple[int, int]:
    """(CPUs to give a local cluster, CPUs per worker): the cores shared among the workers, one kept for reading."""
    cores = cores or os.cpu_count() or 1
    per_worker = max(1, (cores - 1) // workers)
    return max(cores, workers * per_worker + 1), per_worker


def _data_context() -> None:
    """Ray Data settings for our runs: a worker's own exception reaches the driver (not a wrapper holding its traceback as text)."""
    import ray.data

    ray.data.DataContext.get_current().raise_original_map_exception = True


def _files_dataset(source: DataSource) -> "ray.data.Dataset":
    """One row per data file (its index in `source.files`), one block each."""
    import ray.data

    _data_context()
    n = len(source.files)
    return ray.data.from_items([{FILE_COLUMN: i} for i in range(n)], override_num_blocks=n)


def plan_buckets(rows: int, workers: int, rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    """How many hash buckets a shuffled table of `rows` rows gets: enough to keep each bucket near `rows_per_bucket`."""
    return max(workers, math.ceil(rows / rows_per_bucket))


@dataclass
class SourcePlan:
    """How a source is split between workers: by its files, or by a hash shuffle into `buckets` buckets."""

    by_file: bool
    rows: int
    buckets: int
    series: int | None = None  # distinct series ids, known when every file is grouped by id (for progress)


def plan_source(source: DataSource, id_column: str, workers: int) -> SourcePlan:
    """Scan the id column of every file (in parallel, on the cluster) and choose how to split the source."""
    scans = _files_dataset(source).map(_scan_file(source, id_column)).take_all()
    rows = sum(int(scan["rows"]) for scan in scans)
    series = None
    if all(scan["grouped"] for scan in scans):  # then each file's hashes are complete, and distinct within it
        hashes = [np.asarray(scan["hashes"], dtype=np.uint64) for scan in scans]
        series = len(np.unique(np.concatenate(hashes)))
    whole = series is not None and series == sum(len(h) for h in hashes)  # no id in two files
    return SourcePlan(whole and len(source.files) >= workers, rows, plan_buckets(rows, workers), series)


def require_long_layout(layout: Layout, label: str) -> None:
    """InputError unless the table is in the long layout: only an id column lets whole series be moved between workers."""
    if layout.kind != "long":
        raise InputError(
            f"{label}: the Ray engine needs a long table (one row per series and timestamp, with an id column); "
            f"this one was read as {layout.kind}: use --engine local, or --layout long with --id-column"
        )


def forecast_source(
    source: DataSource, job: ForecastJob, *, workers: int = 1, cpus_per_worker: float = 1, plan: SourcePlan | None = None
) -> "ray.data.Dataset":
    """Forecast rows (with the SKIPPED_COLUMN marker) of every series in a source of files, read by our reader on the cluster."""
    layout = job.reading.layout
    require_long_layout(layout, source.label)
    plan = plan or plan_source(source, layout.id_column, workers)
    options = _actor_options(workers, job.device, cpus_per_worker)
    if plan.by_file:
        return _files_dataset(source).map_batches(FileForecaster, fn_constructor_args=(job, source), batch_size=1, **options)
    rows = _files_dataset(source).map_batches(_FileRows(source, job.reading, plan.buckets), batch_size=1, batch_format="pandas")
    return _forecast_buckets(rows, job, source.label, plan.buckets, options)


def _forecast_buckets(rows: "ray.data.Dataset", job: ForecastJob, label: str, buckets: int, options: dict) -> "ray.data.Dataset":
    """The hash shuffle: whole buckets of series (never a part of one) to the actor pool."""
    return rows.groupby(BUCKET_COLUMN, num_partitions=buckets).map_groups(BucketForecaster, fn_constructor_args=(job, label), **options)


def forecast_dataset(
    dataset: "ray.data.Dataset",
    horizon: int,
    *,
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    cache_dir: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    workers: int = 1,
    cpus_per_worker: float = 1,
    seed: int | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    layout: str = "long",
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    freq: str | None = None,
    past_covariates: Sequence[str] = (),
    sample_rows: int = 65_536,
    rows_per_bucket: int = ROWS_PER_BUCKET,
    **predict_options: Any,
) -> "ray.data.Dataset":
    """Forecast every series of a Ray dataset of rows (long layout) into a Ray dataset of forecast rows.

    Columns and frequency are settled once from the first `sample_rows` rows, as the command line reads a
    table; the series are shuffled into buckets by a hash of their id, so each is forecast whole by one of
    `workers` actors (one GPU each with device 'cuda', else `cpus_per_worker` CPUs and threads each). The rows are those of `moirai forecast`: id,
    timestamp, `mean` and one column per quantile level. Series with no observed value are left out.
    `predict_options` go to `MoiraiForecaster.predict` (num_samples, context_length, batch_size, decoding, ...).
    """
    import_ray()
    reading = plan_reading(
        dataset.limit(sample_rows).to_pandas(), source="<ray dataset>", layout=layout, id_column=id_column,
        timestamp_column=timestamp_column, target=target, freq=freq, past_covariates=past_covariates,
    )  # type: ignore[arg-type]
    require_long_layout(reading.layout, "<ray dataset>")
    job = ForecastJob(
        horizon, reading, run_seed(seed), model, revision, cache_dir, device, dtype, tuple(quantile_levels), dict(predict_options)
    )
    id_col = reading.layout.id_column
    _data_context()
    buckets = plan_buckets(dataset.count(), workers, rows_per_bucket)
    rows = dataset.map_batches(
        lambda piece: piece.assign(**{BUCKET_COLUMN: bucket_of(piece[id_col], buckets)}), batch_format="pandas"
    )
    out = _forecast_buckets(rows, job, "<ray dataset>", buckets, _actor_options(workers, device, cpus_per_worker))
    return out.map_batches(_without_skipped, batch_format="pandas")


def _without_skipped(frame: pd.DataFrame) -> pd.DataFrame:
    """Forecast rows only: the rows that report skipped series (and the column that marks them) dropped."""
    return frame.loc[~frame[SKIPPED_COLUMN].to_numpy(dtype=bool)].drop(columns=[SKIPPED_COLUMN])


def raised_moirai_error(exc: BaseException) -> MoiraiError | None:
    """The MoiraiError (bad input, model failure) that a Ray error wraps, if any, so the driver can report it as locally.

    With DataContext.raise_original_map_exception (set by `_data_context`), Ray Data raises the worker's
    own exception, with a note on retries appended to its message; elsewhere it may be the `cause` of a
    RayTaskError. Our messages are one line: that line is kept.
    """
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if isinstance(inner, BaseException):
            stack.append(inner)
            continue
        if isinstance(current, MoiraiError):
            return type(current)(first_line(current))
        stack.extend([current.__cause__, current.__context__])
    return None


@dataclass
class RayCluster:
    """A connection to Ray for one run: a new local cluster (address None), 'auto' or an address; quiet unless `verbose`.

    Use as a context manager: a cluster it started is shut down at the end; one it joined (or that this
    process had already started) is left running. `cpus_per_worker` is then what each forecasting actor
    should ask for: on a local cluster it starts, the cores less one shared among `workers` (see
    `local_cluster_cpus`; `num_cpus` overrides the cluster's size, with one CPU per worker), else one.
    """

    address: str | None = None
    workers: int = 1
    num_cpus: int | None = None
    verbose: bool = False
    cpus_per_worker: int = 1
    _started: bool = False
    _stderr: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __enter__(self) -> "RayCluster":
        ray = import_ray()
        if not self.verbose:
            self._stderr.enter_context(_native_stderr_to_devnull())
            for name in ("ray", "ray.data", "ray.train", "ray.tune"):
                logging.getLogger(name).setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = self.verbose
        context.print_on_execution_start = self.verbose
        context.log_internal_stack_trace = False
        if not ray.is_initialized():
            cluster_cpus = None
            if self.address is None:
                cluster_cpus, self.cpus_per_worker = local_cluster_cpus(self.workers)
                if self.num_cpus is not None:
                    cluster_cpus, self.cpus_per_worker = self.num_cpus, 1
            ray.init(
                address=self.address,
                num_cpus=cluster_cpus,
                include_dashboard=False,
                log_to_driver=self.verbose,
                logging_level=logging.INFO if self.verbose else logging.ERROR,
                configure_logging=True,
            )
            self._started = True
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self._started:
                import ray

                ray.shutdown()
        finally:
            self._stderr.close()


@contextlib.contextmanager
def _native_stderr_to_devnull() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 (Ray's C++ core worker logs) to /dev/null, while Python's
    sys.stderr keeps writing to the terminal: our warnings, errors and progress bar stay, Ray's log lines go."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    python_stderr = sys.stderr
    if getattr(sys.stderr, "fileno", None) is not None:
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            if sys.stderr.fileno() == 2:  # a real terminal or file: keep writing to it through a copy of the descriptor
                sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), encoding=python_stderr.encoding, errors="backslashreplace", line_buffering=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        if sys.stderr is not python_stderr:
            with contextlib.suppress(Exception):
                sys.stderr.close()
            sys.stderr = python_stderr


def forecast_rows(frames: Iterator[pd.DataFrame], id_column: str) -> Iterator[tuple[pd.DataFrame, list, int]]:
    """(forecast rows, skipped ids, series forecast) for each batch that comes back from the cluster."""
    for frame in frames:
        if not len(frame):
            continue
        skipped_mask = frame[SKIPPED_COLUMN].to_numpy(dtype=bool)
        skipped = frame.loc[skipped_mask, id_column].tolist()
        rows = frame.loc[~skipped_mask].drop(columns=[SKIPPED_COLUMN]).reset_index(drop=True)
        yield rows, skipped, int(rows[id_column].nunique()) if len(rows) else 0


def collect(dataset: "ray.data.Dataset") -> Iterator[pd.DataFrame]:
    """The blocks of a Ray dataset as pandas frames, in the order they finish; Ray errors that wrap ours become ours."""
    try:
        for block in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            yield block.to_pandas()  # numpy-backed columns, as the local engine writes them
    except Exception as exc:
        ours = raised_moirai_error(exc)
        if ours is not None:
            raise ours from None
        raise


__all__ = [
    "ForecastJob",
    "RayCluster",
    "SourcePlan",
    "collect",
    "forecast_dataset",
    "forecast_rows",
    "forecast_source",
    "local_cluster_cpus",
    "plan_source",
    "require_long_layout",
]
