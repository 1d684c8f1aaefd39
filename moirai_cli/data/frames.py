"""Turn a table into regular per-series arrays (the forecaster's input), with clear errors for bad data."""

from __future__ import annotations

import sys
import warnings
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Hashable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

from moirai_cli.data.io import FILE_ROWS, STDIO, as_source, read_pieces, read_table
from moirai_cli.data.sources import DataFile, DataSource
from moirai_cli.data.layout import Layout, LayoutChoice, detect_layout, find_column
from moirai_cli.errors import InputError, first_line

DEFAULT_ID_COLUMN = "item_id"
MAX_GRID_GROWTH = 100  # a grid this many times longer than the observations means a wrong frequency
_FREQ_SAMPLE_SERIES = 200  # series inspected when inferring the frequency


@dataclass
class SeriesRecord:
    """One series on a regular grid: `target` is (T, V) float32 with NaN where nothing was observed."""

    item_id: Hashable
    timestamps: pd.DatetimeIndex  # length T, regular at the dataset's frequency
    target: np.ndarray  # (T, V) float32
    past_covariates: np.ndarray | None = None  # (T, Cp) float32
    known_covariates: np.ndarray | None = None  # (T + horizon, Ck) float32; (T, Ck) when loaded without a horizon


@dataclass
class SeriesDataset:
    """A loaded table: its series, their common frequency, how the columns were read, what was skipped."""

    series: list[SeriesRecord]
    freq: str
    layout: Layout
    source: str = "<data>"
    skipped: list[Hashable] = field(default_factory=list)
    horizon: int | None = None  # the horizon the known covariates cover, when there are any

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
        return text

    def future_index(self, record: SeriesRecord, horizon: int) -> pd.DatetimeIndex:
        """The `horizon` timestamps after a series' last one, continuing its grid."""
        return future_index(record.timestamps[-1], self.freq, horizon)


def future_index(last: pd.Timestamp, freq: str, horizon: int) -> pd.DatetimeIndex:
    """The `horizon` timestamps after `last` on the grid of `freq`."""
    return pd.date_range(start=last, periods=horizon + 1, freq=freq)[1:]


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
) -> SeriesDataset:
    """Read a CSV/Parquet file ('-' = stdin) or DataFrame into regular series, ready to forecast.

    To forecast, known covariates need `future` (same layout, covering the `horizon` steps after each
    series) and `horizon`; without both they cover the history only, which is what a backtest needs.
    Raises InputError, naming file, column, series or row, for any bad input, and when no series has
    an observed value unless `require_series` is False (an engine reading one part of a table).
    """
    check_covariate_options(known_covariates, future, horizon)  # before reading anything
    frame, source = _as_frame(data, source)
    if frame.shape[1] == 0 or len(frame) == 0:
        raise InputError(f"{source}: no data rows")
    lay = detect_layout(
        frame,
        source=source,
        layout=layout,
        id_column=id_column,
        timestamp_column=timestamp_column,
        target=(target,) if isinstance(target, str) else tuple(target),
        past_covariates=past_covariates,
        known_covariates=known_covariates,
    )
    _check_each_file(frame, lay)
    dataset = _build(frame, lay, source, parse_freq(freq) if freq else None, horizon)
    if not dataset.series and require_series:
        raise InputError(f"{source}: no series has an observed target value")
    if future is not None:
        future_frame, future_source = _as_frame(future, None)
        _attach_future(dataset, _future_table(future_frame, future_source, lay), future_source, horizon)
    return dataset


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
) -> Iterator[SeriesDataset]:
    """Yield datasets of at most `chunk_size` series from a long-format file whose rows are grouped by id.

    The file is read `rows_per_read` rows at a time, so memory stays flat in the number of series
    (the future file, if any, is read and parsed once, whole). The layout is detected on the first
    rows (or given: a long `layout` from `peek_layout` with the same column choices) and the
    frequency inferred from the first chunk, then kept. A chunk's `series` can be empty when every
    series in it was skipped. Raises InputError when an id reappears after other ids (unsorted file),
    and when no series has an observed value unless `require_series` is False (an engine reading one part).
    """
    check_covariate_options(known_covariates, future, horizon)
    data = as_source(path)
    future_frame, future_source = _as_frame(future, None) if future is not None else (None, "")
    future_table: pd.DataFrame | None = None  # parsed with the first chunk that has series
    freq = parse_freq(freq) if freq else None
    lay = layout
    done = SeenIds()
    any_series = False

    def emit(rows: pd.DataFrame, source: str) -> SeriesDataset:
        nonlocal freq, any_series, future_table
        dataset = _build(rows, lay, source, freq, horizon)
        freq = dataset.freq
        any_series = any_series or bool(dataset.series)
        if future_frame is not None and dataset.series:
            if future_table is None:
                future_table = _future_table(future_frame, future_source, lay)
            _attach_future(dataset, future_table, future_source, horizon)
        return dataset

    for file in data.files:  # a folder or glob: its files in turn, each chunk from one file
        source = file.label
        buffer = pd.DataFrame()
        for piece in read_pieces(file, rows_per_read, source=data):
            buffer = pd.concat([buffer, piece]) if len(buffer) else piece
            if lay is None:
                lay = detect_layout(
                    buffer,
                    source=source,
                    layout="long",
                    id_column=id_column,
                    timestamp_column=timestamp_column,
                    target=(target,) if isinstance(target, str) else tuple(target),
                    past_covariates=past_covariates,
                    known_covariates=known_covariates,
                )
            ids = buffer[lay.id_column]
            order = pd.unique(ids)
            repeat = done.first_repeat(order)
            if repeat is not None:
                again = order[repeat]
                row = int(buffer.index[(ids == again).to_numpy()][0]) + 1
                raise InputError(f"{source}: series '{again}' reappears at row {row}; sort the file by id")
            while len(order) - 1 >= chunk_size:  # the last id may continue in the next piece
                chosen = order[:chunk_size]
                mask = ids.isin(chosen).to_numpy()
                yield emit(buffer[mask], source)
                done.add(chosen)
                buffer, ids, order = buffer[~mask], ids[~mask], order[chunk_size:]
        if lay is None:
            continue
        ids = buffer[lay.id_column] if len(buffer) else pd.Series([], dtype=object)
        order = pd.unique(ids)
        for start in range(0, len(order), chunk_size):
            yield emit(buffer[ids.isin(set(order[start : start + chunk_size])).to_numpy()], source)
        done.add(order)
    if lay is None:
        raise InputError(f"{data.label}: no data rows")
    if not any_series and require_series:
        raise InputError(f"{data.label}: no series has an observed target value")


def _check_each_file(frame: pd.DataFrame, lay: Layout) -> None:
    """For a table stacked from several files (read_table of a folder or glob): check each file's rows under its
    own name and row numbers, so that a bad value is reported naming its file, as when the files are streamed."""
    start = 0
    for label, rows in frame.attrs.get(FILE_ROWS, []):
        part = frame.iloc[start : start + rows]
        check_rows(part.set_axis(pd.RangeIndex(rows), axis=0), lay, label)
        start += rows


def check_rows(frame: pd.DataFrame, layout: Layout, source: str) -> None:
    """Raise the InputError a read would for a bad value in these rows of a file (indexed by file row number).

    For engines that move rows away from their file before building series: what can be checked row by
    row (ids, timestamps, numbers, repeated timestamps within the rows) is checked where the file is known.
    """
    _canonical(frame, layout, source)


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
    if head is None or head.shape[1] == 0 or len(head) == 0:
        raise InputError(f"{source}: no data rows")
    return detect_layout(
        head,
        source=source,
        layout=layout,
        id_column=id_column,
        timestamp_column=timestamp_column,
        target=(target,) if isinstance(target, str) else tuple(target),
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
    """The series ids met so far in a file, kept as sorted 64-bit hashes: 8 bytes per id, for any number of series.

    Two different ids share a hash with odds of about n^2 / 2^65 (1e-9 for a million series); such a pair
    would be reported as a repeated id.
    """

    def __init__(self) -> None:
        self._hashes = np.empty(0, dtype=np.uint64)

    @staticmethod
    def _hash(ids: np.ndarray) -> np.ndarray:
        return pd.util.hash_array(np.asarray(ids, dtype=object))

    def first_repeat(self, ids: np.ndarray) -> int | None:
        """The position in `ids` of the first id already met, else None."""
        if not len(self._hashes):
            return None
        hashes = self._hash(ids)
        slots = np.minimum(np.searchsorted(self._hashes, hashes), len(self._hashes) - 1)
        met = np.flatnonzero(self._hashes[slots] == hashes)
        return int(met[0]) if len(met) else None

    def add(self, ids: np.ndarray) -> None:
        self._hashes = np.union1d(self._hashes, self._hash(ids))

    @property
    def hashes(self) -> np.ndarray:
        """The sorted hashes of the ids met so far."""
        return self._hashes


def check_covariate_options(known_covariates: Sequence[str], future: object, horizon: int | None) -> None:
    """Known covariates need a future table when forecasting (a horizon), none for backtests; and vice versa."""
    if known_covariates and horizon is not None and future is None:
        raise InputError("known covariates need future values: pass --future FILE")
    if future is not None and known_covariates and horizon is None:
        raise InputError("a future file needs the horizon it covers")
    if future is not None and not known_covariates:
        raise InputError("--future is only used with --known-covariates")
    if horizon is not None and horizon < 1:
        raise InputError(f"horizon must be at least 1, got {horizon}")


def _build(frame: pd.DataFrame, lay: Layout, source: str, freq: str | None, horizon: int | None) -> SeriesDataset:
    """Regular series from a table whose layout is known (inferring the frequency if not given)."""
    canon = _canonical(frame, lay, source)
    if freq is None:
        freq = _canonical_frequency(canon, source)
    n_target, n_past = len(lay.target_names), len(lay.past_covariates)
    records: list[SeriesRecord] = []
    skipped: list[Hashable] = []
    for item_id, group in canon.groupby("_id", sort=False):
        values = group.iloc[:, 3:].to_numpy(dtype=np.float64)
        observed = ~np.isnan(values[:, :n_target]).all(axis=1)
        if not observed.any():
            skipped.append(item_id)
            continue
        grid, positions = _grid(group["_ts"], freq, source, item_id)
        dense = np.full((len(grid), values.shape[1]), np.nan, dtype=np.float32)
        dense[positions] = values
        first = int(np.flatnonzero(~np.isnan(dense[:, :n_target]).all(axis=1))[0])  # drop leading gaps
        dense, grid = dense[first:], grid[first:]
        records.append(
            SeriesRecord(
                item_id=item_id,
                timestamps=grid,
                target=np.ascontiguousarray(dense[:, :n_target]),
                past_covariates=np.ascontiguousarray(dense[:, n_target : n_target + n_past]) if n_past else None,
                known_covariates=np.ascontiguousarray(dense[:, n_target + n_past :]) if lay.known_covariates else None,
            )
        )
    return SeriesDataset(records, freq, lay, source, skipped, horizon if lay.known_covariates else None)


def _as_frame(data: str | Path | pd.DataFrame, source: str | None) -> tuple[pd.DataFrame, str]:
    """The table and the name used for it in messages."""
    if isinstance(data, pd.DataFrame):
        return data.reset_index(drop=True), source or "<dataframe>"
    return read_table(data), source or ("<stdin>" if str(data) == STDIO else str(data))


def infer_table_frequency(frame: pd.DataFrame, layout: Layout, source: str = "<data>") -> str:
    """The frequency load_dataset infers for a table read with `layout` (only its id and timestamp columns are read).

    Engines call it once, on a sample of whole series, and pass the result to every worker as `freq`.
    """
    stamps = parse_timestamps(frame[layout.timestamp_column], source, layout.timestamp_column)
    ids = frame[layout.id_column].to_numpy() if layout.id_column else np.zeros(len(frame), dtype=np.int8)
    return _canonical_frequency(pd.DataFrame({"_id": ids, "_ts": stamps}), source)


def _canonical_frequency(canon: pd.DataFrame, source: str) -> str:
    """The frequency of a canonical table's first series, or InputError asking for --freq."""
    freq = infer_frequency(group["_ts"] for _, group in _first_groups(canon))
    if freq is None:
        raise InputError(f"{source}: cannot infer the frequency (too few or irregular timestamps); set --freq")
    return freq


def _first_groups(canon: pd.DataFrame) -> Iterable[tuple[Hashable, pd.DataFrame]]:
    """The first few series' rows (frequency inference needs only a sample)."""
    ids = canon["_id"].drop_duplicates().head(_FREQ_SAMPLE_SERIES)
    return canon[canon["_id"].isin(ids)].groupby("_id", sort=False)


def parse_freq(freq: str) -> str:
    """Validate a pandas frequency string ('h', 'D', 'MS', '15min', ...) and return its canonical form."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return to_offset(freq).freqstr
    except (ValueError, TypeError) as exc:
        raise InputError(f"--freq: '{freq}' is not a pandas frequency ({first_line(exc)})") from None


def infer_frequency(timestamps: Iterable[pd.Series | pd.DatetimeIndex]) -> str | None:
    """The most common frequency among series (pd.infer_freq), else one from the smallest step (gaps allowed)."""
    votes: Counter[str] = Counter()
    smallest: pd.Timedelta | None = None
    sample: list[pd.DatetimeIndex] = []
    for ts in timestamps:
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
        step = (index[1:] - index[:-1]).min()
        smallest = step if smallest is None else min(smallest, step)
    if votes:
        return parse_freq(votes.most_common(1)[0][0])
    if smallest is None:
        return None
    return _calendar_freq(smallest, sample) or parse_freq(_timedelta_alias(smallest))


def _timedelta_alias(step: pd.Timedelta) -> str:
    """A fixed step as a frequency string ('3D', '15min', ...); whole days stay days on every pandas."""
    days, rest = divmod(step, pd.Timedelta(days=1))
    if days and not rest:
        return "D" if days == 1 else f"{days}D"
    return to_offset(step).freqstr


def _calendar_freq(step: pd.Timedelta, sample: list[pd.DatetimeIndex]) -> str | None:
    """A month/quarter/year/week frequency when the typical step has that length and every timestamp fits it."""
    days = step / pd.Timedelta(days=1)
    if 28 <= days <= 31:
        candidates = ["MS", "ME"]
    elif 89 <= days <= 92:
        candidates = ["QS", "QE"]
    elif 365 <= days <= 366:
        candidates = ["YS", "YE"]
    elif days == 7:
        candidates = [f"W-{sample[0][0].day_name()[:3].upper()}"]
    else:
        return None
    for candidate in candidates:
        try:
            offset = to_offset(candidate)
        except ValueError:  # pandas < 2.2 spells month/quarter/year ends M, Q, A
            continue
        if all(offset.is_on_offset(t) for index in sample for t in index):
            return offset.freqstr
    return None


def _grid(ts: pd.Series, freq: str, source: str, item_id: Hashable) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The regular grid spanning a series' timestamps and each timestamp's position on it."""
    stamps = pd.DatetimeIndex(ts)
    grid = pd.date_range(stamps.min(), stamps.max(), freq=freq)
    if len(grid) > MAX_GRID_GROWTH * len(stamps) + 1000:
        raise InputError(
            f"{source}: series '{item_id}' would need {len(grid)} steps at frequency {freq} "
            f"for {len(stamps)} rows; check --freq"
        )
    positions = grid.get_indexer(stamps)
    if (positions < 0).any():
        bad = stamps[np.flatnonzero(positions < 0)[0]]
        raise InputError(
            f"{source}: series '{item_id}': timestamp {bad} is not on the {freq} grid "
            f"starting at {stamps.min()}; set --freq"
        )
    return grid, positions


def _canonical(frame: pd.DataFrame, lay: Layout, source: str) -> pd.DataFrame:
    """Long table `_id, _ts, _row, targets..., past..., known...` with parsed values, one row per observation."""
    ts = parse_timestamps(frame[lay.timestamp_column], source, lay.timestamp_column)
    rows = frame.index.to_numpy()  # row numbers in the file (files are read with a RangeIndex)
    past = [parse_numbers(frame[c], source, c) for c in lay.past_covariates]
    known = [parse_numbers(frame[c], source, c) for c in lay.known_covariates]
    values = [parse_numbers(frame[c], source, c) for c in lay.targets]
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
                raise InputError(f"{source}: column '{lay.id_column}', row {_row(ids, missing)}: missing series id")
        else:
            name = lay.targets[0] if len(lay.targets) == 1 else "series"
            ids = pd.Series([name] * len(frame), dtype=object)
        columns = {"_id": ids.to_numpy(), "_ts": ts, "_row": rows}
        columns.update({f"t{i}": v for i, v in enumerate(values)})
        columns.update({f"p{i}": v for i, v in enumerate(past)})
        columns.update({f"k{i}": v for i, v in enumerate(known)})
        canon = pd.DataFrame(columns)
    _check_duplicates(canon, source, lay)
    return canon


def _check_duplicates(canon: pd.DataFrame, source: str, lay: Layout) -> None:
    """InputError naming the series, timestamp and rows of the first repeated timestamp in a series."""
    dup = canon.duplicated(["_id", "_ts"], keep=False).to_numpy()
    if not dup.any():
        return
    first = canon.iloc[int(np.flatnonzero(dup)[0])]
    same = (canon["_id"] == first["_id"]).to_numpy() & (canon["_ts"] == first["_ts"]).to_numpy()
    rows = canon.loc[dup & same, "_row"]
    where = " and ".join(str(r + 1) for r in rows.head(2))
    raise InputError(
        f"{source}: series '{first['_id']}' has duplicate timestamp {first['_ts']} "
        f"(column '{lay.timestamp_column}', rows {where})"
    )


def _row(values: pd.Series, flags: np.ndarray) -> int:
    """The 1-based file row of the first flagged value (the index holds 0-based row numbers)."""
    return int(values.index[int(np.flatnonzero(flags)[0])]) + 1


def parse_timestamps(values: pd.Series, source: str, column: str) -> pd.DatetimeIndex:
    """Parse a column to datetime64 values, or InputError naming the first unparseable row."""
    missing = values.isna().to_numpy()
    if missing.any():
        raise InputError(f"{source}: column '{column}', row {_row(values, missing)}: missing timestamp")
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.DatetimeIndex(values)
    text = values.astype(str).str.strip()
    parsed = _to_datetime(text, source, column, None)
    if parsed.isna().any():
        parsed = _to_datetime(text, source, column, "mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        shown = text.iloc[int(np.flatnonzero(bad)[0])]
        raise InputError(f"{source}: column '{column}', row {_row(values, bad)}: cannot parse timestamp '{shown}'")
    return pd.DatetimeIndex(parsed)


def _to_datetime(text: pd.Series, source: str, column: str, fmt: str | None) -> pd.Series:
    """pd.to_datetime with failures as NaT, quietly; mixed time zones become an InputError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parsed = pd.to_datetime(text, errors="coerce", format=fmt)
    except (ValueError, TypeError) as exc:
        raise InputError(f"{source}: column '{column}': cannot parse timestamps ({first_line(exc)})") from None
    if not pd.api.types.is_datetime64_any_dtype(parsed):
        raise InputError(f"{source}: column '{column}': timestamps mix time zones; use one zone or UTC")
    return parsed


def parse_numbers(values: pd.Series, source: str, column: str) -> np.ndarray:
    """Parse a column to float64 (empty = NaN), or InputError naming the first non-numeric row."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(float).to_numpy()
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype="float64", na_value=np.nan)
    text = values.astype("string").str.strip().replace("", pd.NA)
    parsed = pd.to_numeric(text, errors="coerce")
    bad = (parsed.isna() & text.notna()).to_numpy(dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{source}: column '{column}', row {_row(values, bad)}: '{text.iloc[i]}' is not a number")
    return parsed.astype("float64").to_numpy(na_value=np.nan)


def _future_table(frame: pd.DataFrame, source: str, lay: Layout) -> pd.DataFrame:
    """The future file's known-covariate values (float32), indexed by (series key, timestamp); parsed once per file."""
    if len(frame) == 0:
        raise InputError(f"{source}: no data rows")
    ts_col = find_column(frame, lay.timestamp_column, source, "timestamp column")
    cols = [find_column(frame, c, source, "known covariate column") for c in lay.known_covariates]
    ts = parse_timestamps(frame[ts_col], source, ts_col)
    values = np.stack([parse_numbers(frame[c], source, c) for c in cols], axis=1).astype(np.float32)
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
