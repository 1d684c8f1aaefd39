"""Turn a table into regular per-series arrays (the forecaster's input), with clear errors for bad data."""

from __future__ import annotations

import calendar
import datetime
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Hashable, Iterable, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import (
    BusinessHour,
    CustomBusinessHour,
    Day,
    MonthBegin,
    MonthEnd,
    QuarterBegin,
    QuarterEnd,
    Tick,
    Week,
    YearBegin,
    YearEnd,
)

from moirai_cli.data.dates import TimestampParser, has_numeric_dates, row_number
from moirai_cli.data.io import FILE_ROWS, MISSING_TEXTS, STDIO, as_source, read_pieces, read_table
from moirai_cli.data.sources import DataFile, DataSource
from moirai_cli.data.layout import Layout, LayoutChoice, detect_layout, find_column
from moirai_cli.errors import InputError, check_at_least_one, option, render

DEFAULT_ID_COLUMN = "item_id"
LARGEST_MAGNITUDE = 1e302  # larger values can overflow float64 in a forecast's sums (a mean over sample paths)
TOO_LARGE = (
    f"is too large to forecast (magnitudes above {LARGEST_MAGNITUDE:.0e} overflow the forecast's float64 arithmetic); "
    "divide the values by a power of ten"
)
MAX_GRID_GROWTH = 100  # a grid this many times longer than the observations means a wrong frequency
SPARSE_GRID = 0.5  # a series with more than this share of its grid missing gets a warning
FREQUENCY_SAMPLE_SERIES = 200  # series inspected when inferring the frequency
_SAME_FREQUENCY = 1.5  # two frequencies whose steps differ by this factor or more are different frequencies
MONTH_ANCHOR_DAYS = 28  # monthly data sits on one day of every month: the 1st to the 28th
_FREQUENCY_CHECKS = 100  # series per table whose own frequency is inferred (when their rows are never adjacent)


@dataclass
class SeriesRecord:
    """One series on a regular grid: `target` is (T, V) float64 with NaN where nothing was observed.

    The grid runs from the series' first row to its last, rows before its first observed value
    included (they are context, as the reference reads them). Values stay float64, as read: the
    forecaster decides how they reach its float32 network.
    """

    item_id: Hashable
    timestamps: pd.DatetimeIndex  # length T, regular at the dataset's frequency
    target: np.ndarray  # (T, V) float64
    past_covariates: np.ndarray | None = None  # (T, Cp) float64
    known_covariates: np.ndarray | None = None  # (T + horizon, Ck) float64; (T, Ck) when loaded without a horizon


@dataclass
class SeriesDataset:
    """A loaded table: its series, their common frequency, how the columns were read, what was skipped."""

    series: list[SeriesRecord]
    freq: str
    layout: Layout
    source: str = "<data>"
    skipped: list[Hashable] = field(default_factory=list)
    horizon: int | None = None  # the horizon the known covariates cover, when there are any
    notes: list[str] = field(default_factory=list)  # how the values were read (e.g. timestamps turned to UTC)
    findings: list[str] = field(default_factory=list)  # what the user should check (sparse grids, values dropped), as templates

    @property
    def warnings(self) -> list[str]:
        """What the user should check, as a Python caller reads it (see moirai_cli.errors.render)."""
        return [render(text) for text in self.findings]

    @property
    def id_column(self) -> str:
        """The id column name for outputs: as in the input, else `item_id`."""
        return self.layout.id_column or DEFAULT_ID_COLUMN

    @property
    def timestamp_column(self) -> str:
        """The timestamp column name, as in the input."""
        return self.layout.timestamp_column

    @property
    def target_names(self) -> tuple[str, ...]:
        """Names of the forecast variates, in the order of the last axis of each target."""
        return self.layout.target_names

    def describe(self) -> str:
        """One line for the user: source, layout, number of series, frequency, skipped series."""
        text = f"{self.source}: {self.layout.describe()}; {len(self.series)} series, frequency {self.freq}"
        if self.skipped:
            text += f", {len(self.skipped)} skipped"
        return "; ".join([text, *self.notes])

    def future_index(self, record: SeriesRecord, horizon: int) -> pd.DatetimeIndex:
        """The `horizon` timestamps after a series' last one, continuing its grid."""
        return future_index(record.timestamps[-1], self.freq, horizon, f"{self.source}: series '{record.item_id}'")


def future_index(last: pd.Timestamp, freq: str, horizon: int, what: str = "the forecast") -> pd.DatetimeIndex:
    """The `horizon` timestamps after `last` on the grid of `freq`; InputError past pandas' last date."""
    offset = to_offset(freq)
    shift = pd.Timedelta(0)
    if is_month_anchored_start(offset) and fixed_zone(last.tz):  # data on the 15th continues on the 15th
        anchor = period_anchors(pd.DatetimeIndex([last]))[0]
        last, shift = anchor, last - anchor
    try:
        index = pd.date_range(start=last, periods=horizon + 1, freq=offset)[1:] + shift
    except (pd.errors.OutOfBoundsDatetime, OverflowError):
        index = None
    if index is None or len(index) < horizon:
        raise InputError(
            f"{what}: {horizon} steps of {freq} after {last} run past {pd.Timestamp.max.floor('D').date()}, "
            f"the last date pandas can hold; shorten {option('horizon')}"
        )
    return index


def load_dataset(
    data: str | Path | pd.DataFrame,
    *,
    source: str | None = None,
    layout: LayoutChoice = "auto",
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    freq: str | None = None,
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    future: str | Path | pd.DataFrame | None = None,
    horizon: int | None = None,
    require_series: bool = True,
    dayfirst: bool | None = None,
    date_format: str | None = None,
    inf_as_missing: bool = False,
    freq_inferred: bool = False,
    utc_offsets: Literal["utc", "local"] | None = None,
) -> SeriesDataset:
    """Read a CSV/Parquet file ('-' = stdin) or DataFrame into regular series, ready to forecast.

    To forecast, known covariates need `future` (same layout, covering the `horizon` steps after each
    series) and `horizon`; without both they cover the history only, which is what a backtest needs.
    A `horizon` without known covariates only checks that the forecast dates exist. `freq_inferred` says
    that `freq` was inferred elsewhere (an engine's driver): series of a clearly other frequency are still refused.
    Numeric dates (03/04/2024) are read with one convention for the whole column: `dayfirst` True or
    False, a strftime `date_format`, or (None) the one the column settles. Timestamps whose UTC offsets vary
    are read as UTC instants or local dates as `utc_offsets` says ("utc", "local"), or (None) as the column
    settles (see dates.TimestampParser). Infinite values are an error,
    or missing values with `inf_as_missing`. Raises InputError, naming file, column, series or row,
    for any bad input, and when no series has an observed value unless `require_series` is False (an
    engine reading one part of a table).
    """
    check_covariate_options(known_covariates, future, horizon)  # before reading anything
    reading = _Reading(TimestampParser(dayfirst, date_format, utc_offsets=utc_offsets), inf_as_missing)
    frame, source = _as_frame(data, source)
    lay = detect_layout(
        frame,
        source=source,
        layout=layout,
        id_column=id_column,
        timestamp_column=timestamp_column,
        target=target,
        past_covariates=past_covariates,
        known_covariates=known_covariates,
    )
    freq_given = bool(freq) and not freq_inferred
    try:
        dataset = _build(frame, lay, source, parse_freq(freq) if freq else None, horizon, reading, freq_given)
    except InputError:
        _check_each_file(frame, lay, reading)  # a bad value of a stacked table: name its file and row instead
        raise
    if not dataset.series and require_series:
        raise InputError(f"{source}: no series has an observed target value")
    if future is not None:
        future_frame, future_source = _as_frame(future, None)
        _attach_future(dataset, _future_table(future_frame, future_source, lay, reading), future_source, horizon)
    return dataset


@dataclass
class _Reading:
    """How values are read, shared by every piece of one file and by its future file."""

    timestamps: TimestampParser
    inf_as_missing: bool = False


def iter_series_chunks(
    path: str | Path,
    *,
    chunk_size: int = 1024,
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    freq: str | None = None,
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    future: str | Path | pd.DataFrame | None = None,
    horizon: int | None = None,
    rows_per_read: int = 65_536,
    layout: Layout | None = None,
    require_series: bool = True,
    dayfirst: bool | None = None,
    date_format: str | None = None,
    inf_as_missing: bool = False,
    freq_inferred: bool = False,
    utc_offsets: Literal["utc", "local"] | None = None,
) -> Iterator[SeriesDataset]:
    """Yield datasets of at most `chunk_size` series from a long-format file whose rows are grouped by id.

    The file is read `rows_per_read` rows at a time, so memory stays flat in the number of series
    (the future file, if any, is read and parsed once, whole). The layout is detected on the first
    rows (or given: a long `layout` from `peek_layout` with the same column choices) and the
    frequency inferred from the first chunk, then kept. A chunk's `series` can be empty when every
    series in it was skipped. Raises InputError when an id reappears after other ids (unsorted file),
    and when no series has an observed value unless `require_series` is False (an engine reading one part).
    Dates and infinite values are read as by `load_dataset`; a column of numeric dates is scanned
    whole first when its convention is not given, so that every chunk reads it the same way.
    """
    check_covariate_options(known_covariates, future, horizon)
    data = as_source(path)
    future_frame, future_source = _as_frame(future, None) if future is not None else (None, "")
    future_table: pd.DataFrame | None = None  # parsed with the first chunk that has series
    freq_given = bool(freq) and not freq_inferred
    freq = parse_freq(freq) if freq else None
    reading = _Reading(TimestampParser(dayfirst, date_format, utc_offsets=utc_offsets), inf_as_missing)
    lay = layout
    done = SeenIds()
    any_series = False
    settled = False  # the day/month convention of numeric dates, decided on the whole column

    def emit(rows: pd.DataFrame, source: str) -> SeriesDataset:
        nonlocal freq, any_series, future_table
        dataset = _build(rows, lay, source, freq, horizon, reading, freq_given)
        freq = dataset.freq
        any_series = any_series or bool(dataset.series)
        if future_frame is not None and dataset.series:
            if future_table is None:
                future_table = _future_table(future_frame, future_source, lay, reading)
            _attach_future(dataset, future_table, future_source, horizon)
        return dataset

    for file in data.files:  # a folder or glob: its files in turn, each chunk from one file
        source = file.label
        pieces: list[pd.DataFrame] = []  # rows read and not yet emitted, joined only when a chunk is due
        blocks = 0  # runs of equal ids in `pieces` (an id going on into the next piece counts once)
        last_id: object = None
        for piece in read_pieces(file, rows_per_read, source=data):
            if lay is None:
                lay = detect_layout(
                    piece,
                    source=source,
                    layout="long",
                    id_column=id_column,
                    timestamp_column=timestamp_column,
                    target=target,
                    past_covariates=past_covariates,
                    known_covariates=known_covariates,
                )
            if not settled:
                settled = True
                settle_on_whole_column(reading.timestamps, data, piece, lay.timestamp_column, rows_per_read)
            ids = piece[lay.id_column].to_numpy()
            if len(ids):
                blocks += int(np.count_nonzero(ids[1:] != ids[:-1])) + int(not blocks or ids[0] != last_id)
                last_id = ids[-1]
            pieces.append(piece)
            if blocks - 1 < chunk_size:  # cannot hold a whole chunk yet: read on before joining the rows
                continue
            buffer = pd.concat(pieces) if len(pieces) > 1 else piece
            starts, order = _blocks(buffer, lay.id_column, done, source)
            taken = 0  # series emitted from this buffer; each chunk is a block of consecutive rows
            while len(order) - 1 - taken >= chunk_size:  # the last id may continue in the next piece
                yield emit(buffer.iloc[starts[taken] : starts[taken + chunk_size]], source)
                done.add(order[taken : taken + chunk_size])
                taken += chunk_size
            buffer = buffer.iloc[starts[taken] :] if taken else buffer
            pieces, blocks = [buffer], len(order) - taken
        if lay is None or not pieces:
            continue
        buffer = pd.concat(pieces) if len(pieces) > 1 else pieces[0]
        if len(buffer):
            starts, order = _blocks(buffer, lay.id_column, done, source)
            ends = np.r_[starts, len(buffer)]
            for start in range(0, len(order), chunk_size):
                yield emit(buffer.iloc[ends[start] : ends[min(start + chunk_size, len(order))]], source)
            done.add(order)
    if lay is None:
        raise InputError(f"{data.label}: no data rows")
    if not any_series and require_series:
        raise InputError(f"{data.label}: no series has an observed target value")


def settle_on_whole_column(parser: TimestampParser, data: DataSource, head: pd.DataFrame, column: str, rows_per_read: int) -> None:
    """Settle how a timestamp column is read on all its rows, when its first rows (`head`) show that it matters:
    the day/month order of numeric dates, and how varying UTC offsets are read, so that every chunk of series
    reads the column alike (an extra pass over that column only)."""
    if data.is_stdin:
        return

    def whole_column() -> Iterator[pd.Series]:
        return (piece[column] for piece in read_pieces(data, rows_per_read, columns=[column]))

    if parser.order is None and parser.date_format is None and has_numeric_dates(head[column]):
        parser.settle(whole_column(), data.label, column)
    if parser.utc_offsets is None and parser.shows_offsets(head[column], data.label, column):
        parser.settle_offsets(whole_column(), data.label, column)


def _check_each_file(frame: pd.DataFrame, lay: Layout, reading: _Reading) -> None:
    """For a table stacked from several files (read_table of a folder or glob) that failed to read: check each
    file's rows under its own name and row numbers, so that a bad value is reported naming its file, as when
    the files are streamed."""
    start = 0
    for label, rows in frame.attrs.get(FILE_ROWS, []):
        part = frame.iloc[start : start + rows]
        _canonical(part.set_axis(pd.RangeIndex(rows), axis=0), lay, label, reading, [])
        start += rows


def check_rows(
    frame: pd.DataFrame,
    layout: Layout,
    source: str,
    *,
    dayfirst: bool | None = None,
    date_format: str | None = None,
    inf_as_missing: bool = False,
    utc_offsets: Literal["utc", "local"] | None = None,
) -> None:
    """Raise the InputError a read would for a bad value in these rows of a file (indexed by file row number).

    For engines that move rows away from their file before building series: what can be checked row by
    row (ids, timestamps, numbers, repeated timestamps within the rows) is checked where the file is known.
    """
    reading = _Reading(TimestampParser(dayfirst, date_format, utc_offsets=utc_offsets), inf_as_missing)
    _canonical(frame, layout, source, reading, [])


def _blocks(buffer: pd.DataFrame, id_column: str, done: "SeenIds", source: str) -> tuple[np.ndarray, np.ndarray]:
    """(first row, id) of each block of equal ids in the buffer; InputError when an id comes back after others."""
    ids = buffer[id_column].to_numpy()
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(ids) else np.empty(0, dtype=np.int64)
    order = ids[starts]
    again = done.first_repeat(order)
    if again is None:
        repeated = np.flatnonzero(pd.Series(order).duplicated().to_numpy() & pd.notna(order))  # a block not its id's first
        again = int(repeated[0]) if len(repeated) else None
    if again is not None:
        row = int(buffer.index[starts[again]]) + 1
        raise InputError(f"{source}: series '{order[again]}' reappears at row {row}; sort the file by id")
    return starts, order


def rebatch(datasets: Iterable[SeriesDataset], size: int) -> Iterator[SeriesDataset]:
    """Regroup datasets (one whole, or chunks) into batches of `size` series, independent of how the file was read."""
    # Skipped ids travel with the batch after them; a last batch may hold only those.
    size = max(1, size)
    pending: list[SeriesRecord] = []
    skipped: list[Hashable] = []
    last: SeriesDataset | None = None
    for dataset in datasets:
        last = dataset
        pending.extend(dataset.series)
        skipped.extend(dataset.skipped)
        while len(pending) >= size:
            yield replace(dataset, series=pending[:size], skipped=skipped)
            pending, skipped = pending[size:], []
    if last is not None and (pending or skipped):
        yield replace(last, series=pending, skipped=skipped)


def peek_layout(
    path: str | Path,
    *,
    layout: LayoutChoice = "auto",
    id_column: str | None = None,
    timestamp_column: str | None = None,
    target: Sequence[str] | str = (),
    past_covariates: Sequence[str] = (),
    known_covariates: Sequence[str] = (),
    rows: int = 65_536,
) -> Layout:
    """The layout detected on a file's first `rows` rows, to choose between streaming and a whole read."""
    source = str(path)
    head = next(read_pieces(path, rows), None)
    if head is None:
        raise InputError(f"{source}: no data rows")
    return detect_layout(
        head,
        source=source,
        layout=layout,
        id_column=id_column,
        timestamp_column=timestamp_column,
        target=target,
        past_covariates=past_covariates,
        known_covariates=known_covariates,
    )


def is_grouped_by(path: str | Path | DataSource, column: str, rows_per_read: int = 65_536) -> bool:
    """Whether each value of `column` fills one block of rows of one file, as iter_series_chunks needs (reads that column only).

    For a folder or glob: every file is grouped and no value appears in two files, so each file holds whole series.
    """
    data = as_source(path)
    return files_hold_whole_series(scan_series_ids(data, file, column, rows_per_read) for file in data.files)


@dataclass
class SeriesIdScan:
    """What one pass over a file's id column found: whether its rows are grouped by id, its rows, its ids' hashes."""

    grouped: bool
    rows: int
    hashes: np.ndarray  # sorted uint64 hashes of its distinct ids (see SeenIds); complete only when grouped


def scan_series_ids(data: DataSource, file: DataFile, column: str, rows_per_read: int = 65_536) -> SeriesIdScan:
    """Read one file's id column and say whether each id fills one block of rows (stops at the first id that comes back)."""
    seen = SeenIds()
    previous: Hashable = None
    rows = 0
    for piece in read_pieces(file, rows_per_read, columns=[column], source=data):
        ids = piece[column].to_numpy()
        rows += len(ids)
        if not len(ids):
            continue
        if pd.isna(ids).any():  # a missing id: the read reports its row, rather than a note that rows are not grouped
            return SeriesIdScan(True, rows, seen.hashes)
        runs = ids[np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])]  # the id of each block, in order
        if previous is not None and runs[0] == previous:
            runs = runs[1:]  # the block continues from the previous piece
        if len(pd.unique(runs)) < len(runs) or seen.first_repeat(runs) is not None:
            return SeriesIdScan(False, rows, seen.hashes)
        seen.add(runs)
        previous = ids[-1]
    return SeriesIdScan(True, rows, seen.hashes)


def files_hold_whole_series(scans: Iterable[SeriesIdScan]) -> bool:
    """Whether every scanned file is grouped by id and no id is in two files: each file then holds whole series."""
    seen = np.empty(0, dtype=np.uint64)
    for scan in scans:
        if not scan.grouped or len(np.intersect1d(seen, scan.hashes, assume_unique=True)):
            return False
        seen = np.union1d(seen, scan.hashes)
    return True


class SeenIds:
    """The series ids met so far in a file, kept as 64-bit hashes: 8 bytes per id, for any number of series.

    The hashes sit in sorted runs whose sizes more than halve from the oldest to the newest (at most
    log2(n) + 1 runs): adding k ids merges runs of similar size, so each hash is copied O(log n) times
    over the whole file, and a lookup is a binary search per run. Two different ids share a hash with
    odds of about n^2 / 2^65 (1e-9 for a million series); such a pair would be reported as a repeated id.
    """

    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # sorted uint64 hashes, oldest (largest) first

    @staticmethod
    def _hash(ids: np.ndarray) -> np.ndarray:
        return pd.util.hash_array(np.asarray(ids, dtype=object))

    def first_repeat(self, ids: np.ndarray) -> int | None:
        """The position in `ids` of the first id already met, else None."""
        if not self._runs:
            return None
        hashes = self._hash(ids)
        met = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            slots = np.minimum(np.searchsorted(run, hashes), len(run) - 1)
            met |= run[slots] == hashes
        first = np.flatnonzero(met)
        return int(first[0]) if len(first) else None

    def add(self, ids: np.ndarray) -> None:
        """Remember `ids`; merge the newest runs while the newest is not smaller than the new one."""
        if not len(ids):
            return
        run = np.sort(self._hash(ids))
        while self._runs and len(self._runs[-1]) <= len(run):
            run = np.sort(np.concatenate([self._runs.pop(), run]), kind="stable")  # merges two sorted runs
        self._runs.append(run)

    @property
    def hashes(self) -> np.ndarray:
        """The sorted hashes of the ids met so far (distinct: an id is added once)."""
        return np.sort(np.concatenate(self._runs)) if self._runs else np.empty(0, dtype=np.uint64)


def check_covariate_options(known_covariates: Sequence[str], future: object, horizon: int | None) -> None:
    """Known covariates need a future table when forecasting (a horizon), none for backtests; and vice versa."""
    if known_covariates and horizon is not None and future is None:
        raise InputError(f"known covariates need future values: pass {option('future')}")
    if future is not None and known_covariates and horizon is None:
        raise InputError("a future file needs the horizon it covers")
    if future is not None and not known_covariates:
        raise InputError(f"{option('future')} is only used with {option('known_covariates')}")
    check_at_least_one(("horizon", horizon))


def _build(
    frame: pd.DataFrame,
    lay: Layout,
    source: str,
    freq: str | None,
    horizon: int | None,
    reading: _Reading,
    freq_given: bool,
) -> SeriesDataset:
    """Regular series from a table whose layout is known (inferring the frequency if not given).

    Every series is put on its grid at once, with array arithmetic (linear in rows, no per-series
    pandas calls but the records themselves). With an inferred frequency (`freq_given` False, also for
    later chunks of a streamed file), a series whose rows are never one step apart and that is regular
    at a coarser frequency is an error naming it. A series whose grid is mostly missing gets a warning,
    and so do values read as missing.
    """
    warnings_: list[str] = []
    canon = _canonical(frame, lay, source, reading, warnings_)
    if freq is None:
        freq = _canonical_frequency(canon, source)
    n_target, n_past = len(lay.target_names), len(lay.past_covariates)
    codes, uniques = pd.factorize(canon["_id"].to_numpy(), sort=False)  # series in order of first appearance
    names = pd.Index(uniques).tolist()  # Python values (int, str, Timestamp), as a groupby would give them
    stamps = pd.DatetimeIndex(canon["_ts"]).as_unit("ns")
    order = np.lexsort((stamps.asi8, codes))  # rows by series, then time
    codes = codes[order]
    values = canon.iloc[:, 3:].to_numpy(dtype=np.float64)[order]
    grid = _SeriesGrids(stamps[order], codes, canon["_row"].to_numpy()[order], freq, source, names, freq_given)
    present = ~np.isnan(values[:, :n_target])  # (rows, V)
    observed = present.any(axis=1)  # (rows,)
    has_observed = np.bitwise_or.reduceat(observed, grid.starts)
    skipped = [names[code] for code in np.flatnonzero(~has_observed)]
    if n_target > 1:  # a variate of a kept series that has no value: its forecast means nothing (left empty)
        seen = np.bitwise_or.reduceat(present, grid.starts, axis=0)  # (series, V)
        never = np.flatnonzero(has_observed[:, None] & ~seen)
        if len(never):
            code, variate = divmod(int(never[0]), n_target)
            others = f" and {len(never) - 1} more (series, target)" if len(never) > 1 else ""
            warnings_.append(
                f"{source}: series '{names[code]}': target '{lay.targets[variate]}' has no observed value{others}; "
                "its forecast is left empty (NaN)"
            )

    # Each series runs from its first row to its last, rows before its first observed target included:
    # the reference reads them as context (missing values), so they change the forecast.
    kept = has_observed[codes]  # (rows,)
    lengths = np.where(has_observed, grid.lengths, 0)  # (series,)
    base = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    slot = base[codes[kept]] + grid.positions[kept]
    total = int(lengths.sum())
    parts = {"target": (0, n_target), "past": (n_target, n_target + n_past), "known": (n_target + n_past, values.shape[1])}
    dense = {}
    for part, (lo, hi) in parts.items():
        dense[part] = np.full((total, hi - lo), np.nan)
        dense[part][slot] = values[kept, lo:hi]
    timestamps = grid.timestamps(lengths, base)

    # Frequency checks on the rows kept: steps between rows (in grid steps) and the share observed.
    kept_codes, kept_positions = codes[kept], grid.positions[kept]
    rows_per_series = np.bincount(kept_codes, minlength=len(names))
    step = np.diff(kept_positions).astype(np.float64)
    step[kept_codes[1:] != kept_codes[:-1]] = np.inf
    smallest = np.full(len(names), np.inf)
    np.minimum.at(smallest, kept_codes[1:], step)
    coarse = _other_frequency(
        np.flatnonzero((rows_per_series >= 3) & (smallest >= 2)), grid, kept, freq, freq_given
    )
    present = np.bincount(kept_codes, weights=observed[kept], minlength=len(names))
    with np.errstate(invalid="ignore", divide="ignore"):
        missing_share = 1 - present / lengths
    sparse = np.flatnonzero(has_observed & (missing_share > SPARSE_GRID))

    records = [
        SeriesRecord(
            item_id=names[code],
            timestamps=timestamps[base[code] : base[code] + lengths[code]],
            target=dense["target"][base[code] : base[code] + lengths[code]],
            past_covariates=dense["past"][base[code] : base[code] + lengths[code]] if n_past else None,
            known_covariates=dense["known"][base[code] : base[code] + lengths[code]] if lay.known_covariates else None,
        )
        for code in np.flatnonzero(has_observed)
    ]
    if coarse is not None:
        code, own = coarse
        regular = np.flatnonzero(has_observed & (rows_per_series >= 2) & (smallest == 1))
        beside = f" (like series '{names[regular[0]]}')" if len(regular) else ""
        raise InputError(
            f"{source}: series have different frequencies: '{names[code]}' is {own}, the others {freq}{beside}; "
            f"put them in separate files, or set {option('freq')} to forecast them all on one grid"
        )
    if len(sparse):
        name, share = names[sparse[0]], missing_share[sparse[0]]
        others = f" and {len(sparse) - 1} more series" if len(sparse) > 1 else ""
        warnings_.append(
            f"{source}: series '{name}'{others}: more than half of the {freq} grid is missing "
            f"({share:.0%} for '{name}'); the model reads the gaps as missing values; check {option('freq')}"
        )
    if horizon is not None and records:
        latest = max(records, key=lambda record: record.timestamps[-1])
        future_index(latest.timestamps[-1], freq, horizon, f"{source}: series '{latest.item_id}'")
    dataset = SeriesDataset(records, freq, lay, source, skipped, horizon if lay.known_covariates else None)
    dataset.notes = list(reading.timestamps.notes)
    dataset.findings = warnings_
    return dataset


def _other_frequency(
    candidates: np.ndarray, grid: "_SeriesGrids", kept: np.ndarray, freq: str, freq_given: bool
) -> tuple[int, str] | None:
    """(series code, its frequency) of a series regular at a clearly coarser frequency than `freq`, else None.

    `candidates` are series whose rows are never one step apart. One that is regular on its own (daily
    rows in an hourly file) has another frequency; an irregular one only has gaps (sales logged on
    sales days), which the sparse-grid warning covers. Only with an inferred frequency, and only the
    first _FREQUENCY_CHECKS candidates are looked at (pd.infer_freq per series).
    """
    if freq_given:
        return None
    step = _nominal_step(freq)
    for code in candidates[:_FREQUENCY_CHECKS]:
        rows = slice(grid.starts[code], grid.starts[code] + grid.counts[code])
        stamps = grid.stamps[rows][kept[rows]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                own = pd.infer_freq(stamps) if len(stamps) >= 3 else None
            except (ValueError, TypeError):
                own = None
        if own and _nominal_step(own) >= _SAME_FREQUENCY * step:
            return int(code), parse_freq(own)
    return None


class _SeriesGrids:
    """Where each row of many series falls on its series' grid, computed for all series at once.

    Rows come sorted by series code, then time. Each series' grid starts at its first row, as
    pd.date_range(first, last, freq) would lay it. A fixed-length frequency (h, D, 15min) is pure
    arithmetic on nanoseconds. A calendar one (MS, W-SUN, B) uses one calendar of dates shared by all
    series, each series keeping its own time of day; on time zones with daylight saving time, and for
    business hours, each series gets its own pd.date_range instead. Off-grid rows and grids far longer
    than their rows are InputErrors naming the series and row.
    """

    def __init__(
        self,
        stamps: pd.DatetimeIndex,
        codes: np.ndarray,
        rows: np.ndarray,
        freq: str,
        source: str,
        names: list,
        freq_given: bool = False,
    ) -> None:
        self.starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])  # first row of each series
        self.counts = np.diff(np.r_[self.starts, len(codes)])
        self.freq, self.tz, self.stamps = freq, stamps.tz, stamps
        offset = to_offset(freq)
        fixed = fixed_zone(stamps.tz)
        if isinstance(offset, Tick) and (fixed or not isinstance(offset, Day)):  # a day can last 23 or 25 h
            self.mode = "tick"
            ticks = stamps.asi8
            self.origin, self.step = ticks[self.starts], int(offset.nanos)
            positions, remainder = np.divmod(ticks - np.repeat(self.origin, self.counts), self.step)
            off_grid = remainder != 0
        elif fixed and not isinstance(offset, (BusinessHour, CustomBusinessHour)):
            self.mode = "calendar"
            # Each timestamp is a date of the calendar plus a time within it, the same for all of a series: its
            # time of day, or for monthly (quarterly, yearly) data its day and time within the month (the 15th).
            anchored = is_month_anchored_start(offset)
            days = period_anchors(stamps) if anchored else stamps.normalize()
            time_of_day = (stamps - days).asi8
            self.time_of_day = time_of_day[self.starts]
            self.calendar = pd.date_range(days.min(), days.max(), freq=offset.base).as_unit("ns")
            on_calendar = self.calendar.get_indexer(days)
            self.calendar_start, self.multiple = on_calendar[self.starts], offset.n
            positions, remainder = np.divmod(on_calendar - np.repeat(self.calendar_start, self.counts), offset.n)
            off_grid = (on_calendar < 0) | (remainder != 0) | (time_of_day != np.repeat(self.time_of_day, self.counts))
            if anchored:  # the 29th to the 31st are not in every month
                off_grid |= time_of_day >= pd.Timedelta(days=MONTH_ANCHOR_DAYS).value
        else:
            self.mode = "per series"
            self.grids = [
                pd.date_range(stamps[a], stamps[a + n - 1], freq=offset).as_unit("ns")
                for a, n in zip(self.starts, self.counts)
            ]
            positions = np.concatenate(
                [grid.get_indexer(stamps[a : a + n]) for grid, a, n in zip(self.grids, self.starts, self.counts)]
            )
            off_grid = positions < 0
        if off_grid.any():
            bad = int(np.flatnonzero(off_grid)[np.argmin(rows[off_grid])])  # the first such row of the file
            series = int(np.searchsorted(self.starts, bad, side="right") - 1)
            raise InputError(self._off_grid(source, names[series], int(rows[bad]), stamps, bad, series, freq_given))
        self.positions = positions  # (rows,) step of each row from its series' first row
        self.lengths = positions[np.r_[self.starts[1:], len(codes)] - 1] + 1  # (series,) grid length to the last row
        too_long = np.flatnonzero(self.lengths > MAX_GRID_GROWTH * self.counts + 1000)
        if len(too_long):
            series = too_long[0]
            raise InputError(
                f"{source}: series '{names[series]}' would need {self.lengths[series]} steps at frequency {freq} "
                f"for {self.counts[series]} rows; check {option('freq')}"
            )

    def _off_grid(
        self, source: str, name: Hashable, row: int, stamps: pd.DatetimeIndex, bad: int, series: int, freq_given: bool
    ) -> str:
        """The message for a timestamp off its series' grid: where, which grid (in words when it has some), and
        what to do: fix the row or set the frequency; or, when it was given, the frequency the series has instead."""
        described = describe_frequency(self.freq)
        grid = f"the {self.freq} grid" + (f" ({described})" if described else "")
        first = self.starts[series]
        start = "" if bad == first else f" starting at {stamps[first]}"
        text = f"{source}: series '{name}', row {row + 1}: timestamp {stamps[bad]} is not on {grid}{start}"
        if not freq_given:
            return f"{text}; fix the row, or set {option('freq')}"
        own = infer_frequency([stamps[first : first + self.counts[series]]])
        if own is not None and own != self.freq:
            return f"{text}; the series' own timestamps are {own}: give {option('freq', own)}, or leave {option('freq')} out"
        return f"{text}; fix the row, or check {option('freq')}"

    def timestamps(self, lengths: np.ndarray, base: np.ndarray) -> pd.DatetimeIndex:
        """All series' grids end to end: series i from its first row, lengths[i] steps (0 or its whole grid), at base[i]."""
        if self.mode == "per series":
            pieces = [grid[:n] for grid, n in zip(self.grids, lengths) if n]
            return pieces[0].append(pieces[1:]) if pieces else pd.DatetimeIndex([], tz=self.tz)
        total = int(lengths.sum())
        series = np.repeat(np.arange(len(lengths)), lengths)
        step_of = np.arange(total) - base[series]
        if self.mode == "tick":
            ticks = self.origin[series] + step_of * self.step
            index = pd.DatetimeIndex(ticks.view("M8[ns]"))
            return index.tz_localize("UTC").tz_convert(self.tz) if self.tz is not None else index
        days = self.calendar.tz_localize(None) if self.tz is not None else self.calendar  # wall-clock dates
        ticks = days.asi8[self.calendar_start[series] + step_of * self.multiple] + self.time_of_day[series]
        index = pd.DatetimeIndex(ticks.view("M8[ns]"))
        return index.tz_localize(self.tz) if self.tz is not None else index


def _as_frame(data: str | Path | pd.DataFrame, source: str | None) -> tuple[pd.DataFrame, str]:
    """The table and the name used for it in messages."""
    if isinstance(data, pd.DataFrame):
        label = source or "<dataframe>"
        return _text_column_names(data.reset_index(drop=True), label), label
    return read_table(data), source or ("<stdin>" if str(data) == STDIO else str(data))


def _text_column_names(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """A frame whose column names are text, as in a file (integer names become '0', '1', ...)."""
    if all(isinstance(column, str) for column in frame.columns):
        return frame
    names = [str(column) for column in frame.columns]
    repeated = next((i for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        first = names.index(names[repeated])
        raise InputError(
            f"{source}: columns {frame.columns[first]!r} and {frame.columns[repeated]!r} have the same name as text; rename one"
        )
    return frame.set_axis(names, axis=1)


def infer_table_frequency(
    frame: pd.DataFrame,
    layout: Layout,
    source: str = "<data>",
    *,
    dayfirst: bool | None = None,
    date_format: str | None = None,
) -> str:
    """The frequency load_dataset infers for a table read with `layout` (only its id and timestamp columns are read).

    Engines call it once, on a sample of whole series, and pass the result to every worker as `freq`.
    """
    column = layout.timestamp_column
    stamps = parse_timestamps(frame[column], source, column, dayfirst=dayfirst, date_format=date_format)
    ids = frame[layout.id_column].to_numpy() if layout.id_column else np.zeros(len(frame), dtype=np.int8)
    return _canonical_frequency(pd.DataFrame({"_id": ids, "_ts": stamps}), source)


def _canonical_frequency(canon: pd.DataFrame, source: str) -> str:
    """The frequency of a canonical table's first series, or InputError asking for the frequency (or naming
    two sampled series whose own frequencies differ)."""
    sample = list(_first_groups(canon))
    freq = infer_frequency([group["_ts"] for _, group in sample], names=[key for key, _ in sample], source=source)
    if freq is None:
        raise InputError(f"{source}: cannot infer the frequency (too few or irregular timestamps); set {option('freq')}")
    return freq


def _first_groups(canon: pd.DataFrame) -> Iterable[tuple[Hashable, pd.DataFrame]]:
    """The first few series' rows (frequency inference needs only a sample)."""
    ids = canon["_id"].drop_duplicates().head(FREQUENCY_SAMPLE_SERIES)
    return canon[canon["_id"].isin(ids)].groupby("_id", sort=False)


def parse_freq(freq: str) -> str:
    """Validate a pandas frequency string ('h', 'D', 'MS', '15min', ...) and return its canonical form."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            offset = to_offset(freq)
    except (ValueError, TypeError):
        raise InputError(
            f"{option('freq')}: '{freq}' is not a pandas frequency (for example h, D, W-SUN, MS, QS, YS, 15min)"
        ) from None
    if offset.n <= 0:
        raise InputError(
            f"{option('freq')}: '{freq}' does not move forward in time; give a positive step (for example h, D, W-SUN, MS, 15min)"
        )
    return offset.freqstr


def describe_frequency(freq: str) -> str | None:
    """What the timestamps of a calendar frequency are, in words ('weeks ending on Sunday'), else None."""
    offset = to_offset(freq)
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()  # pandas' anchors, whatever the locale
    if isinstance(offset, Week) and offset.weekday is not None:
        return f"weeks ending on {calendar.day_name[offset.weekday]}"
    if isinstance(offset, MonthBegin):
        return "one day of each month, the 1st to the 28th"
    if isinstance(offset, MonthEnd):
        return "the last day of each month"
    if isinstance(offset, QuarterBegin):
        starts = ", ".join(months[(offset.startingMonth - 1 + 3 * i) % 12] for i in range(4))
        return f"one day of each quarter, in its first month ({starts})"
    if isinstance(offset, QuarterEnd):
        ends = ", ".join(months[(offset.startingMonth - 1 + 3 * i) % 12] for i in range(4))
        return f"the last day of each quarter ({ends})"
    if isinstance(offset, YearBegin):
        return f"one day of each year, in {calendar.month_name[offset.month]}"
    if isinstance(offset, YearEnd):
        return f"the last day of {calendar.month_name[offset.month]} each year"
    return None


def is_month_anchored_start(offset) -> bool:
    """Whether a frequency lays its grid on the months that start its periods (MS, QS-*, YS-*): timestamps
    may then sit on one later day of those months (the 15th), and forecasts keep that day."""
    return isinstance(offset, (MonthBegin, QuarterBegin, YearBegin))


def fixed_zone(tz: datetime.tzinfo | None) -> bool:
    """Whether timestamps in `tz` keep one UTC offset (none, UTC, a fixed offset): every day lasts 24 hours."""
    return tz is None or isinstance(tz, datetime.timezone) or str(tz) == "UTC"


def period_anchors(stamps: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The first day of each timestamp's month, at midnight (what a month-anchored grid lays its steps on)."""
    return stamps.normalize() - pd.to_timedelta(stamps.day - 1, unit="D")


def infer_frequency(
    timestamps: Iterable[pd.Series | pd.DatetimeIndex],
    *,
    names: Sequence[Hashable] | None = None,
    source: str = "<data>",
) -> str | None:
    """The frequency of the series: the most common pd.infer_freq, else one from the most common step.

    Series whose own regular frequencies clearly differ (hourly and daily, daily and weekly) are an
    InputError naming one of each (`names`: the series' names, in order); the most common step, not the
    smallest, is used for irregular series, so one stray timestamp cannot make the grid finer.
    """
    votes: Counter[str] = Counter()
    voters: dict[str, Hashable] = {}
    steps: Counter[pd.Timedelta] = Counter()
    sample: list[pd.DatetimeIndex] = []
    for position, ts in enumerate(timestamps):
        index = pd.DatetimeIndex(ts).sort_values().unique()
        if len(index) < 2:
            continue
        sample.append(index)
        if len(index) >= 3:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    inferred = pd.infer_freq(index)
                except (ValueError, TypeError):
                    inferred = None
            if inferred:
                votes[inferred] += 1
                voters.setdefault(inferred, names[position] if names is not None else position)
        values, counts = np.unique((index[1:] - index[:-1]).to_numpy(), return_counts=True)
        steps.update({pd.Timedelta(value): int(count) for value, count in zip(values, counts)})
    if votes:
        chosen = votes.most_common(1)[0][0]
        for other in votes:
            ratio = _nominal_step(other) / _nominal_step(chosen)
            if not 1 / _SAME_FREQUENCY < ratio < _SAME_FREQUENCY:
                raise InputError(
                    f"{source}: series have different frequencies: '{voters[chosen]}' is {parse_freq(chosen)}, "
                    f"'{voters[other]}' is {parse_freq(other)}; put them in separate files, or set {option('freq')} to "
                    "forecast them all on one grid"
                )
        return parse_freq(chosen)
    if not steps:
        return None
    typical = max(steps.items(), key=lambda item: (item[1], -item[0]))[0]  # most common; the smaller on a tie
    calendar_freq = _calendar_freq(typical, sample)
    if calendar_freq is None and 27 <= typical / pd.Timedelta(days=1) <= 32 and sample[0].day.min() > MONTH_ANCHOR_DAYS:
        name = names[0] if names is not None else 0
        raise InputError(
            f"{source}: series '{name}': timestamps a month apart on day {sample[0][0].day} (first: {sample[0][0]}) "
            f"cannot be on one day of every month; use the last day of each month ({option('freq', 'ME')}), or one day from "
            f"the 1st to the {MONTH_ANCHOR_DAYS}th ({option('freq', 'MS')} keeps that day)"
        )
    return calendar_freq or parse_freq(_timedelta_alias(typical))


def _nominal_step(freq: str) -> pd.Timedelta:
    """The length of one step of a frequency (a month: 28 to 31 days, from an anchored start)."""
    offset = to_offset(freq)
    anchored = pd.Timestamp("2001-01-01") + offset  # rolled onto the offset's anchor (a Sunday for W-SUN)
    return (anchored + offset) - anchored


def _timedelta_alias(step: pd.Timedelta) -> str:
    """A fixed step as a frequency string ('3D', '15min', ...); whole days stay days on every pandas."""
    days, rest = divmod(step, pd.Timedelta(days=1))
    if days and not rest:
        return "D" if days == 1 else f"{days}D"
    return to_offset(step).freqstr


def _calendar_freq(step: pd.Timedelta, sample: list[pd.DatetimeIndex]) -> str | None:
    """A month/quarter/year/week frequency when the typical step has that length and every timestamp fits it."""
    days = step / pd.Timedelta(days=1)
    slack = 1 / 24  # an hour more or less: a step across a daylight saving change
    month = sample[0][0].strftime("%b").upper()
    if 28 - slack <= days <= 31 + slack:
        candidates = ["MS", "ME"]
    elif 89 - slack <= days <= 92 + slack:
        candidates = [f"QS-{month}", f"QE-{month}", "QS", "QE"]
    elif 365 - slack <= days <= 366 + slack:
        candidates = [f"YS-{month}", f"YE-{month}", "YS", "YE"]
    elif abs(days - 7) <= slack:
        candidates = [f"W-{sample[0][0].day_name()[:3].upper()}"]
    else:
        return None
    offsets = []
    for candidate in candidates:
        try:
            offsets.append(to_offset(candidate))
        except ValueError:  # pandas < 2.2 spells month/quarter/year ends M, Q, A
            continue
    for offset in offsets:
        if all(offset.is_on_offset(t) for index in sample for t in index):
            return offset.freqstr
    for offset in offsets:  # one later day of the period's first month (monthly data on the 15th)
        if is_month_anchored_start(offset) and all(_on_one_day_of(offset, index) for index in sample):
            return offset.freqstr
    return None


def _on_one_day_of(offset, index: pd.DatetimeIndex) -> bool:
    """Whether a series' timestamps all sit on the same day (up to the 28th) and time of the months `offset` starts."""
    anchors = period_anchors(index)
    shifts = index - anchors
    return bool(
        len(set(shifts.asi8.tolist())) == 1
        and shifts[0] < pd.Timedelta(days=MONTH_ANCHOR_DAYS)
        and all(offset.is_on_offset(anchor) for anchor in anchors)
    )


def _canonical(
    frame: pd.DataFrame, lay: Layout, source: str, reading: _Reading, warnings_: list[str]
) -> pd.DataFrame:
    """Long table `_id, _ts, _row, targets..., past..., known...` with parsed values, one row per observation."""
    ts = reading.timestamps.parse(frame[lay.timestamp_column], source, lay.timestamp_column)
    rows = frame.index.to_numpy()  # row numbers in the file (files are read with a RangeIndex)

    def numbers(column: str) -> np.ndarray:
        return parse_numbers(frame[column], source, column, inf_as_missing=reading.inf_as_missing, warnings_=warnings_)

    past = [numbers(c) for c in lay.past_covariates]
    known = [numbers(c) for c in lay.known_covariates]
    values = [numbers(c) for c in lay.targets]
    if lay.kind == "wide":
        n = len(lay.targets)
        columns = {
            "_id": np.repeat(np.array(lay.targets, dtype=object), len(frame)),
            "_ts": ts[np.tile(np.arange(len(ts)), n)],
            "_row": np.tile(rows, n),
            "t0": np.concatenate(values),
        }
        columns.update({f"p{i}": np.tile(v, n) for i, v in enumerate(past)})
        columns.update({f"k{i}": np.tile(v, n) for i, v in enumerate(known)})
        canon = pd.DataFrame(columns)
    else:
        if lay.kind == "long":
            ids = frame[lay.id_column]
            missing = ids.isna().to_numpy()
            if missing.any():
                raise InputError(f"{source}: column '{lay.id_column}', row {row_number(ids, missing)}: missing series id")
            if len(ids) and isinstance(ids.iloc[0], bytes):  # a binary column that is not UTF-8 (io decodes the others)
                raise InputError(
                    f"{source}: column '{lay.id_column}', row {int(ids.index[0]) + 1}: series id {ids.iloc[0]!r} "
                    "is not UTF-8 text; write the ids as text"
                )
        else:
            name = lay.targets[0] if len(lay.targets) == 1 else "series"
            ids = pd.Series([name] * len(frame), dtype=object)
        columns = {"_id": ids.to_numpy(), "_ts": ts, "_row": rows}
        columns.update({f"t{i}": v for i, v in enumerate(values)})
        columns.update({f"p{i}": v for i, v in enumerate(past)})
        columns.update({f"k{i}": v for i, v in enumerate(known)})
        canon = pd.DataFrame(columns)
    _check_duplicates(canon, source, lay, frame)
    return canon


def _check_duplicates(canon: pd.DataFrame, source: str, lay: Layout, frame: pd.DataFrame) -> None:
    """InputError naming the series, timestamp and rows of the first repeated timestamp in a series.

    Without an id column, a column that tells the repeated rows apart is suggested as --id-column.
    """
    dup = canon.duplicated(["_id", "_ts"], keep=False).to_numpy()
    if not dup.any():
        return
    first = canon.iloc[int(np.flatnonzero(dup)[0])]
    same = (canon["_id"] == first["_id"]).to_numpy() & (canon["_ts"] == first["_ts"]).to_numpy()
    rows = canon.loc[dup & same, "_row"]
    where = " and ".join(str(r + 1) for r in rows.head(2))
    hint = ""
    if lay.kind != "long":
        candidates = [*lay.ignored, *(lay.targets if lay.kind == "wide" else ())]
        rows_in_frame = frame.loc[rows.to_numpy()]
        apart = [c for c in candidates if rows_in_frame[c].nunique(dropna=False) > 1 and c != first["_id"]]
        if apart:
            hint = f"; if column '{apart[0]}' holds series ids, pass {option('id_column', apart[0])}"
    raise InputError(
        f"{source}: series '{first['_id']}' has duplicate timestamp {first['_ts']} "
        f"(column '{lay.timestamp_column}', rows {where}){hint}"
    )


def parse_timestamps(
    values: pd.Series, source: str, column: str, *, dayfirst: bool | None = None, date_format: str | None = None
) -> pd.DatetimeIndex:
    """Parse a column to datetime64 values with one day/month convention, or InputError naming the row."""
    return TimestampParser(dayfirst, date_format).parse(values, source, column)


def parse_numbers(
    values: pd.Series,
    source: str,
    column: str,
    *,
    inf_as_missing: bool = False,
    warnings_: list[str] | None = None,
) -> np.ndarray:
    """Parse a column to float64 (empty = NaN), or InputError naming the first non-numeric or infinite row.

    With `inf_as_missing`, infinite values become NaN and a line saying so is added to `warnings_`.
    """
    if pd.api.types.is_bool_dtype(values):
        return values.astype(float).to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        parsed = values.to_numpy(dtype="float64", na_value=np.nan)
    else:
        text = values.astype("string").str.strip().replace("", pd.NA)
        valid = pd.to_numeric(text, errors="coerce").notna().to_numpy(dtype=bool)
        spelled_nan = text.str.lower().isin(["nan", "+nan", "-nan"]).to_numpy(dtype=bool)  # any case: missing
        missing = (text.isna() | text.isin(MISSING_TEXTS)).to_numpy(dtype=bool)  # 'NA', 'null', ...: as read_csv reads them
        given = ~missing & ~spelled_nan
        parsed = np.full(len(text), np.nan)
        try:
            parsed[valid] = text[valid].to_numpy(dtype=object).astype(np.float64)  # correctly rounded, as float()
        except (ValueError, TypeError):
            parsed[valid] = pd.to_numeric(text[valid]).to_numpy(dtype=np.float64)
        for row in np.flatnonzero(given & ~valid):  # what pandas refuses may still overflow to inf (1e400)
            try:
                number = float(text.iloc[row])
            except ValueError:
                break
            if not np.isinf(number):
                break
            parsed[row] = number
        bad = given & np.isnan(parsed)
        if bad.any():
            shown = text.iloc[int(np.flatnonzero(bad)[0])]
            hint = " (use '.' for decimals)" if "," in shown else ""
            raise InputError(f"{source}: column '{column}', row {row_number(values, bad)}: '{shown}' is not a number{hint}")
    huge = np.abs(parsed) > LARGEST_MAGNITUDE
    huge &= ~np.isinf(parsed)
    if huge.any():
        raise InputError(
            f"{source}: column '{column}', row {row_number(values, huge)}: '{values.iloc[int(np.flatnonzero(huge)[0])]}' "
            f"{TOO_LARGE}"
        )
    infinite = np.isinf(parsed)
    if infinite.any():
        row, shown = row_number(values, infinite), values.iloc[int(np.flatnonzero(infinite)[0])]
        if not inf_as_missing:
            raise InputError(
                f"{source}: column '{column}', row {row}: '{shown}' is not a finite number; remove it, "
                f"or pass {option('inf_as_missing', True)} to read infinite values as missing"
            )
        parsed = np.where(infinite, np.nan, parsed)
        if warnings_ is not None:
            warnings_.append(
                f"{source}: column '{column}': {int(infinite.sum())} infinite value(s) read as missing (first: row {row})"
            )
    return parsed


def _future_table(frame: pd.DataFrame, source: str, lay: Layout, reading: _Reading) -> pd.DataFrame:
    """The future file's known-covariate values (float64), indexed by (series key, timestamp); parsed once per file."""
    if len(frame) == 0:
        raise InputError(f"{source}: no data rows")
    ts_col = find_column(frame, lay.timestamp_column, source, "timestamp column")
    cols = [find_column(frame, c, source, "known covariate column") for c in lay.known_covariates]
    ts = reading.timestamps.parse(frame[ts_col], source, ts_col)
    values = np.stack([parse_numbers(frame[c], source, c, inf_as_missing=reading.inf_as_missing) for c in cols], axis=1)
    if lay.id_column is not None:
        id_col = find_column(frame, lay.id_column, source, "id column")
        keys = frame[id_col].astype(str).to_numpy()
    else:
        keys = np.full(len(frame), "", dtype=object)  # wide / single: the same future rows for every series
    table = pd.DataFrame(values, index=pd.MultiIndex.from_arrays([keys, ts]))
    if table.index.duplicated().any():
        key, stamp = table.index[table.index.duplicated()][0]
        raise InputError(f"{source}: duplicate timestamp {stamp}" + (f" for series '{key}'" if key else ""))
    return table


def _attach_future(dataset: SeriesDataset, table: pd.DataFrame, source: str, horizon: int) -> None:
    """Append each series' future known-covariate values (from `_future_table`) to its history."""
    records = dataset.series
    if not records:
        return
    keyed = dataset.layout.id_column is not None
    keys = np.repeat(np.array([str(r.item_id) if keyed else "" for r in records], dtype=object), horizon)
    expected = [dataset.future_index(record, horizon) for record in records]
    stamps = expected[0].append(expected[1:])  # (N * horizon,)
    rows = table.index.get_indexer(pd.MultiIndex.from_arrays([keys, stamps]))  # the index is unique
    if (rows < 0).any():
        first = int(np.flatnonzero(rows < 0)[0])
        record = records[first // horizon]
        raise InputError(
            f"{source}: series '{record.item_id}' has no row for {stamps[first]} "
            f"(the future file must cover the {horizon} steps after {record.timestamps[-1]})"
        )
    future = table.to_numpy()[rows].reshape(len(records), horizon, -1)  # (N, horizon, Ck)
    for record, values in zip(records, future):
        record.known_covariates = np.concatenate([record.known_covariates, values], axis=0)
