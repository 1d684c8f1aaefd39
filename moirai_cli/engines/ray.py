"""The Ray engine: Ray Data moves whole series to a pool of actors, each of which loads the model once and runs
the same per-chunk procedure as the local engine (`run_chunk`).

Two ways to keep every series whole on one worker:

- the input's own partitioning, when each file holds whole series (grouped by id, no id in two files):
  each file goes to one actor, which streams it with `iter_series_chunks` a chunk of series at a time;
- otherwise a hash shuffle on the id with Ray Data's operators: rows get a bucket from a stable hash
  of their id and `groupby(bucket).map_groups` hands each bucket, whole series only, to an actor.

Column roles and frequency are settled once on the driver (`plan_reading`) and the seed drawn once
there, so every worker reads the table the same way and a series' samples do not depend on which worker
forecast it: with a seed, the output equals the local engine's. Ray retries the work of an actor whose
process dies (actors restart, their tasks are rerun), so no series is lost or written twice.

The actors never take every CPU of the cluster: the tasks that read and shuffle rows need one, or the run
would wait for ever (`fit_pool`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import pandas as pd

from moirai_cli.data import (
    DataSource,
    Layout,
    ReadPlan,
    check_rows,
    iter_series_chunks,
    load_dataset,
    plan_file_reading,
    plan_reading,
    read_pieces,
    resolve_source,
    scan_series_ids,
)
from moirai_cli.engines import transport
from moirai_cli.engines.events import RunEvents, describe_input
from moirai_cli.engines.local import ROWS_PER_READ, SERIES_PER_CHUNK
from moirai_cli.errors import InputError, MoiraiError, first_line, option
from moirai_cli.evaluation.procedure import run_chunk
from moirai_cli.forecasting.job import ForecastJob
from moirai_cli.forecasting.pipeline import fetch_checkpoint, load_forecaster_once
from moirai_cli.forecasting.procedure import FORECAST, ChunkResult, Notice
from moirai_cli.runtime import use_threads

if TYPE_CHECKING:
    import ray.data

RAY_INSTALL_HINT = "the Ray engine needs Ray Data: pip install 'moirai-cli[ray]'"
ROWS_PER_BUCKET = 262_144  # rows a shuffled bucket holds on average: what one actor holds in memory at a time
BUCKET_COLUMN = "__moirai_bucket"
FILE_COLUMN = "__moirai_file"
DATASET_SOURCE = "<ray dataset>"


def import_ray():
    """The ray module, or a one-line error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MoiraiError(RAY_INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class WorkerJob:
    """What every actor gets: the job (seed settled), how to read the rows (settled on the driver), its CPU share."""

    job: ForecastJob
    reading: ReadPlan
    cpus: float = 1

    def future_options(self) -> dict[str, Any]:
        """The future values and the horizon they cover, as keyword arguments of load_dataset / iter_series_chunks."""
        future = self.job.read.future if self.reading.layout.known_covariates else None
        return {"future": future, "horizon": self.job.horizon if future is not None else None}


class _Worker:
    """One actor's model, loaded once per process, and the step both ways of splitting the work share."""

    def __init__(self, work: WorkerJob) -> None:
        self.work = work
        use_threads(work.job.predict.threads or max(1, math.floor(work.cpus)))
        self.forecaster = load_forecaster_once(work.job.model)

    def forecast(self, dataset) -> pd.DataFrame:
        """One row carrying a chunk of whole series' forecast and what it found (see `transport.packed`)."""
        return transport.packed(run_chunk(self.forecaster, dataset, self.work.job), FORECAST)


class FileForecaster(_Worker):
    """Actor for a file that holds whole series: streams it `SERIES_PER_CHUNK` series at a time, as the local engine does."""

    def __init__(self, work: WorkerJob, source: DataSource) -> None:
        super().__init__(work)
        self.source = source

    def __call__(self, batch: pd.DataFrame) -> Iterator[pd.DataFrame]:
        reading = self.work.reading
        for index in batch[FILE_COLUMN].tolist():
            file = self.source.files[int(index)]
            chunks = iter_series_chunks(
                dataclasses.replace(self.source, files=[file]),
                chunk_size=SERIES_PER_CHUNK,
                rows_per_read=ROWS_PER_READ,
                require_series=False,  # a file of series with no observed value: the driver decides
                layout=reading.layout,
                freq=reading.freq,
                freq_inferred=reading.freq_inferred,
                known_covariates=reading.layout.known_covariates,
                **reading.value_options(),
                **self.work.future_options(),
            )
            for chunk in chunks:
                yield self.forecast(chunk)


class BucketForecaster(_Worker):
    """Actor for one shuffled bucket: the rows of whole series, from any files, read as the driver settled."""

    def __init__(self, work: WorkerJob, source_label: str) -> None:
        super().__init__(work)
        self.source_label = source_label

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        table = rows.drop(columns=[BUCKET_COLUMN]).reset_index(drop=True)
        options = {**self.work.reading.read_options(), **self.work.future_options()}
        return self.forecast(load_dataset(table, source=self.source_label, require_series=False, **options))


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


def fit_pool(workers: int, cpus_per_worker: float, cluster_cpus: float) -> tuple[float, str | None]:
    """CPUs each of `workers` actors asks for, leaving one CPU of the cluster to the tasks that read rows.

    Actors that held every CPU would starve those tasks and the run would wait for ever; the share is then
    made smaller (Ray accepts fractions) and the second value says so.
    """
    room = max(0.0, cluster_cpus - 1) / workers
    if workers * cpus_per_worker <= cluster_cpus - 1:
        return cpus_per_worker, None
    share = math.floor(room * 100) / 100
    return share, (
        f"the Ray cluster has {cluster_cpus:g} CPUs: each of the {workers} worker(s) gets {share:g} CPU(s), "
        "so that one CPU stays free for reading rows"
    )


def _actor_options(workers: int, device: str, cpus_per_worker: float = 1) -> dict[str, Any]:
    """A fixed pool of `workers` actors, one GPU each with device cuda, else `cpus_per_worker` CPUs each.

    Ray Data's actor pools restart an actor whose process dies and rerun its unfinished tasks
    (max_restarts and max_task_retries default to -1, unlimited, for them); tests/engines/test_ray.py
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
            f"this one was read as {layout.kind}: use {option('engine')} local, or {option('layout')} long with {option('id_column')}"
        )


def forecast_source(
    source: DataSource, work: WorkerJob, *, workers: int = 1, plan: SourcePlan | None = None
) -> "ray.data.Dataset":
    """Every chunk's output rows (forecast rows and notes, see `transport`) for the series of a source of files."""
    layout = work.reading.layout
    require_long_layout(layout, source.label)
    plan = plan or plan_source(source, layout.id_column, workers)
    options = _actor_options(workers, work.job.model.device, work.cpus)
    if plan.by_file:
        return _files_dataset(source).map_batches(FileForecaster, fn_constructor_args=(work, source), batch_size=1, **options)
    rows = _files_dataset(source).map_batches(_FileRows(source, work.reading, plan.buckets), batch_size=1, batch_format="pandas")
    return _forecast_buckets(rows, work, source.label, plan.buckets, options)


def _forecast_buckets(rows: "ray.data.Dataset", work: WorkerJob, label: str, buckets: int, options: dict) -> "ray.data.Dataset":
    """The hash shuffle: whole buckets of series (never a part of one) to the actor pool."""
    return rows.groupby(BUCKET_COLUMN, num_partitions=buckets).map_groups(BucketForecaster, fn_constructor_args=(work, label), **options)


def forecast_dataset(
    dataset: "ray.data.Dataset",
    horizon: int,
    *,
    workers: int = 1,
    cpus_per_worker: float = 1,
    future_df: pd.DataFrame | str | None = None,
    sample_rows: int = 65_536,
    rows_per_bucket: int = ROWS_PER_BUCKET,
    **options: Any,
) -> "ray.data.Dataset":
    """Forecast every series of a Ray dataset of rows (long layout) into a Ray dataset of forecast rows.

    `options` are those of `ForecastJob.build`, as for `predict_df` (model, device, id_column, target, freq,
    past_covariates, known_covariates, dayfirst, context_length, num_samples, quantile_levels, seed, ...);
    `future_df` (a pandas frame, or a file every worker can read) holds the known covariates over the horizon.
    Columns and frequency are settled once from the first `sample_rows` rows, as the command line reads a
    table; the series are shuffled into buckets by a hash of their id, so each is forecast whole by one of
    `workers` actors (one GPU each with device 'cuda', else `cpus_per_worker` CPUs each, fewer when the
    cluster needs a CPU free for reading). The rows are those of `moirai forecast`: id, timestamp, `mean`
    and one column per quantile level. Series with no observed value are left out.
    """
    ray = import_ray()
    options.setdefault("layout", "long")
    options.setdefault("device", "cpu")
    job = ForecastJob.build(horizon, future=future_df, **options).with_run_seed()
    reading = plan_reading(dataset.limit(sample_rows).to_pandas(), source=DATASET_SOURCE, **job.read.table)
    require_long_layout(reading.layout, DATASET_SOURCE)
    cpus, message = fit_pool(workers, cpus_per_worker, ray.cluster_resources().get("CPU", 1))
    if message and not job.model.device.startswith("cuda"):
        warnings.warn(message, stacklevel=2)
    work = WorkerJob(job, reading, cpus)
    id_col = reading.layout.id_column
    _data_context()
    buckets = plan_buckets(dataset.count(), workers, rows_per_bucket)
    rows = dataset.map_batches(
        lambda piece: piece.assign(**{BUCKET_COLUMN: bucket_of(piece[id_col], buckets)}), batch_format="pandas"
    )
    out = _forecast_buckets(rows, work, DATASET_SOURCE, buckets, _actor_options(workers, job.model.device, cpus))
    return out.map_batches(transport.unpacked_rows, batch_format="pandas")


def forecast(
    job: ForecastJob, data: str, events: RunEvents, *, workers: int = 1, address: str | None = None, samples: bool = False
) -> Iterator[ChunkResult]:
    """`moirai forecast --engine ray`: settle columns, frequency and seed here, forecast on the cluster, results back here."""
    if samples:
        raise InputError(f"{option('samples_output')} is not available with {option('engine')} ray; use {option('engine')} local")
    import_ray()
    source = resolve_source(data)
    if source.is_stdin:
        raise InputError(f"{option('engine')} ray reads files, folders or URIs, not stdin")
    job = job.with_run_seed()
    reading = plan_file_reading(source, **job.read.table)
    require_long_layout(reading.layout, source.label)
    events.input_read(describe_input(source.label, reading.layout, reading.freq))
    fetch_checkpoint(job.model)  # a missing model fails here, once, not on every worker
    forecast_count = 0
    with RayCluster(address, workers) as cluster:
        cpus, message = fit_pool(workers, cluster.cpus_per_worker, cluster.cpus)
        if message and not job.model.device.startswith("cuda"):
            events.notice(Notice("note", message))
        plan = plan_source(source, reading.layout.id_column, workers)
        events.started(plan.series, f"engine ray ({workers} worker{'s' if workers > 1 else ''}, device {job.model.device})")
        rows = forecast_source(source, WorkerJob(job, reading, cpus), workers=workers, plan=plan)
        for result in transport.unpacked(collect(rows), FORECAST):
            forecast_count += result.series
            events.advance(result.series + len(result.skipped))
            yield result
    if not forecast_count:  # as a local read says it
        raise InputError(f"{source.label}: no series has an observed target value")


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

    Use as a context manager: a cluster it started is shut down at the end, and its session folder removed;
    one it joined (or that this process had already started) is left running. `cpus_per_worker` is then what
    each forecasting actor should ask for: on a local cluster it starts, the cores less one shared among
    `workers` (see `local_cluster_cpus`; `num_cpus` overrides the cluster's size, with one CPU per worker),
    else one. `cpus` is the cluster's number of CPUs.
    """

    address: str | None = None
    workers: int = 1
    num_cpus: int | None = None
    verbose: bool = False
    cpus_per_worker: int = 1
    cpus: float = 1
    _started: bool = False
    _temp_dir: str | None = None
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
                self._temp_dir = tempfile.mkdtemp(prefix="moirai-ray-", dir=_session_parent())  # removed at the end
            ray.init(
                address=self.address,
                num_cpus=cluster_cpus,
                include_dashboard=False,
                log_to_driver=self.verbose,
                logging_level=logging.INFO if self.verbose else logging.ERROR,
                configure_logging=True,
                _temp_dir=self._temp_dir,
            )
            self._started = True
        self.cpus = float(ray.cluster_resources().get("CPU", 1))
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self._started:
                import ray

                ray.shutdown()
        finally:
            self._stderr.close()
            if self._temp_dir is not None:
                shutil.rmtree(self._temp_dir, ignore_errors=True)


SOCKET_PATH_ROOM = 107 - len("/moirai-ray-12345678/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store")


def _session_parent() -> str:
    """Where a local cluster's session folder goes: the temporary folder, or /tmp when that path is too long
    for the Unix sockets Ray opens inside it (107 bytes at most)."""
    parent = tempfile.gettempdir()
    return parent if len(parent.encode()) <= SOCKET_PATH_ROOM or not os.path.isdir("/tmp") else "/tmp"


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
    "RayCluster",
    "SourcePlan",
    "WorkerJob",
    "collect",
    "fit_pool",
    "forecast",
    "forecast_dataset",
    "forecast_source",
    "local_cluster_cpus",
    "plan_source",
    "require_long_layout",
]
