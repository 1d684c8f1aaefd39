"""The local engine: this process reads the input, loads the model once and runs the procedure chunk by chunk.

A long-format file whose rows are grouped by series id is streamed `SERIES_PER_CHUNK` series at a time,
so memory does not grow with the file; any other input (wide, single, stdin, an ungrouped long file) is
read whole and cut into chunks of the same size. Both give the same rows.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

from moirai_cli.data import (
    STDIO,
    Layout,
    SeriesDataset,
    check_output_columns,
    is_grouped_by,
    iter_series_chunks,
    load_dataset,
    peek_layout,
    rebatch,
)
from moirai_cli.engines.events import RunEvents, describe_input
from moirai_cli.evaluation.backtest import too_short_error
from moirai_cli.evaluation.procedure import run_chunk
from moirai_cli.forecasting.job import BacktestJob, ForecastJob
from moirai_cli.forecasting.pipeline import MoiraiForecaster, load_forecaster
from moirai_cli.forecasting.procedure import ChunkResult, Notice, check_forecaster
from moirai_cli.runtime import use_threads

SERIES_PER_CHUNK = 1024  # series forecast and written at a time, so memory does not grow with the file
ROWS_PER_READ = 65_536  # rows read at a time from a long file that is streamed


def forecast(
    job: ForecastJob, data: str, events: RunEvents, *, samples: bool = False, download_progress: bool = False
) -> Iterator[ChunkResult]:
    """Forecast every series of `data` (a file, folder, glob, URI or '-'), one ChunkResult per chunk of series.

    Bad data fails on the first chunk, before the (slow) model load; `samples` adds the sample paths' table.
    """
    job = job.with_run_seed()
    use_threads(job.predict.threads)
    batches, total = read_chunks(job, data, events)
    first = next(batches)
    check_output_columns(first, job.predict.quantile_levels, samples=samples)
    events.input_read(describe_input(first.source if data == STDIO else data, first.layout, first.freq, first.notes))
    forecaster = load_forecaster(job.model, progress=download_progress)
    check_forecaster(job, forecaster, samples=samples)
    events.started(total, f"device {forecaster.device}")
    yield from _procedure(forecaster, itertools.chain([first], batches), job, events, samples=samples)


def read_whole(job: BacktestJob, data: str, events: RunEvents) -> SeriesDataset:
    """The whole table (as a backtest or fine-tuning needs it: known covariates from the table), its reading reported to `events`."""
    use_threads(job.predict.threads)
    dataset = load_dataset(data, **job.read.table)
    events.input_read(describe_input(dataset.source, dataset.layout, dataset.freq, dataset.notes))
    return dataset


def backtest(job: BacktestJob, dataset: SeriesDataset, events: RunEvents, *, download_progress: bool = False) -> ChunkResult:
    """Backtest every series of a loaded table with the job's model."""
    job = job.with_run_seed()
    forecaster = load_forecaster(job.model, progress=download_progress)
    check_forecaster(job, forecaster)
    events.started(len(dataset.series) * job.windows, f"device {forecaster.device}")
    result = next(_procedure(forecaster, [dataset], job, events))
    if not result.series:
        raise too_short_error(job.horizon, job.windows, job.step)
    return result


def _procedure(
    forecaster: MoiraiForecaster, chunks: Iterable[SeriesDataset], job: ForecastJob, events: RunEvents, *, samples: bool = False
) -> Iterator[ChunkResult]:
    """The per-chunk procedure on each chunk in turn, progress counted per series (skipped ones too)."""
    for chunk in chunks:
        result = run_chunk(forecaster, chunk, job, samples=samples, progress=events.advance)
        events.advance(len(chunk.skipped))
        yield result


def read_chunks(job: ForecastJob, data: str, events: RunEvents) -> tuple[Iterator[SeriesDataset], int | None]:
    """Chunks of `SERIES_PER_CHUNK` series in input order, and their number of series (None when streamed)."""
    layout = _streamable_layout(job, data, events)
    if layout is None:
        dataset = load_dataset(data, future=job.read.future, horizon=job.horizon, **job.read.table)
        return rebatch([dataset], SERIES_PER_CHUNK), len(dataset.series)
    options = {**job.read.table, "layout": layout}
    chunks = iter_series_chunks(
        data, chunk_size=SERIES_PER_CHUNK, future=job.read.future, horizon=job.horizon, rows_per_read=ROWS_PER_READ, **options
    )
    return rebatch(chunks, SERIES_PER_CHUNK), None


def _streamable_layout(job: ForecastJob, data: str, events: RunEvents) -> Layout | None:
    """The layout of a long-format file whose rows are grouped by series id; None for any other input."""
    if data == STDIO or job.read.layout not in ("auto", "long"):
        return None
    layout = peek_layout(data, layout=job.read.layout, rows=ROWS_PER_READ, **job.read.columns)
    if layout.kind != "long":
        return None
    if not is_grouped_by(data, layout.id_column, ROWS_PER_READ):
        events.notice(Notice(
            "note", f"{data}: rows are not grouped by '{layout.id_column}'; reading the whole file (sort it by id to keep memory flat)"
        ))
        return None
    return layout
